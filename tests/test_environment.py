"""Every package the suite needs imports, so no test can pass by skipping on a missing package."""

import importlib

import pytest

REQUIRED = [
    "numpy",
    "pandas",
    "cv2",
    "tqdm",
    "onnxruntime",
    "torch",
    "onnx",
    "onnxscript",
    "onnxslim",
    "tritonclient.grpc.model_config_pb2",
    "pytest_benchmark",
    "threadpoolctl",
    "ks_runtime",
    "ks_train",
    "ks_export",
    "cpp_ext",
    "cpp_ext.cuda",
]


@pytest.mark.parametrize("module", REQUIRED)
def test_required_module_imports(module):
    importlib.import_module(module)


def test_onnxruntime_is_the_cpu_build_alone():
    """onnxruntime and onnxruntime-gpu share a folder; both installed breaks it."""
    from importlib.metadata import PackageNotFoundError, version

    import onnxruntime

    assert "CPUExecutionProvider" in onnxruntime.get_available_providers()
    try:
        version("onnxruntime-gpu")
    except PackageNotFoundError:
        return
    pytest.fail("onnxruntime-gpu is installed beside onnxruntime; install one of the cpu/gpu extras only")
