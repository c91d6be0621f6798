"""CUDA versions of the cpp_ext ops: ctypes over libks_cuda.so, device buffers in, asynchronous on a stream.

Buffers are anything with `__cuda_array_interface__` (CuPy arrays, DeviceArray below) or a raw device
pointer wrapped by `device_array(ptr, shape, dtype)`, e.g. a TensorRT engine's input binding, so frames
and clips go straight into it. Streams: an int handle, a CuPy stream, a cuda-python CUstream /
cudaStream_t, or None / 0 for the default stream. The library links the CUDA runtime statically; it
imports anywhere, and where there is no driver or GPU every op raises CudaUnavailableError with
`unavailable_reason()` as its message. Small host inputs (mean/std, clip ends, matrices) are read during
the call. The `emulate_*` functions run the kernels' per-thread code on the host (tests without a GPU).
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import operator
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from cpp_ext import BORDERS

log = logging.getLogger(__name__)

LIB_NAME = "libks_cuda.so"
ERR_ARGUMENT, ERR_INDEX = -1, -2
_ABI_VERSION = 2  # KS_CUDA_ABI_VERSION in ks_cuda.h
_NO_DEVICE = 100  # cudaErrorNoDevice

__all__ = [
    "CudaError",
    "CudaUnavailableError",
    "DeviceArray",
    "available",
    "build_archs",
    "create_stream",
    "destroy_stream",
    "device_array",
    "emulate_gather_clips",
    "emulate_pack_frames",
    "emulate_warp_crop",
    "gather_clips",
    "library_path",
    "pack_frames",
    "synchronize",
    "unavailable_reason",
    "warp_crop",
]


class CudaError(RuntimeError):
    """A CUDA call failed; the message has the CUDA error name and text."""


class CudaUnavailableError(CudaError):
    """libks_cuda.so is missing, or there is no CUDA driver or GPU."""


# ---------------------------------------------------------------------------------------------------
# Loading the library


def library_path() -> Path | None:
    """Where libks_cuda.so is: $KS_CUDA_LIB, else beside the compiled cpp_ext._cpu, else in the package."""
    env = os.environ.get("KS_CUDA_LIB")
    if env:
        return Path(env) if Path(env).is_file() else None
    spec = importlib.util.find_spec("cpp_ext._cpu")
    dirs = [Path(spec.origin).parent] if spec is not None and spec.origin else []
    dirs += [Path(p) for p in (importlib.util.find_spec("cpp_ext").submodule_search_locations or [])]
    for d in dirs:
        if (d / LIB_NAME).is_file():
            return d / LIB_NAME
    return None


def _declare(lib: ctypes.CDLL) -> None:
    c_i64, c_int, vp, c_float_p, c_double_p = (
        ctypes.c_int64,
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_float),
        ctypes.POINTER(ctypes.c_double),
    )
    c_i64_p = ctypes.POINTER(ctypes.c_int64)
    sigs = {
        "ks_cuda_abi_version": (c_int, []),
        "ks_cuda_build_archs": (ctypes.c_char_p, []),
        "ks_cuda_error_string": (ctypes.c_char_p, [c_int]),
        "ks_cuda_last_message": (ctypes.c_char_p, []),
        "ks_cuda_device_count": (c_int, [ctypes.POINTER(c_int)]),
        "ks_cuda_versions": (c_int, [ctypes.POINTER(c_int), ctypes.POINTER(c_int)]),
        "ks_cuda_malloc": (c_int, [ctypes.POINTER(vp), ctypes.c_uint64]),
        "ks_cuda_free": (c_int, [vp]),
        "ks_cuda_memcpy_htod": (c_int, [vp, vp, ctypes.c_uint64, vp]),
        "ks_cuda_memcpy_dtoh": (c_int, [vp, vp, ctypes.c_uint64, vp]),
        "ks_cuda_stream_create": (c_int, [ctypes.POINTER(vp)]),
        "ks_cuda_stream_destroy": (c_int, [vp]),
        "ks_cuda_stream_synchronize": (c_int, [vp]),
        "ks_cuda_pack_frames": (c_int, [vp, vp, c_i64, c_i64, c_i64, c_float_p, c_float_p, c_int, c_int, vp]),
        "ks_cuda_gather_clips": (
            c_int,
            [vp, vp, c_i64, c_i64, c_i64, c_i64, c_i64, c_i64_p, c_i64, c_i64, c_i64, vp],
        ),
        "ks_cuda_warp_crop": (c_int, [vp, c_i64, c_i64, c_i64, c_double_p, vp, c_i64, c_i64, c_int, vp]),
        "ks_cuda_emulate_pack_frames": (c_int, [vp, vp, c_i64, c_i64, c_i64, c_float_p, c_float_p, c_int, c_int]),
        "ks_cuda_emulate_gather_clips": (
            c_int,
            [vp, vp, c_i64, c_i64, c_i64, c_i64, c_i64, c_i64_p, c_i64, c_i64, c_i64],
        ),
        "ks_cuda_emulate_warp_crop": (c_int, [vp, c_i64, c_i64, c_i64, c_double_p, vp, c_i64, c_i64, c_int]),
    }
    for name, (restype, argtypes) in sigs.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes


@lru_cache(maxsize=1)
def _load() -> tuple[ctypes.CDLL | None, str | None]:
    path = library_path()
    if path is None:
        return None, (
            f"{LIB_NAME} was not built (no nvcc when cpp_ext was installed, or KS_BUILD_CUDA=0); "
            "reinstall with nvcc on PATH"
        )
    try:
        lib = ctypes.CDLL(str(path))
        _declare(lib)
    except (OSError, AttributeError) as exc:
        return None, f"{path} does not load: {exc}"
    # A library built before an argument was added would read the wrong arguments: refuse it.
    if lib.ks_cuda_abi_version() != _ABI_VERSION:
        return None, (
            f"{path} has ABI version {lib.ks_cuda_abi_version()}, this wrapper expects {_ABI_VERSION}; rebuild"
        )
    log.debug("loaded %s (CUDA architectures %s)", path, lib.ks_cuda_build_archs().decode())
    return lib, None


@lru_cache(maxsize=1)
def _device_reason() -> str | None:
    lib, reason = _load()
    if lib is None:
        return reason
    count = ctypes.c_int(0)
    rc = lib.ks_cuda_device_count(ctypes.byref(count))
    runtime, driver = ctypes.c_int(0), ctypes.c_int(0)
    lib.ks_cuda_versions(ctypes.byref(runtime), ctypes.byref(driver))
    if driver.value == 0:
        return "no CUDA driver/GPU: no NVIDIA driver (libcuda.so.1) found"
    if rc == _NO_DEVICE or (rc == 0 and count.value == 0):
        return "no CUDA driver/GPU: the driver sees no CUDA device"
    if rc != 0:
        return (
            f"no CUDA driver/GPU: {lib.ks_cuda_error_string(rc).decode()} (driver supports CUDA "
            f"{driver.value // 1000}.{driver.value % 1000 // 10}, library built with {runtime.value // 1000}."
            f"{runtime.value % 1000 // 10})"
        )
    return None


def unavailable_reason() -> str | None:
    """Why the CUDA ops cannot run here (None when they can): library missing, no driver, or no GPU."""
    return _device_reason()


def available() -> bool:
    """True when libks_cuda.so loaded and a CUDA device is visible."""
    return _device_reason() is None


def build_archs() -> str | None:
    """The CUDA architectures the library was compiled for, or None when it is not built."""
    lib, _ = _load()
    return None if lib is None else lib.ks_cuda_build_archs().decode()


def _lib(need_device: bool = True) -> ctypes.CDLL:
    lib, reason = _load()
    if lib is None:
        raise CudaUnavailableError(reason)
    if need_device and (reason := _device_reason()) is not None:
        raise CudaUnavailableError(reason)
    return lib


def _check(rc: int, fn: str) -> None:
    if rc == 0:
        return
    lib = _lib(need_device=False)
    message = lib.ks_cuda_last_message().decode()
    if rc == ERR_INDEX:
        raise IndexError(message)
    if rc == ERR_ARGUMENT:
        raise ValueError(message)
    raise CudaError(f"{fn}: CUDA error {rc} ({lib.ks_cuda_error_string(rc).decode()}): {message}")


# ---------------------------------------------------------------------------------------------------
# Device buffers and streams


class DeviceArray:
    """A C-contiguous device buffer (ptr, shape, dtype) with __cuda_array_interface__; owns it if allocated."""

    def __init__(self, ptr: int, shape: Sequence[int], dtype: object, owner: bool = False) -> None:
        self.ptr = int(ptr)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self._owner = owner

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def __cuda_array_interface__(self) -> dict:
        return {
            "shape": self.shape,
            "typestr": self.dtype.str,
            "data": (self.ptr, False),
            "version": 3,
            "strides": None,
        }

    @classmethod
    def empty(cls, shape: Sequence[int], dtype: object) -> DeviceArray:
        """Allocate (cudaMalloc) an uninitialised buffer."""
        arr = cls(0, shape, dtype, owner=True)
        ptr = ctypes.c_void_p()
        _check(_lib().ks_cuda_malloc(ctypes.byref(ptr), max(arr.nbytes, 1)), "cudaMalloc")
        arr.ptr = ptr.value or 0
        return arr

    @classmethod
    def from_host(cls, host: np.ndarray, stream: object = None) -> DeviceArray:
        """Allocate and copy a host array (asynchronous on `stream`; keep `host` alive until it is done)."""
        host = np.ascontiguousarray(host)
        arr = cls.empty(host.shape, host.dtype)
        _check(_lib().ks_cuda_memcpy_htod(arr.ptr, host.ctypes.data, arr.nbytes, _stream(stream)), "memcpy")
        return arr

    def to_host(self, stream: object = None) -> np.ndarray:
        """Copy to a new numpy array, after the work queued on `stream`."""
        host = np.empty(self.shape, self.dtype)
        _check(_lib().ks_cuda_memcpy_dtoh(host.ctypes.data, self.ptr, self.nbytes, _stream(stream)), "memcpy")
        return host

    def free(self) -> None:
        if self._owner and self.ptr:
            _check(_lib().ks_cuda_free(self.ptr), "cudaFree")
        self.ptr, self._owner = 0, False

    def __enter__(self) -> DeviceArray:
        return self

    def __exit__(self, *exc: object) -> None:
        self.free()

    def __del__(self) -> None:
        try:
            if self._owner and self.ptr:
                _load()[0].ks_cuda_free(self.ptr)
        except Exception:  # interpreter shutdown, or the library never loaded
            pass


def device_array(ptr: int, shape: Sequence[int], dtype: object) -> DeviceArray:
    """View a raw device pointer (not owned) as a C-contiguous array, e.g. an engine's input buffer."""
    return DeviceArray(ptr, shape, dtype, owner=False)


def _stream(stream: object) -> int | None:
    """A cudaStream_t as an int from an int, a CuPy stream, a cuda-python stream or None (default stream)."""
    if stream is None:
        return None
    if isinstance(stream, (str, bytes, float)):
        raise TypeError(f"stream must be an int handle, a CuPy or cuda-python stream, got {stream!r}")
    if isinstance(stream, int):
        return stream or None
    if hasattr(stream, "__cuda_stream__"):  # the CUDA stream protocol: (version, handle)
        return int(stream.__cuda_stream__()[1]) or None
    ptr = getattr(stream, "ptr", None)  # cupy.cuda.Stream
    if isinstance(ptr, int):
        return ptr or None
    try:
        from cuda.bindings.utils import get_cuda_native_handle  # cuda-python >= 12.9

        return int(get_cuda_native_handle(stream)) or None
    except (ImportError, TypeError, ValueError):
        pass
    try:
        return int(stream) or None  # older cuda-python CUstream / cudaStream_t
    except TypeError:
        raise TypeError(f"stream must be an int handle, a CuPy or cuda-python stream, got {stream!r}") from None


def create_stream() -> int:
    """A new non-blocking stream handle (cudaStreamCreateWithFlags); destroy it with destroy_stream."""
    handle = ctypes.c_void_p()
    _check(_lib().ks_cuda_stream_create(ctypes.byref(handle)), "cudaStreamCreate")
    return handle.value or 0


def destroy_stream(stream: int) -> None:
    _check(_lib().ks_cuda_stream_destroy(stream), "cudaStreamDestroy")


def synchronize(stream: object = None) -> None:
    """Wait for the work queued on `stream`."""
    _check(_lib().ks_cuda_stream_synchronize(_stream(stream)), "cudaStreamSynchronize")


def _buffer(x: object, fn: str, name: str) -> tuple[int, tuple[int, ...], np.dtype]:
    """(pointer, shape, dtype) of a C-contiguous device array."""
    cai = getattr(x, "__cuda_array_interface__", None)
    if cai is None:
        raise TypeError(
            f"{fn}: {name} must be a device array (__cuda_array_interface__: CuPy, cuda.device_array), "
            f"got {type(x).__name__}"
        )
    shape, dtype = tuple(cai["shape"]), np.dtype(cai["typestr"])
    strides = cai.get("strides")
    if strides is not None and tuple(strides) != _c_strides(shape, dtype.itemsize):
        raise ValueError(f"{fn}: {name} must be C-contiguous, got strides {tuple(strides)} for shape {shape}")
    ptr = int(cai["data"][0])
    if ptr % dtype.itemsize:
        raise ValueError(f"{fn}: {name} is not aligned to its {dtype.itemsize}-byte elements")
    return ptr, shape, dtype


def _c_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    strides, step = [], itemsize
    for s in reversed(shape):
        strides.append(step)
        step *= s
    return tuple(reversed(strides))


def _new_out(shape: tuple[int, ...], dtype: object) -> DeviceArray:
    return DeviceArray.empty(shape, dtype)


# ---------------------------------------------------------------------------------------------------
# The ops


def _pack_args(shape: tuple, dtype: np.dtype, mean: Sequence[float], std: Sequence[float], fn: str):
    if dtype != np.uint8:
        raise TypeError(f"{fn}: frames must be uint8, got {dtype}")
    if len(shape) != 4 or shape[3] != 3:
        raise ValueError(f"{fn}: frames must be [B, H, W, 3], got shape {shape}")
    m = np.ascontiguousarray(np.ravel(mean), dtype=np.float32)
    s = np.ascontiguousarray(np.ravel(std), dtype=np.float32)
    if m.size != 3 or s.size != 3:
        raise ValueError(f"{fn}: mean and std need 3 values each, got {m.size} and {s.size}")
    if not np.all(s > 0):
        raise ValueError(f"{fn}: std must be > 0, got {s.tolist()}")
    return m, s


def _out_dtype(out_dtype: object, out_dt: np.dtype | None, fn: str) -> np.dtype:
    dtype = np.dtype(out_dtype) if out_dtype is not None else (out_dt if out_dt is not None else np.float32)
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float16):
        raise TypeError(f"{fn}: output must be float32 or float16, got {dtype}")
    if out_dt is not None and out_dt != dtype:
        raise TypeError(f"{fn}: out is {out_dt} but out_dtype is {dtype}")
    return dtype


def _check_out_shape(shape: tuple, want: tuple, fn: str) -> None:
    if tuple(shape) != tuple(want):
        raise ValueError(f"{fn}: out must have shape {tuple(want)}, got {tuple(shape)}")


def _f32p(a: np.ndarray):
    return a.ctypes.data_as(ctypes.POINTER(ctypes.c_float))


def pack_frames(
    frames: object,
    mean: Sequence[float],
    std: Sequence[float],
    swap_rb: bool = False,
    out_dtype: object = None,
    out: object = None,
    stream: object = None,
) -> object:
    """Device uint8 [B, H, W, 3] -> float32/float16 [B, 3, H, W], as cpp_ext.pack_frames; returns `out`.

    Without `out`, a DeviceArray is allocated. Asynchronous on `stream`.
    """
    fn = "cuda.pack_frames"
    src, shape, dtype = _buffer(frames, fn, "frames")
    m, s = _pack_args(shape, dtype, mean, std, fn)
    b, h, w, _ = shape
    if out is None:
        out = _new_out((b, 3, h, w), _out_dtype(out_dtype, None, fn))
    dst, out_shape, out_dt = _buffer(out, fn, "out")
    half = _out_dtype(out_dtype, out_dt, fn) == np.float16
    _check_out_shape(out_shape, (b, 3, h, w), fn)
    lib = _lib()
    _check(
        lib.ks_cuda_pack_frames(src, dst, b, h, w, _f32p(m), _f32p(s), int(bool(swap_rb)), int(half), _stream(stream)),
        fn,
    )
    return out


def _ends(clip_ends: object, fn: str) -> np.ndarray:
    ends = np.asarray(clip_ends)
    if ends.dtype.kind not in "iu":
        raise TypeError(f"{fn}: clip_ends must be integer frame indices (a host array), got {ends.dtype}")
    if ends.ndim != 1:
        raise ValueError(f"{fn}: clip_ends must be [B], got shape {ends.shape}")
    return np.ascontiguousarray(ends, dtype=np.int64)


def _index(x: object, fn: str, name: str) -> int:
    try:
        return operator.index(x)
    except TypeError:
        raise TypeError(f"{fn}: {name} must be an integer, got {x!r}") from None


def gather_clips(
    ring: object,
    first: int,
    count: int,
    clip_ends: Sequence[int] | np.ndarray,
    n: int,
    stream_start: int | None = None,
    out: object = None,
    stream: object = None,
    stride: int = 1,
) -> object:
    """Device ring [R, ...] -> clips [B, n, ...], as cpp_ext.gather_clips (stride too); clip_ends is a host array."""
    fn = "cuda.gather_clips"
    src, shape, dtype = _buffer(ring, fn, "ring")
    if dtype.kind not in "fuib":
        raise TypeError(f"{fn}: ring must hold numbers, got {dtype}")
    if len(shape) < 1:
        raise ValueError(f"{fn}: ring must be [R, ...], got a 0-d array")
    ends = _ends(clip_ends, fn)
    n, stride = _index(n, fn, "n"), _index(stride, fn, "stride")
    want = (len(ends), n, *shape[1:])
    if out is None:
        out = _new_out(tuple(max(v, 0) for v in want), dtype)
    dst, out_shape, out_dt = _buffer(out, fn, "out")
    if out_dt != dtype:
        raise TypeError(f"{fn}: out must be {dtype} like the ring, got {out_dt}")
    _check_out_shape(out_shape, want, fn)
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    first = _index(first, fn, "first")
    start = first if stream_start is None else _index(stream_start, fn, "stream_start")
    lib = _lib()
    _check(
        lib.ks_cuda_gather_clips(
            src,
            dst,
            shape[0],
            row_bytes,
            first,
            _index(count, fn, "count"),
            start,
            ends.ctypes.data_as(ctypes.POINTER(ctypes.c_int64)),
            len(ends),
            n,
            stride,
            _stream(stream),
        ),
        fn,
    )
    return out


def _warp_args(shape: tuple, dtype: np.dtype, M: object, out_size: Sequence[int], border: str, fn: str):
    if dtype != np.uint8:
        raise TypeError(f"{fn}: frame must be uint8, got {dtype}")
    if len(shape) not in (3, 4) or shape[-1] != 3:
        raise ValueError(f"{fn}: frame must be [H, W, 3] (or frames [B, H, W, 3]), got shape {shape}")
    batch = shape[0] if len(shape) == 4 else 1
    m = np.asarray(M)
    if m.dtype.kind not in "fiu":
        raise TypeError(f"{fn}: M must be a float matrix, got {m.dtype}")
    want_m = (batch, 2, 3) if len(shape) == 4 else (2, 3)
    if m.shape != want_m:
        raise ValueError(f"{fn}: M must be {list(want_m)}, got shape {m.shape}")
    if border not in BORDERS:
        raise ValueError(f"{fn}: border must be one of {sorted(BORDERS)}, got {border!r}")
    try:
        w, h = (_index(v, fn, "out_size") for v in out_size)
    except (TypeError, ValueError):
        raise ValueError(f"{fn}: out_size must be two integers (w, h), got {out_size!r}") from None
    want = (h, w, 3) if len(shape) == 3 else (batch, h, w, 3)
    return batch, np.ascontiguousarray(m, dtype=np.float64), w, h, want, BORDERS[border]


def warp_crop(
    frame: object,
    M: object,
    out_size: tuple[int, int],
    border: str = "constant",
    out: object = None,
    stream: object = None,
) -> object:
    """Device uint8 [H, W, 3] (or [B, H, W, 3]) -> crop [h, w, 3], as cpp_ext.warp_crop; M is a host array."""
    fn = "cuda.warp_crop"
    src, shape, dtype = _buffer(frame, fn, "frame")
    batch, m, w, h, want, border_code = _warp_args(shape, dtype, M, out_size, border, fn)
    if out is None:
        out = _new_out(want, np.uint8)
    dst, out_shape, out_dt = _buffer(out, fn, "out")
    if out_dt != np.uint8:
        raise TypeError(f"{fn}: out must be uint8, got {out_dt}")
    _check_out_shape(out_shape, want, fn)
    src_h, src_w = shape[-3], shape[-2]
    lib = _lib()
    _check(
        lib.ks_cuda_warp_crop(
            src,
            batch,
            src_h,
            src_w,
            m.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
            dst,
            h,
            w,
            border_code,
            _stream(stream),
        ),
        fn,
    )
    return out


# ---------------------------------------------------------------------------------------------------
# Host emulation of the kernels (numpy in, numpy out; no GPU needed)


def _host(x: object, fn: str, name: str) -> np.ndarray:
    if not isinstance(x, np.ndarray) or not x.flags.c_contiguous:
        raise ValueError(f"{fn}: {name} must be a C-contiguous numpy array")
    return x


def emulate_pack_frames(
    frames: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    swap_rb: bool = False,
    out_dtype: object = np.float32,
) -> np.ndarray:
    """pack_frames through the CUDA kernel's per-thread code, run on the host."""
    fn = "cuda.emulate_pack_frames"
    frames = _host(frames, fn, "frames")
    m, s = _pack_args(frames.shape, frames.dtype, mean, std, fn)
    dtype = _out_dtype(out_dtype, None, fn)
    b, h, w, _ = frames.shape
    out = np.empty((b, 3, h, w), dtype)
    _check(
        _lib(False).ks_cuda_emulate_pack_frames(
            frames.ctypes.data,
            out.ctypes.data,
            b,
            h,
            w,
            _f32p(m),
            _f32p(s),
            int(bool(swap_rb)),
            int(dtype == np.float16),
        ),
        fn,
    )
    return out


def emulate_gather_clips(
    ring: np.ndarray,
    first: int,
    count: int,
    clip_ends: Sequence[int] | np.ndarray,
    n: int,
    stream_start: int | None = None,
    stride: int = 1,
) -> np.ndarray:
    """gather_clips through the CUDA kernel's per-thread code, run on the host."""
    fn = "cuda.emulate_gather_clips"
    ring = _host(ring, fn, "ring")
    ends = _ends(clip_ends, fn)
    out = np.empty((len(ends), max(n, 0), *ring.shape[1:]), ring.dtype)
    row_bytes = int(np.prod(ring.shape[1:], dtype=np.int64)) * ring.itemsize
    start = first if stream_start is None else stream_start
    _check(
        _lib(False).ks_cuda_emulate_gather_clips(
            ring.ctypes.data,
            out.ctypes.data,
            ring.shape[0],
            row_bytes,
            first,
            count,
            start,
            ends.ctypes.data_as(ctypes.POINTER(ctypes.c_int64)),
            len(ends),
            n,
            stride,
        ),
        fn,
    )
    return out


def emulate_warp_crop(frame: np.ndarray, M: object, out_size: tuple[int, int], border: str = "constant") -> np.ndarray:
    """warp_crop through the CUDA kernel's per-thread code, run on the host."""
    fn = "cuda.emulate_warp_crop"
    frame = _host(frame, fn, "frame")
    batch, m, w, h, want, border_code = _warp_args(frame.shape, frame.dtype, M, out_size, border, fn)
    out = np.empty(want, np.uint8)
    src_h, src_w = frame.shape[-3], frame.shape[-2]
    _check(
        _lib(False).ks_cuda_emulate_warp_crop(
            frame.ctypes.data,
            batch,
            src_h,
            src_w,
            m.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
            out.ctypes.data,
            h,
            w,
            border_code,
        ),
        fn,
    )
    return out
