"""cpp_ext's CPU ops against plain numpy / cv2 references, on fresh random inputs, and their argument checks."""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

import cpp_ext
from ks_runtime.core import kernels
from ks_runtime.core.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess, to_network_input


@pytest.fixture
def rng(request):
    """A fresh generator per test; the seed is in the test's report so a failure can be replayed."""
    seed = np.random.SeedSequence().entropy % 2**32
    request.node.user_properties.append(("seed", seed))
    return np.random.default_rng(seed)


def random_frames(rng, b, h, w):
    return rng.integers(0, 256, (b, h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------------
# pack_frames


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 7, 5), (3, 17, 13), (2, 64, 64), (1, 33, 224), (1, 3, 600)])
@pytest.mark.parametrize("swap_rb", [False, True])
@pytest.mark.parametrize("out_dtype", [np.float32, np.float16])
def test_pack_frames_matches_numpy(rng, shape, swap_rb, out_dtype):
    frames = random_frames(rng, *shape)
    mean, std = rng.uniform(0.0, 1.0, 3), rng.uniform(0.05, 2.0, 3)
    got = cpp_ext.pack_frames(frames, mean, std, swap_rb=swap_rb, out_dtype=out_dtype)
    src = frames[..., ::-1] if swap_rb else frames
    want = (src.astype(np.float32) * np.float32(1 / 255) - mean.astype(np.float32)) * (
        np.float32(1) / std.astype(np.float32)
    )
    want = np.ascontiguousarray(want.transpose(0, 3, 1, 2)).astype(out_dtype)  # [B, 3, H, W]
    assert got.dtype == out_dtype and got.shape == want.shape and got.flags.c_contiguous
    # float32 is bit-exact (no FMA contraction); float16 is the float32 value rounded to nearest even.
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, kernels.pack_frames_numpy(frames, mean, std, swap_rb, out_dtype))


@pytest.mark.parametrize("colour_in", ["RGB", "BGR"])
@pytest.mark.parametrize("colour", ["RGB", "BGR"])
def test_pack_frames_equals_to_network_input(rng, colour_in, colour):
    frames = random_frames(rng, 2, 31, 31)
    spec = Preprocess(size=31, colour=colour)
    want = to_network_input(frames, spec, colour_in=colour_in)
    got = cpp_ext.pack_frames(frames, spec.mean, spec.std, swap_rb=colour_in != colour)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_pack_frames_writes_into_out(rng):
    frames = random_frames(rng, 2, 9, 11)
    for dtype in (np.float32, np.float16):
        out = np.full((2, 3, 9, 11), np.nan, dtype)
        got = cpp_ext.pack_frames(frames, IMAGENET_MEAN, IMAGENET_STD, out=out)
        assert got is out
        np.testing.assert_array_equal(out, cpp_ext.pack_frames(frames, IMAGENET_MEAN, IMAGENET_STD, out_dtype=dtype))


def test_pack_frames_float16_rounds_like_numpy_at_the_extremes():
    """Huge and tiny values (overflow to inf, subnormals) round as numpy's astype(float16) does."""
    frames = np.arange(256, dtype=np.uint8).reshape(1, 1, 256, 1).repeat(3, axis=3)
    for mean, std in [((0, 0, 0), (1e-4, 1e-5, 1e-6)), ((0.1, 0.2, 0.3), (7e-6, 2e-5, 1e4)), ((0.5,) * 3, (3e4,) * 3)]:
        got = cpp_ext.pack_frames(frames, mean, std, out_dtype=np.float16)
        with np.errstate(over="ignore"):
            want = kernels.pack_frames_numpy(frames, mean, std, out_dtype=np.float16)
        np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))


def test_pack_frames_from_threads(rng):
    """The GIL is released: concurrent calls on different buffers stay correct."""
    batches = [random_frames(rng, 2, 40, 40) for _ in range(6)]
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda f: cpp_ext.pack_frames(f, IMAGENET_MEAN, IMAGENET_STD), batches))
    for frames, got in zip(batches, results, strict=True):
        np.testing.assert_array_equal(got, kernels.pack_frames_numpy(frames, IMAGENET_MEAN, IMAGENET_STD))


def test_thread_count_does_not_change_results(rng):
    """Calls above ~1 MiB use the OpenMP team; one thread or several give the same bytes."""
    frames = random_frames(rng, 6, 130, 170)
    ring = rng.standard_normal((9, 3, 130, 170)).astype(np.float32)
    mats = np.stack([random_similarity(rng, (130, 170), (99, 97)) for _ in range(6)])
    results = []
    try:
        for n in (1, 2, 3):
            cpp_ext.set_num_threads(n)
            assert cpp_ext.get_num_threads() == n
            results.append(
                (
                    cpp_ext.pack_frames(frames, IMAGENET_MEAN, IMAGENET_STD, out_dtype=np.float16),
                    cpp_ext.gather_clips(ring, 20, 9, [22, 25, 28], 4),
                    cpp_ext.warp_crop(frames, mats, (99, 97)),
                )
            )
    finally:
        cpp_ext.set_num_threads(0)
    for later in results[1:]:
        for a, b in zip(results[0], later, strict=True):
            np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------------------------------
# gather_clips


def reference_clips(ring, first, count, ends, n, stream_start):
    """Slot by slot: frame clamp(end - n + 1 + j, stream_start, newest) read from row frame % R."""
    newest = first + count - 1
    out = np.empty((len(ends), n, *ring.shape[1:]), ring.dtype)
    for b, end in enumerate(ends):
        for j in range(n):
            frame = min(max(end - n + 1 + j, stream_start), newest)
            assert frame >= first
            out[b, j] = ring[frame % len(ring)]
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.uint8])
@pytest.mark.parametrize("tail", [(), (3,), (5, 7)])
def test_gather_clips_matches_reference(rng, dtype, tail):
    for _ in range(20):
        ring_size = int(rng.integers(1, 24))
        n = int(rng.integers(1, 8))
        ring = (rng.standard_normal((ring_size, *tail)) * 50).astype(dtype)
        count = int(rng.integers(1, ring_size + 1))
        first = int(rng.integers(0, 5 * ring_size))  # the held frames often wrap around the ring's end
        stream_start = int(rng.integers(max(0, first - 3 * n), first + count))
        # Clips whose frames are all still held, from before the stream's start to past its newest frame.
        lo = first + n - 1 if stream_start < first else stream_start - n - 2
        ends = rng.integers(lo, first + count + n, size=int(rng.integers(1, 6)))
        want = reference_clips(ring, first, count, ends, n, stream_start)
        got = cpp_ext.gather_clips(ring, first, count, ends, n, stream_start=stream_start)
        assert got.dtype == ring.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want, err_msg=f"R={ring_size} first={first} count={count} n={n}")
        np.testing.assert_array_equal(kernels.gather_clips_numpy(ring, first, count, ends, n, stream_start), want)


def test_gather_clips_wraps_and_replicates_edges():
    ring = np.arange(8, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)  # row r holds r
    # Frames 13..20 held (rows 5, 6, 7, 0, 1, 2, 3, 4); stream started at 13.
    got = cpp_ext.gather_clips(ring, 13, 8, np.array([14, 17, 22]), 4)[..., 0]
    frames = np.array([[13, 13, 13, 14], [14, 15, 16, 17], [19, 20, 20, 20]])
    np.testing.assert_array_equal(got, frames % 8)


def test_gather_clips_writes_into_out(rng):
    ring = rng.standard_normal((10, 4)).astype(np.float32)
    out = np.zeros((2, 3, 4), np.float32)
    assert cpp_ext.gather_clips(ring, 0, 10, [5, 9], 3, out=out) is out
    np.testing.assert_array_equal(out, reference_clips(ring, 0, 10, [5, 9], 3, 0))


def test_gather_clips_names_the_overwritten_frame(rng):
    ring = rng.standard_normal((6, 2)).astype(np.float32)
    for gather in (cpp_ext.gather_clips, kernels.gather_clips_numpy):
        with pytest.raises(IndexError, match=r"clip 1 .*needs frame 8.*holds frames 10\.\.15"):
            gather(ring, 10, 6, np.array([15, 10, 12]), 3, stream_start=0)


# ---------------------------------------------------------------------------------------------------
# warp_crop


def random_similarity(rng, src_hw, out_wh):
    """A face-alignment-like forward matrix: rotate, scale and move a random point of the frame to the crop."""
    angle, scale = rng.uniform(-np.pi, np.pi), rng.uniform(0.2, 3.0)
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    centre = rng.uniform(-0.2, 1.2, 2) * src_hw[::-1]
    target = np.array(out_wh) / 2 + rng.uniform(-5, 5, 2)
    return np.array(
        [[c, -s, target[0] - c * centre[0] + s * centre[1]], [s, c, target[1] - s * centre[0] - c * centre[1]]]
    )


@pytest.mark.parametrize("border", ["constant", "replicate"])
def test_warp_crop_matches_cv2(rng, border):
    cv_border = {"constant": cv2.BORDER_CONSTANT, "replicate": cv2.BORDER_REPLICATE}[border]
    for _ in range(12):
        h, w = (int(v) for v in rng.integers(1, 160, 2))
        frame = random_frames(rng, 1, h, w)[0]
        out_wh = (int(rng.integers(1, 120)), int(rng.integers(1, 120)))
        m = random_similarity(rng, (h, w), out_wh)
        want = cv2.warpAffine(frame, m, out_wh, flags=cv2.INTER_LINEAR, borderMode=cv_border)
        got = cpp_ext.warp_crop(frame, m, out_wh, border)
        assert got.shape == want.shape and got.dtype == np.uint8
        diff = np.abs(got.astype(int) - want.astype(int))
        assert diff.max() <= 1, f"frame {w}x{h} -> {out_wh}, max diff {diff.max()} ({(diff > 0).sum()} values)"


def test_warp_crop_batched_equals_one_by_one(rng):
    frames = random_frames(rng, 3, 45, 37)
    mats = np.stack([random_similarity(rng, (45, 37), (21, 23)) for _ in range(3)]).astype(np.float32)
    got = cpp_ext.warp_crop(frames, mats, (21, 23), "replicate")
    assert got.shape == (3, 23, 21, 3)
    for b in range(3):
        np.testing.assert_array_equal(got[b], cpp_ext.warp_crop(frames[b], mats[b], (21, 23), "replicate"))
    out = np.empty_like(got)
    assert cpp_ext.warp_crop(frames, mats, (21, 23), "replicate", out=out) is out
    np.testing.assert_array_equal(out, got)


def test_warp_crop_outside_the_frame_is_border(rng):
    frame = random_frames(rng, 1, 20, 20)[0]
    far = np.array([[1.0, 0.0, 500.0], [0.0, 1.0, 500.0]])  # the crop sees only what lies left/above the frame
    assert not cpp_ext.warp_crop(frame, far, (9, 9), "constant").any()
    np.testing.assert_array_equal(
        cpp_ext.warp_crop(frame, far, (9, 9), "replicate"), np.broadcast_to(frame[0, 0], (9, 9, 3))
    )


# ---------------------------------------------------------------------------------------------------
# Bad arguments raise a clear exception on both backends


BACKENDS = {
    "cpp_ext": (cpp_ext.pack_frames, cpp_ext.gather_clips, cpp_ext.warp_crop),
    "numpy": (kernels.pack_frames_numpy, kernels.gather_clips_numpy, kernels.warp_crop_numpy),
}
FRAMES = np.zeros((2, 8, 8, 3), np.uint8)
RING = np.zeros((6, 4), np.float32)
M = np.array([[1.0, 0, 0], [0, 1.0, 0]])

PACK_CASES = [
    ("float frames", TypeError, "uint8", lambda: (FRAMES.astype(np.float32), IMAGENET_MEAN, IMAGENET_STD), {}),
    ("rank 3", ValueError, r"\[B, H, W, 3\]", lambda: (FRAMES[0], IMAGENET_MEAN, IMAGENET_STD), {}),
    (
        "4 channels",
        ValueError,
        r"\[B, H, W, 3\]",
        lambda: (np.zeros((1, 4, 4, 4), np.uint8), IMAGENET_MEAN, IMAGENET_STD),
        {},
    ),
    ("strided view", ValueError, "C-contiguous", lambda: (FRAMES[:, ::2], IMAGENET_MEAN, IMAGENET_STD), {}),
    ("two means", ValueError, "3 values", lambda: (FRAMES, (0.5, 0.5), IMAGENET_STD), {}),
    ("zero std", ValueError, "std must be > 0", lambda: (FRAMES, IMAGENET_MEAN, (1, 0, 1)), {}),
    (
        "int out_dtype",
        TypeError,
        "float32 or float16",
        lambda: (FRAMES, IMAGENET_MEAN, IMAGENET_STD),
        {"out_dtype": np.int32},
    ),
    (
        "out shape",
        ValueError,
        "out must have shape",
        lambda: (FRAMES, IMAGENET_MEAN, IMAGENET_STD),
        {"out": np.zeros((2, 8, 8, 3), np.float32)},
    ),
    (
        "out dtype",
        TypeError,
        "out must be float16",
        lambda: (FRAMES, IMAGENET_MEAN, IMAGENET_STD),
        {"out": np.zeros((2, 3, 8, 8), np.float32), "out_dtype": np.float16},
    ),
    ("list frames", TypeError, "numpy array", lambda: (FRAMES.tolist(), IMAGENET_MEAN, IMAGENET_STD), {}),
]
GATHER_CASES = [
    ("object ring", TypeError, "numbers", lambda: (RING.astype(object), 0, 6, [3], 2), {}),
    ("strided ring", ValueError, "C-contiguous", lambda: (np.zeros((6, 8), np.float32)[:, ::2], 0, 6, [3], 2), {}),
    ("float ends", TypeError, "integer", lambda: (RING, 0, 6, [3.0], 2), {}),
    ("2-d ends", ValueError, r"\[B\]", lambda: (RING, 0, 6, [[3]], 2), {}),
    ("overwritten frame", IndexError, "clip 0 .*frame 1", lambda: (RING, 4, 6, [4], 4), {"stream_start": 0}),
    ("count > R", IndexError, "count", lambda: (RING, 0, 7, [3], 2), {}),
    ("count 0", IndexError, "count", lambda: (RING, 0, 0, [3], 2), {}),
    ("n 0", ValueError, "n ", lambda: (RING, 0, 6, [3], 0), {}),
    ("start after newest", ValueError, "stream_start", lambda: (RING, 0, 6, [3], 2), {"stream_start": 9}),
    ("float first", TypeError, "first", lambda: (RING, 0.5, 6, [3], 2), {}),
    (
        "out shape",
        ValueError,
        "out must have shape",
        lambda: (RING, 0, 6, [3], 2),
        {"out": np.zeros((1, 3, 4), np.float32)},
    ),
]
WARP_CASES = [
    ("float frame", TypeError, "uint8", lambda: (FRAMES[0].astype(np.float32), M, (4, 4)), {}),
    ("rank 2", ValueError, r"\[H, W, 3\]", lambda: (np.zeros((8, 8), np.uint8), M, (4, 4)), {}),
    ("strided frame", ValueError, "C-contiguous", lambda: (FRAMES[0, ::2], M, (4, 4)), {}),
    ("M 3x3", ValueError, "M must be", lambda: (FRAMES[0], np.eye(3), (4, 4)), {}),
    ("M for batch", ValueError, "M must be", lambda: (FRAMES, M, (4, 4)), {}),
    ("string M", TypeError, "M must be", lambda: (FRAMES[0], np.array([["a"] * 3] * 2), (4, 4)), {}),
    ("border", ValueError, "border", lambda: (FRAMES[0], M, (4, 4)), {"border": "reflect"}),
    ("out_size", ValueError, "out_size", lambda: (FRAMES[0], M, (4,)), {}),
    ("zero size", ValueError, "out_size", lambda: (FRAMES[0], M, (0, 4)), {}),
]


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize(
    ("op", "case"),
    [(0, c) for c in PACK_CASES] + [(1, c) for c in GATHER_CASES] + [(2, c) for c in WARP_CASES],
    ids=lambda v: v[0] if isinstance(v, tuple) else ["pack", "gather", "warp"][v],
)
def test_bad_arguments_raise(backend, op, case):
    _, error, message, args, kwargs = case
    with pytest.raises(error, match=message):
        BACKENDS[backend][op](*args(), **kwargs)


def test_read_only_out_is_refused():
    out = np.zeros((2, 3, 8, 8), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        cpp_ext.pack_frames(FRAMES, IMAGENET_MEAN, IMAGENET_STD, out=out)


# ---------------------------------------------------------------------------------------------------
# ks_runtime.core.kernels: which backend


def test_ops_uses_cpp_ext_when_it_imports():
    assert kernels.backend() == "cpp_ext", kernels.BACKEND_REASON
    assert kernels.pack_frames.__module__ == "ks_runtime.core.kernels"


def test_ops_disable_switch_forces_numpy():
    code = "from ks_runtime.core import kernels; print(kernels.backend())"
    env = {**os.environ, "KS_DISABLE_CPP_EXT": "1"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "numpy"
