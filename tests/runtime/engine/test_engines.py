"""ks_runtime/engine/ (ort.py, the registry) on GPUs: providers from device strings, IOBinding, engine names, and what
each says when onnxruntime-gpu, TensorRT or a GPU is missing. GPU runs are marked and skip with gpu_probe's reason."""

from __future__ import annotations

import numpy as np
import pytest

from ks_runtime.core.bundle import FRAMES, read_manifest
from ks_runtime.core.errors import ConfigError
from ks_runtime.engine import ENGINES, EngineError, create_engine, gpu_probe, ort, parse_device
from ks_runtime.engine.ort_graphs import BundleGraphs
from tests.gpu_skip import needs
from tests.runtime.conftest import synth_frames


@pytest.fixture
def ort_gpu(monkeypatch):
    """onnxruntime as onnxruntime-gpu with TensorRT reports itself (no session is opened with it)."""
    import onnxruntime

    monkeypatch.setattr(
        onnxruntime,
        "get_available_providers",
        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
    )


@pytest.mark.parametrize(
    "device, want", [("cpu", ("cpu", 0)), ("cuda", ("cuda", 0)), ("CUDA:3", ("cuda", 3)), (" gpu:1 ", ("cuda", 1))]
)
def test_device_strings(device, want):
    assert parse_device(device) == want


@pytest.mark.parametrize("device", ["cuda:x", "cuda:-1", "cpu:0", "tpu", "cuda:1:2"])
def test_bad_device_strings(device):
    with pytest.raises(ConfigError, match="cpu, cuda or cuda:N"):
        parse_device(device)


def test_providers_from_device_strings(ort_gpu, tmp_path):
    assert ort.ort_providers("cpu") == ["CPUExecutionProvider"]
    assert ort.ort_providers("cuda:1") == [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    trt, cuda, cpu = ort.ort_providers("cuda:2", tensorrt=True, cache_dir=tmp_path, fp16=False)
    cache = str(tmp_path)
    assert trt == (
        "TensorrtExecutionProvider",
        {
            "device_id": 2,
            "trt_fp16_enable": False,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": cache,
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": cache,
        },
    )
    assert cuda == ("CUDAExecutionProvider", {"device_id": 2}) and cpu == "CPUExecutionProvider"
    with pytest.raises(EngineError, match="'ort-trt'.*runs on a GPU"):
        ort.ort_providers("cpu", tensorrt=True)
    assert ort.ort_providers("cuda", tensorrt=True)[0] == (
        "TensorrtExecutionProvider",
        {"device_id": 0, "trt_fp16_enable": True},
    )


def test_ort_trt_on_the_cpu_is_refused_before_touching_the_bundle(bundle, tmp_path):
    import shutil

    copy = shutil.copytree(bundle, tmp_path / "bundle")
    with pytest.raises(EngineError, match="runs on a GPU"):
        create_engine(copy, "ort-trt", "cpu")
    assert not (copy / "trt" / "ort-cache").exists()


def test_cuda_without_onnxruntime_gpu_names_the_package(bundle):
    reason = gpu_probe.ort_gpu_reason()
    if reason is None:
        pytest.skip("onnxruntime-gpu is installed here")
    for engine in ("ort", "ort-trt"):
        with pytest.raises(EngineError) as error:
            create_engine(bundle, engine, "cuda:0")
        assert "onnxruntime-gpu not installed" in str(error.value) and "pip install .[gpu]" in str(error.value)


def test_engine_registry_and_options(bundle):
    assert set(ENGINES) == {"ort", "ort-trt", "trt", "openvino", "triton"}
    with pytest.raises(ConfigError, match="known engines are ort, ort-trt, trt, openvino"):
        create_engine(bundle, "tensorflow")
    with pytest.raises(ConfigError, match="ort precision 'int4'"):
        ort.OrtEngine(bundle, precision="int4")


def test_the_tensorrt_provider_caches_in_the_bundle_or_a_temp_folder(bundle, tmp_path, monkeypatch):
    import shutil
    from pathlib import Path

    manifest = read_manifest(shutil.copytree(bundle, tmp_path / "bundle"))
    assert ort.ort_cache_dir(manifest) == manifest.root / "trt" / "ort-cache"
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if self.name == "ort-cache":
            raise PermissionError(13, "read-only", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    fallback = ort.ort_cache_dir(manifest)
    assert fallback.is_dir() and manifest.root not in fallback.parents


class CudaArray:
    """An object that speaks __cuda_array_interface__ (never dereferenced here)."""

    def __init__(self, shape, typestr="<f4", strides=None, ptr=0x7000):
        self.__cuda_array_interface__ = {
            "shape": shape,
            "typestr": typestr,
            "data": (ptr, False),
            "version": 3,
            "strides": strides,
        }


def test_device_arrays_are_recognised_and_bound_in_place():
    assert ort.cuda_array_info(np.zeros(3)) is None
    assert ort.cuda_array_info(CudaArray((2, 3, 4, 4))) == (0x7000, (2, 3, 4, 4), np.dtype(np.float32))
    assert ort.cuda_array_info(CudaArray((2, 3), "<f2", strides=(6, 2)))[2] == np.float16
    with pytest.raises(ValueError, match="not C-contiguous"):
        ort.cuda_array_info(CudaArray((2, 3), strides=(4, 8)))
    device = CudaArray((1, 3, 8, 8))
    assert ort._feed(device, np.float32) is device  # no host copy of a device array
    host = ort._feed([[1, 2]], np.int64)
    assert host.dtype == np.int64 and host.flags.c_contiguous


def test_iobinding_path_equals_plain_run_on_the_cpu(bundle):
    """run_bound is the cuda path's call; on a CPU session it binds numpy inputs and outputs on the host."""
    engine = ort.OrtEngine(bundle, "cpu")
    frames = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    bound = engine.run_bound("encoder", {FRAMES: frames})
    for got, want in zip(bound, engine.encode(frames), strict=True):
        np.testing.assert_array_equal(got, want)
    assert engine.variant is None and engine.describe() == "ort (CPUExecutionProvider) on cpu"


@needs("onnxruntime-gpu", "cuda-device")
def test_ort_cuda_equals_cpu_with_inputs_on_the_device(bundle):
    """Written, not yet run: CUDA provider through IOBinding, numpy and device-resident inputs."""
    import onnxruntime as ort

    frames, _ = synth_frames(20)
    want = BundleGraphs(bundle, roles=("encoder", "head")).dense_probabilities(frames)
    engine = ort.OrtEngine(bundle, "cuda:0")
    assert "CUDAExecutionProvider" in engine.providers
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    on_device = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
    for a, b in zip(engine.encode(on_device), engine.encode(x), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    cpu = ort.OrtEngine(bundle, "cpu")
    for a, b in zip(engine.encode(x), cpu.encode(x), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-3)
    assert want.shape == (20, read_manifest(bundle).n_aus)


@needs("onnxruntime-trt", "tensorrt", "cuda-device")
def test_ort_tensorrt_provider_equals_cpu(bundle, tmp_path):
    """Written, not yet run: onnxruntime's TensorRT provider, its engine cache in the bundle's trt/ folder."""
    import shutil

    copy = shutil.copytree(bundle, tmp_path / "bundle")
    x = np.random.default_rng(1).standard_normal((8, 3, 32, 32)).astype(np.float32)
    engine = create_engine(copy, "ort-trt", "cuda:0")
    assert engine.providers[0] == "TensorrtExecutionProvider"
    for a, b in zip(engine.encode(x), ort.OrtEngine(copy, "cpu").encode(x), strict=True):
        np.testing.assert_allclose(a, b, atol=2e-2)
    assert any((copy / "trt" / "ort-cache").iterdir())
