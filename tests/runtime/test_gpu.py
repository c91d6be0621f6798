"""ks_runtime/gpu.py: the one place that says why a GPU feature cannot run here, in the words tests skip with."""

from __future__ import annotations

import importlib.util

import pytest

from ks_runtime import gpu


def test_every_reason_is_none_or_starts_with_its_fixed_words():
    starts = {"tensorrt": gpu.TENSORRT_MISSING, "onnxruntime-gpu": gpu.ORT_GPU_MISSING,
              "onnxruntime-trt": gpu.ORT_GPU_MISSING,
              "cuda-python": gpu.CUDA_PYTHON_MISSING, "cuda-device": gpu.NO_CUDA_DEVICE,
              "cuda-kernels": ("no CUDA driver/GPU", "libks_cuda.so was not built")}
    for need, reason in ((need, check()) for need, check in gpu.REASONS.items()):
        assert reason is None or reason.startswith(starts[need]), (need, reason)
    assert gpu.missing() is None
    with pytest.raises(ValueError, match="unknown need 'tpu'"):
        gpu.missing("tpu")


def test_missing_returns_the_first_unmet_need(monkeypatch):
    monkeypatch.setitem(gpu.REASONS, "tensorrt", lambda: None)
    monkeypatch.setitem(gpu.REASONS, "cuda-python", lambda: "cuda-python not installed (x)")
    monkeypatch.setitem(gpu.REASONS, "cuda-device", lambda: "no CUDA device (y)")
    assert gpu.missing("tensorrt") is None
    assert gpu.missing("tensorrt", "cuda-device", "cuda-python") == "no CUDA device (y)"


def test_tensorrt_reason_follows_the_import(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorrt" else real(name, *a))
    assert gpu.tensorrt_reason().startswith("tensorrt not installed (")


def test_onnxruntime_gpu_reason_names_the_providers(monkeypatch):
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    reason = gpu.ort_gpu_reason()
    assert reason.startswith("onnxruntime-gpu not installed") and "CPUExecutionProvider" in reason
    assert "pip install .[gpu]" in reason
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    assert gpu.ort_gpu_reason() is None and gpu.ort_gpu_reason("TensorrtExecutionProvider") is None


def test_device_reasons_from_the_driver(monkeypatch):
    h100 = gpu.GpuInfo(0, "NVIDIA H100 80GB HBM3", (9, 0))
    monkeypatch.setattr(gpu, "_driver_devices", lambda: ((h100,), None))
    assert gpu.cuda_device_reason(0) is None and gpu.device_info(0).sm == "sm90"
    assert gpu.cuda_device_reason(1) == "no CUDA device cuda:1 (this machine has 1: cuda:0..cuda:0)"
    monkeypatch.setattr(gpu, "_driver_devices", lambda: ((), "no CUDA device (the driver sees none)"))
    assert gpu.cuda_devices() == []
    with pytest.raises(RuntimeError, match="no CUDA device"):
        gpu.device_info(0)


def test_this_machine_is_described():
    text = gpu.report()
    assert all(need in text for need in gpu.REASONS)
    if not gpu.cuda_devices():
        assert gpu.cuda_device_reason().startswith("no CUDA device")
