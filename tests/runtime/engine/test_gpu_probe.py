"""ks_runtime/engine/gpu_probe.py: the one place that says why a GPU feature cannot run here, in the words tests skip
with."""

from __future__ import annotations

import importlib.util

import pytest

from ks_runtime.engine import gpu_probe


def test_every_reason_is_none_or_starts_with_its_fixed_words():
    starts = {
        "tensorrt": gpu_probe.TENSORRT_MISSING,
        "onnxruntime-gpu": gpu_probe.ORT_GPU_MISSING,
        "onnxruntime-trt": gpu_probe.ORT_GPU_MISSING,
        "cuda-python": gpu_probe.CUDA_PYTHON_MISSING,
        "cuda-device": gpu_probe.NO_CUDA_DEVICE,
        "cuda-kernels": ("no CUDA driver/GPU", "libks_cuda.so was not built"),
    }
    for need, reason in ((need, check()) for need, check in gpu_probe.REASONS.items()):
        assert reason is None or reason.startswith(starts[need]), (need, reason)
    assert gpu_probe.missing() is None
    with pytest.raises(ValueError, match="unknown need 'tpu'"):
        gpu_probe.missing("tpu")


def test_missing_returns_the_first_unmet_need(monkeypatch):
    monkeypatch.setitem(gpu_probe.REASONS, "tensorrt", lambda: None)
    monkeypatch.setitem(gpu_probe.REASONS, "cuda-python", lambda: "cuda-python not installed (x)")
    monkeypatch.setitem(gpu_probe.REASONS, "cuda-device", lambda: "no CUDA device (y)")
    assert gpu_probe.missing("tensorrt") is None
    assert gpu_probe.missing("tensorrt", "cuda-device", "cuda-python") == "no CUDA device (y)"


def test_tensorrt_reason_follows_the_import(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorrt" else real(name, *a))
    assert gpu_probe.tensorrt_reason().startswith("tensorrt not installed (")


def test_onnxruntime_gpu_reason_names_the_providers(monkeypatch):
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    reason = gpu_probe.ort_gpu_reason()
    assert reason.startswith("onnxruntime-gpu not installed") and "CPUExecutionProvider" in reason
    assert "pip install .[gpu]" in reason
    monkeypatch.setattr(
        onnxruntime,
        "get_available_providers",
        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    assert gpu_probe.ort_gpu_reason() is None and gpu_probe.ort_gpu_reason("TensorrtExecutionProvider") is None


def test_device_reasons_from_the_driver(monkeypatch):
    h100 = gpu_probe.GpuInfo(0, "NVIDIA H100 80GB HBM3", (9, 0))
    monkeypatch.setattr(gpu_probe, "_driver_devices", lambda: ((h100,), None))
    assert gpu_probe.cuda_device_reason(0) is None and gpu_probe.device_info(0).sm == "sm90"
    assert gpu_probe.cuda_device_reason(1) == "no CUDA device cuda:1 (this machine has 1: cuda:0..cuda:0)"
    monkeypatch.setattr(gpu_probe, "_driver_devices", lambda: ((), "no CUDA device (the driver sees none)"))
    assert gpu_probe.cuda_devices() == []
    with pytest.raises(RuntimeError, match="no CUDA device"):
        gpu_probe.device_info(0)


def test_this_machine_is_described():
    text = gpu_probe.report()
    assert all(need in text for need in gpu_probe.REASONS)
    if not gpu_probe.cuda_devices():
        assert gpu_probe.cuda_device_reason().startswith("no CUDA device")
