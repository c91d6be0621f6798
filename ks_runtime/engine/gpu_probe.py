"""What GPU software and hardware this machine has, and why a GPU feature cannot run (torch-free).

One place computes the reasons, so tests skip and engines refuse with the same words: "tensorrt not
installed", "onnxruntime-gpu not installed", "cuda-python not installed", "no CUDA device". CUDA devices
are read straight from the driver (libcuda.so.1 through ctypes: cuInit, cuDeviceGetName, compute
capability), so naming the GPU needs no CUDA toolkit, cuda-python or TensorRT.
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import importlib.util
from dataclasses import dataclass

LIBCUDA = "libcuda.so.1"
_ATTR_CC_MAJOR, _ATTR_CC_MINOR = 75, 76  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR / _MINOR

TENSORRT_MISSING = "tensorrt not installed"
ORT_GPU_MISSING = "onnxruntime-gpu not installed"
CUDA_PYTHON_MISSING = "cuda-python not installed"
NO_CUDA_DEVICE = "no CUDA device"


@dataclass(frozen=True)
class GpuInfo:
    """One CUDA device as the driver names it, e.g. ("NVIDIA H100 80GB HBM3", (9, 0))."""

    index: int
    name: str
    compute_capability: tuple[int, int]

    @property
    def sm(self) -> str:
        return f"sm{self.compute_capability[0]}{self.compute_capability[1]}"


@functools.lru_cache(maxsize=1)
def _driver_devices() -> tuple[tuple[GpuInfo, ...], str | None]:
    """Every CUDA device the driver reports, or () and why none could be listed."""
    try:
        cuda = ctypes.CDLL(LIBCUDA)
    except OSError:
        return (), f"{NO_CUDA_DEVICE} (no NVIDIA driver: {LIBCUDA} not found)"
    rc = cuda.cuInit(0)
    if rc != 0:
        return (), f"{NO_CUDA_DEVICE} (cuInit failed with CUDA driver error {rc})"
    count = ctypes.c_int(0)
    rc = cuda.cuDeviceGetCount(ctypes.byref(count))
    if rc != 0 or count.value == 0:
        return (), f"{NO_CUDA_DEVICE} (the driver sees none)"
    devices = []
    for index in range(count.value):
        device, major, minor = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
        name = ctypes.create_string_buffer(256)
        if (
            cuda.cuDeviceGet(ctypes.byref(device), index)
            or cuda.cuDeviceGetName(name, 256, device)
            or cuda.cuDeviceGetAttribute(ctypes.byref(major), _ATTR_CC_MAJOR, device)
            or cuda.cuDeviceGetAttribute(ctypes.byref(minor), _ATTR_CC_MINOR, device)
        ):
            return (), f"{NO_CUDA_DEVICE} (the driver could not describe device {index})"
        devices.append(GpuInfo(index, name.value.decode(errors="replace"), (major.value, minor.value)))
    return tuple(devices), None


def cuda_devices() -> list[GpuInfo]:
    """The CUDA devices of this machine (empty without a driver or GPU)."""
    return list(_driver_devices()[0])


def cuda_device_reason(index: int = 0) -> str | None:
    """Why CUDA device `index` cannot be used (None when it can)."""
    devices, reason = _driver_devices()
    if reason is not None:
        return reason
    if index >= len(devices):
        return f"{NO_CUDA_DEVICE} cuda:{index} (this machine has {len(devices)}: cuda:0..cuda:{len(devices) - 1})"
    return None


def device_info(index: int = 0) -> GpuInfo:
    """The GpuInfo of cuda:`index`; RuntimeError with the reason when there is none."""
    reason = cuda_device_reason(index)
    if reason is not None:
        raise RuntimeError(reason)
    return _driver_devices()[0][index]


def tensorrt_reason() -> str | None:
    """Why `import tensorrt` fails (None when it works)."""
    if importlib.util.find_spec("tensorrt") is None:
        return f"{TENSORRT_MISSING} (NVIDIA's wheel: pip install tensorrt; on a Jetson it comes with JetPack)"
    try:
        importlib.import_module("tensorrt")
    except Exception as error:  # an installed but broken TensorRT raises ImportError, OSError...
        return f"{TENSORRT_MISSING} properly (import tensorrt failed: {type(error).__name__}: {error})"
    return None


def cuda_python_reason() -> str | None:
    """Why cuda-python's runtime bindings (cuda.bindings.runtime, or cuda.cudart before 12.6) are missing."""
    for module in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            importlib.import_module(module)
            return None
        except ImportError:
            continue
    return f"{CUDA_PYTHON_MISSING} (pip install .[gpu])"


def ort_gpu_reason(provider: str = "CUDAExecutionProvider") -> str | None:
    """Why onnxruntime has no `provider` here (None when it has)."""
    try:
        import onnxruntime
    except ImportError:
        return f"{ORT_GPU_MISSING} (no onnxruntime at all; pip install .[gpu])"
    available = onnxruntime.get_available_providers()
    if provider in available:
        return None
    return (
        f"{ORT_GPU_MISSING} (onnxruntime {onnxruntime.__version__} has {', '.join(available)}, no {provider}; "
        f"pip install .[gpu])"
    )


def cuda_kernels_reason() -> str | None:
    """Why cpp_ext's CUDA kernels (libks_cuda.so) cannot run here."""
    from cpp_ext import cuda as kcuda  # deferred: cpp_ext's CUDA library (built only where nvcc was found)

    return kcuda.unavailable_reason()


REASONS = {
    "tensorrt": tensorrt_reason,
    "onnxruntime-gpu": ort_gpu_reason,
    "onnxruntime-trt": lambda: ort_gpu_reason("TensorrtExecutionProvider"),
    "cuda-python": cuda_python_reason,
    "cuda-device": cuda_device_reason,
    "cuda-kernels": cuda_kernels_reason,
}


def missing(*needs: str) -> str | None:
    """The first reason among `needs` (keys of REASONS) why a GPU feature cannot run here, else None."""
    for need in needs:
        if need not in REASONS:
            raise ValueError(f"unknown need {need!r}; known: {', '.join(REASONS)}")
        reason = REASONS[need]()
        if reason is not None:
            return reason
    return None


def report() -> str:
    """One line per GPU feature: available, or why not (`python -m ks_runtime.engine.gpu_probe`)."""
    lines = [f"{need:<16}{REASONS[need]() or 'available'}" for need in REASONS]
    lines += [f"cuda:{d.index:<11}{d.name} ({d.sm})" for d in cuda_devices()]
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
