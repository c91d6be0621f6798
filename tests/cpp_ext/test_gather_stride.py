"""cpp_ext.gather_clips with a stride: every stride-th frame up to each clip's end, against a numpy reference."""

import numpy as np
import pytest

import cpp_ext
from ks_runtime.core import kernels

INT64 = np.iinfo(np.int64)


@pytest.fixture
def rng(request):
    """A fresh generator per test; the seed is in the test's report so a failure can be replayed."""
    seed = np.random.SeedSequence().entropy % 2**32
    request.node.user_properties.append(("seed", seed))
    return np.random.default_rng(seed)


def reference_clips(ring, first, count, ends, n, stream_start, stride):
    """Slot by slot: frame clamp(end - (n - 1 - j) * stride, stream_start, newest) read from row frame % R."""
    newest = first + count - 1
    out = np.empty((len(ends), n, *ring.shape[1:]), ring.dtype)
    for b, end in enumerate(ends):
        for j in range(n):
            frame = min(max(int(end) - (n - 1 - j) * stride, stream_start), newest)
            assert frame >= first
            out[b, j] = ring[frame % len(ring)]
    return out


def random_case(rng, stride, tail, dtype):
    """A ring whose held frames often wrap its end, a stream start before or inside them, and clips whose frames
    are all still held: from wholly before the stream's start to past its newest frame."""
    ring_size, n = int(rng.integers(1, 24)), int(rng.integers(1, 8))
    ring = (rng.standard_normal((ring_size, *tail)) * 50).astype(dtype)
    count = int(rng.integers(1, ring_size + 1))
    first = int(rng.integers(0, 5 * ring_size))
    span = (n - 1) * stride
    stream_start = int(rng.integers(max(0, first - 2 * span - 3), first + count))
    lo = first + span if stream_start < first else stream_start - span - 3
    ends = rng.integers(lo, first + count + span + 3, size=int(rng.integers(1, 6)))
    return ring, first, count, ends, n, stream_start


@pytest.mark.parametrize("stride", [2, 3, 7])
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.uint8])
@pytest.mark.parametrize("tail", [(), (3,), (5, 7)])
def test_strided_clips_match_reference(rng, stride, dtype, tail):
    for _ in range(30):
        ring, first, count, ends, n, start = random_case(rng, stride, tail, dtype)
        want = reference_clips(ring, first, count, ends, n, start, stride)
        got = cpp_ext.gather_clips(ring, first, count, ends, n, stream_start=start, stride=stride)
        assert got.dtype == ring.dtype and got.shape == want.shape
        np.testing.assert_array_equal(
            got, want, err_msg=f"R={len(ring)} first={first} count={count} n={n} start={start} ends={ends}"
        )
        # the runtime's numpy fallback (KS_DISABLE_CPP_EXT=1) takes the same clips
        np.testing.assert_array_equal(
            kernels.gather_clips_numpy(ring, first, count, ends, n, start, stride=stride), want
        )


def test_strided_clips_wrap_and_replicate_edges():
    ring = np.arange(8, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)  # row r holds r
    # Frames 13..20 held (rows 5, 6, 7, 0, 1, 2, 3, 4); stream started at 13; slots 3 frames apart.
    out = np.zeros((4, 3, 2), np.float32)
    got = cpp_ext.gather_clips(ring, 13, 8, np.array([14, 17, 22, 30]), 3, out=out, stride=3)
    assert got is out
    frames = np.array([[13, 13, 14], [13, 14, 17], [16, 19, 20], [20, 20, 20]])
    np.testing.assert_array_equal(got[..., 0], frames % 8)


@pytest.mark.parametrize("stride", [1, 7, 2**40])
def test_extreme_ends_and_strides_clamp_without_overflow(rng, stride):
    ring = rng.standard_normal((10, 3)).astype(np.float32)
    ends = np.array([INT64.min, -(2**62), 2**62, INT64.max, 25])  # frames 20..29 held, stream from 20
    got = cpp_ext.gather_clips(ring, 20, 10, ends, 4, stride=stride)
    np.testing.assert_array_equal(got, reference_clips(ring, 20, 10, ends, 4, 20, stride))
    np.testing.assert_array_equal(kernels.gather_clips_numpy(ring, 20, 10, ends, 4, stride=stride), got)
    np.testing.assert_array_equal(got[0], ring[[0, 0, 0, 0]])
    np.testing.assert_array_equal(got[3], ring[[9, 9, 9, 9]])


@pytest.mark.parametrize("tail", [(), (4,)])
def test_stride_1_equals_the_call_without_it(rng, tail):
    for _ in range(20):
        ring, first, count, ends, n, start = random_case(rng, 1, tail, np.float32)
        want = cpp_ext.gather_clips(ring, first, count, ends, n, stream_start=start)
        got = cpp_ext.gather_clips(ring, first, count, ends, n, stream_start=start, stride=1)
        np.testing.assert_array_equal(got, want)


def test_strided_clip_names_the_overwritten_frame(rng):
    ring = rng.standard_normal((6, 2)).astype(np.float32)
    # Frames 10..15 held; with stride 2 clip 1 (ending at 13) needs 9, 11, 13. Stride 1 would need 11..13.
    cpp_ext.gather_clips(ring, 10, 6, np.array([15, 13, 12]), 3, stream_start=0)
    with pytest.raises(IndexError, match=r"clip 1 \(ending at frame 13\) needs frame 9.*holds frames 10\.\.15"):
        cpp_ext.gather_clips(ring, 10, 6, np.array([15, 13, 12]), 3, stream_start=0, stride=2)


@pytest.mark.parametrize(
    ("stride", "n", "error", "message"),
    [
        (0, 3, ValueError, "stride must be >= 1, got 0"),
        (-1, 3, ValueError, "stride must be >= 1, got -1"),
        (-(2**63), 1, ValueError, "stride must be >= 1"),
        (2**61, 1, ValueError, "stride 2305843009213693952"),
        (2**31, 2**30, ValueError, "stride 2147483648 with n = 1073741824"),
        (1.5, 3, TypeError, "stride must be an integer"),
    ],
)
def test_bad_strides_raise(stride, n, error, message):
    with pytest.raises(error, match=message):
        cpp_ext.gather_clips(np.zeros((6, 4), np.float32), 0, 6, [3], n, stride=stride)
