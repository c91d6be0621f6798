"""cpp_ext.cuda: the CUDA kernels against the CPU ops.

Three layers: the wrapper imports and explains itself everywhere; the kernels' per-thread code, run on the
host through libks_cuda's emulate entry points, equals the CPU ops wherever the library was built (no GPU
needed); and, marked `gpu`, the kernels themselves on a device, skipped with the wrapper's reason elsewhere.
"""

import importlib.util
import os
import re
import shutil

import numpy as np
import pytest

import cpp_ext
import cpp_ext.cuda as kcuda
from ks_runtime.core.preprocess import IMAGENET_MEAN, IMAGENET_STD

NOT_BUILT = None if kcuda.library_path() is not None else kcuda.unavailable_reason()
NO_GPU = kcuda.unavailable_reason()
needs_library = pytest.mark.skipif(NOT_BUILT is not None, reason=str(NOT_BUILT))
requires_gpu = pytest.mark.skipif(NO_GPU is not None, reason=str(NO_GPU))


@pytest.fixture
def rng(request):
    seed = np.random.SeedSequence().entropy % 2**32
    request.node.user_properties.append(("seed", seed))
    return np.random.default_rng(seed)


def frames_of(rng, *shape):
    return rng.integers(0, 256, (*shape, 3), dtype=np.uint8)


def similarity(rng, src_hw, out_wh):
    angle, scale = rng.uniform(-np.pi, np.pi), rng.uniform(0.3, 2.5)
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    cx, cy = rng.uniform(-0.2, 1.2, 2) * src_hw[::-1]
    tx, ty = np.array(out_wh) / 2
    return np.array([[c, -s, tx - c * cx + s * cy], [s, c, ty - s * cx - c * cy]])


# ---------------------------------------------------------------------------------------------------
# The wrapper, everywhere


def test_wrapper_imports_and_explains_itself():
    reason = kcuda.unavailable_reason()
    assert kcuda.available() == (reason is None)
    if reason is not None:
        assert reason.startswith(("no CUDA driver/GPU", "libks_cuda.so was not built")), reason


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
@pytest.mark.skipif(os.environ.get("KS_BUILD_CUDA") == "0", reason="KS_BUILD_CUDA=0")
def test_library_is_built_where_nvcc_is():
    """CI has nvcc: the CUDA code must have compiled there (a silent skip would hide a broken build)."""
    assert kcuda.library_path() is not None, f"nvcc is on PATH, yet: {NOT_BUILT}"
    assert kcuda.build_archs() == "80-real,86-real,87-real,89-real,90" or os.environ.get("KS_CUDA_ARCHS")


@pytest.mark.skipif(NO_GPU is None, reason="a CUDA GPU is present")
def test_ops_without_a_gpu_raise_the_reason():
    view = kcuda.device_array(0x10000, (1, 4, 4, 3), np.uint8)  # never dereferenced
    with pytest.raises(kcuda.CudaUnavailableError, match=re.escape(NO_GPU)):
        kcuda.pack_frames(view, IMAGENET_MEAN, IMAGENET_STD)


def test_wrapper_checks_arguments_before_any_device_work():
    with pytest.raises(TypeError, match="device array"):
        kcuda.pack_frames(np.zeros((1, 4, 4, 3), np.uint8), IMAGENET_MEAN, IMAGENET_STD)
    with pytest.raises(TypeError, match="uint8"):
        kcuda.pack_frames(kcuda.device_array(0x10000, (1, 4, 4, 3), np.float32), IMAGENET_MEAN, IMAGENET_STD)
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        kcuda.pack_frames(kcuda.device_array(0x10000, (4, 4, 3), np.uint8), IMAGENET_MEAN, IMAGENET_STD)
    with pytest.raises(TypeError, match="integer"):
        kcuda.gather_clips(kcuda.device_array(0x10000, (4, 2), np.float32), 0, 4, [1.5], 2)
    with pytest.raises(TypeError, match="stride"):
        kcuda.gather_clips(kcuda.device_array(0x10000, (4, 2), np.float32), 0, 4, [1], 2, stride=1.5)
    with pytest.raises(ValueError, match="M must be"):
        kcuda.warp_crop(kcuda.device_array(0x10000, (8, 8, 3), np.uint8), np.eye(3), (4, 4))


def test_streams_are_read_from_common_handle_types():
    class CupyLike:
        ptr = 1234

    class Protocol:
        def __cuda_stream__(self):
            return (0, 5678)

    assert kcuda._stream(None) is None and kcuda._stream(0) is None
    assert kcuda._stream(42) == 42
    assert kcuda._stream(CupyLike()) == 1234
    assert kcuda._stream(Protocol()) == 5678
    with pytest.raises(TypeError, match="stream"):
        kcuda._stream("default")


# ---------------------------------------------------------------------------------------------------
# The kernels' per-thread code on the host (needs the library, not a GPU)


@needs_library
@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 7, 5), (3, 8, 6), (2, 31, 33), (1, 64, 64)])
@pytest.mark.parametrize("swap_rb", [False, True])
@pytest.mark.parametrize("out_dtype", [np.float32, np.float16])
def test_emulated_pack_kernel_equals_cpu(rng, shape, swap_rb, out_dtype):
    frames = frames_of(rng, *shape)  # H*W % 4 == 0 takes the vectorised path, else the per-pixel one
    mean, std = rng.uniform(0, 1, 3), rng.uniform(0.05, 2, 3)
    want = cpp_ext.pack_frames(frames, mean, std, swap_rb=swap_rb, out_dtype=out_dtype)
    got = kcuda.emulate_pack_frames(frames, mean, std, swap_rb=swap_rb, out_dtype=out_dtype)
    np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))


@needs_library
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.uint8])
@pytest.mark.parametrize("tail", [(), (3,), (5, 8)])
def test_emulated_gather_kernel_equals_cpu(rng, dtype, tail):
    for _ in range(10):
        ring_size, n = int(rng.integers(1, 20)), int(rng.integers(1, 7))
        ring = (rng.standard_normal((ring_size, *tail)) * 40).astype(dtype)
        count = int(rng.integers(1, ring_size + 1))
        first = int(rng.integers(0, 4 * ring_size))
        ends = rng.integers(first + n - 1, first + count + n, size=int(rng.integers(1, 5)))
        want = cpp_ext.gather_clips(ring, first, count, ends, n)
        np.testing.assert_array_equal(kcuda.emulate_gather_clips(ring, first, count, ends, n), want)


@needs_library
def test_emulated_gather_kernel_across_launch_chunks(rng):
    """More than 480 clip rows: the rows travel in several launches."""
    ring = rng.standard_normal((40, 6)).astype(np.float32)
    ends = rng.integers(100, 150, size=130)
    want = cpp_ext.gather_clips(ring, 100, 40, ends, 5, stream_start=100)
    np.testing.assert_array_equal(kcuda.emulate_gather_clips(ring, 100, 40, ends, 5, stream_start=100), want)
    with pytest.raises(IndexError, match="clip 0"):
        kcuda.emulate_gather_clips(ring, 100, 40, np.array([101]), 5, stream_start=0)


@needs_library
@pytest.mark.parametrize("stride", [2, 3, 7])
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.uint8])
@pytest.mark.parametrize("tail", [(), (5, 8)])
def test_emulated_strided_gather_kernel_equals_cpu(rng, stride, dtype, tail):
    for _ in range(10):
        ring_size, n = int(rng.integers(1, 20)), int(rng.integers(1, 7))
        ring = (rng.standard_normal((ring_size, *tail)) * 40).astype(dtype)
        count = int(rng.integers(1, ring_size + 1))
        first = int(rng.integers(0, 4 * ring_size))
        span = (n - 1) * stride
        start = int(rng.integers(first, first + count))  # clips before it clamp to it, so every end is valid
        ends = rng.integers(start - span - 3, first + count + span + 3, size=int(rng.integers(1, 5)))
        want = cpp_ext.gather_clips(ring, first, count, ends, n, stream_start=start, stride=stride)
        got = kcuda.emulate_gather_clips(ring, first, count, ends, n, stream_start=start, stride=stride)
        np.testing.assert_array_equal(got, want)


@needs_library
def test_emulated_strided_gather_kernel_checks_like_cpu(rng):
    ring = rng.standard_normal((40, 6)).astype(np.float32)
    ends = rng.integers(100, 200, size=130)  # 650 clip rows: several launches
    want = cpp_ext.gather_clips(ring, 100, 40, ends, 5, stream_start=100, stride=3)
    np.testing.assert_array_equal(kcuda.emulate_gather_clips(ring, 100, 40, ends, 5, stream_start=100, stride=3), want)
    with pytest.raises(IndexError, match=r"clip 1 \(ending at frame 140\) needs frame 96"):
        kcuda.emulate_gather_clips(ring, 100, 40, np.array([150, 140]), 3, stream_start=0, stride=22)
    for stride in (0, -3):
        with pytest.raises(ValueError, match=f"stride must be >= 1, got {stride}"):
            kcuda.emulate_gather_clips(ring, 100, 40, ends, 5, stride=stride)


@needs_library
@pytest.mark.parametrize("border", ["constant", "replicate"])
def test_emulated_warp_kernel_equals_cpu(rng, border):
    for _ in range(6):
        h, w = (int(v) for v in rng.integers(1, 120, 2))
        out_wh = (int(rng.integers(1, 90)), int(rng.integers(1, 90)))
        frame = frames_of(rng, h, w)
        m = similarity(rng, (h, w), out_wh)
        want = cpp_ext.warp_crop(frame, m, out_wh, border)
        np.testing.assert_array_equal(kcuda.emulate_warp_crop(frame, m, out_wh, border), want)


@needs_library
def test_emulated_warp_kernel_batched_across_launch_chunks(rng):
    """More than 64 images: the matrices travel in several launches."""
    frames = frames_of(rng, 70, 12, 10)
    mats = np.stack([similarity(rng, (12, 10), (7, 9)) for _ in range(70)])
    want = cpp_ext.warp_crop(frames, mats, (7, 9), "replicate")
    np.testing.assert_array_equal(kcuda.emulate_warp_crop(frames, mats, (7, 9), "replicate"), want)


# ---------------------------------------------------------------------------------------------------
# The kernels on a GPU


@pytest.fixture
def stream():
    handle = kcuda.create_stream()
    yield handle
    kcuda.destroy_stream(handle)


@pytest.mark.parametrize("shape", [(1, 7, 5), (4, 224, 224), (3, 31, 33)])
@pytest.mark.parametrize("swap_rb", [False, True])
@pytest.mark.parametrize("out_dtype", [np.float32, np.float16])
@pytest.mark.gpu
@requires_gpu
def test_gpu_pack_frames_equals_cpu(rng, stream, shape, swap_rb, out_dtype):
    frames = frames_of(rng, *shape)
    want = cpp_ext.pack_frames(frames, IMAGENET_MEAN, IMAGENET_STD, swap_rb=swap_rb, out_dtype=out_dtype)
    with kcuda.DeviceArray.from_host(frames, stream) as d_in:
        d_out = kcuda.pack_frames(d_in, IMAGENET_MEAN, IMAGENET_STD, swap_rb, out_dtype, stream=stream)
        got = d_out.to_host(stream)
        d_out.free()
    np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))


@pytest.mark.gpu
@requires_gpu
def test_gpu_pack_frames_into_an_engine_buffer(rng, stream):
    """Writing through a raw pointer into part of a larger buffer, as into a TensorRT input binding."""
    frames = frames_of(rng, 2, 16, 16)
    want = cpp_ext.pack_frames(frames, IMAGENET_MEAN, IMAGENET_STD, out_dtype=np.float16)
    with (
        kcuda.DeviceArray.empty((3, 3, 16, 16), np.float16) as engine_input,
        kcuda.DeviceArray.from_host(frames, stream) as d_in,
    ):
        slot = kcuda.device_array(engine_input.ptr + want[0].nbytes, (2, 3, 16, 16), np.float16)
        kcuda.pack_frames(d_in, IMAGENET_MEAN, IMAGENET_STD, out=slot, stream=stream)
        got = engine_input.to_host(stream)[1:]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.uint8])
@pytest.mark.parametrize("tail", [(), (7,), (3, 16, 16)])
@pytest.mark.parametrize("stride", [1, 3])
@pytest.mark.gpu
@requires_gpu
def test_gpu_gather_clips_equals_cpu(rng, stream, dtype, tail, stride):
    ring = (rng.standard_normal((12, *tail)) * 40).astype(dtype)
    ends = rng.integers(40, 55, size=9)
    # The ring holds frames 40..51 and the stream starts at 40: early slots clamp to it, late ones to 51.
    want = cpp_ext.gather_clips(ring, 40, 12, ends, 5, stream_start=40, stride=stride)
    with kcuda.DeviceArray.from_host(ring, stream) as d_ring:
        d_out = kcuda.gather_clips(d_ring, 40, 12, ends, 5, stream_start=40, stream=stream, stride=stride)
        got = d_out.to_host(stream)
        d_out.free()
        with pytest.raises(IndexError, match="clip 0"):
            kcuda.gather_clips(d_ring, 40, 12, np.array([41]), 5, stream_start=0, stream=stream, stride=stride)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("border", ["constant", "replicate"])
@pytest.mark.gpu
@requires_gpu
def test_gpu_warp_crop_equals_cpu(rng, stream, border):
    frames = frames_of(rng, 5, 120, 97)
    mats = np.stack([similarity(rng, (120, 97), (56, 64)) for _ in range(5)])
    want = cpp_ext.warp_crop(frames, mats, (56, 64), border)
    with kcuda.DeviceArray.from_host(frames, stream) as d_in:
        d_out = kcuda.warp_crop(d_in, mats, (56, 64), border, stream=stream)
        got = d_out.to_host(stream)
        d_out.free()
    np.testing.assert_array_equal(got, want)


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("cupy") is None, reason="cupy is not installed")
@requires_gpu
def test_gpu_accepts_cupy_arrays_and_streams(rng):
    import cupy

    frames = frames_of(rng, 2, 20, 24)
    with cupy.cuda.Stream(non_blocking=True) as cp_stream:
        d_in = cupy.asarray(frames)
        out = cupy.empty((2, 3, 20, 24), cupy.float32)
        kcuda.pack_frames(d_in, IMAGENET_MEAN, IMAGENET_STD, out=out, stream=cp_stream)
        cp_stream.synchronize()
    np.testing.assert_array_equal(cupy.asnumpy(out), cpp_ext.pack_frames(frames, IMAGENET_MEAN, IMAGENET_STD))


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("cuda") is None, reason="cuda-python (the gpu extra) is not installed")
@requires_gpu
def test_gpu_accepts_cuda_python_streams(rng):
    from cuda.bindings import runtime

    err, cu_stream = runtime.cudaStreamCreate()
    assert err == runtime.cudaError_t.cudaSuccess
    try:
        ring = rng.standard_normal((8, 5)).astype(np.float32)
        with kcuda.DeviceArray.from_host(ring, cu_stream) as d_ring:
            d_out = kcuda.gather_clips(d_ring, 0, 8, [3, 7], 4, stream=cu_stream)
            got = d_out.to_host(cu_stream)
            d_out.free()
        np.testing.assert_array_equal(got, cpp_ext.gather_clips(ring, 0, 8, [3, 7], 4))
    finally:
        runtime.cudaStreamDestroy(cu_stream)
