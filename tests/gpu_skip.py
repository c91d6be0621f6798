"""One way for GPU tests to skip: the `gpu` mark plus a skip whose reason is ks_runtime.engine.gpu_probe's exact words
("tensorrt not installed", "onnxruntime-gpu not installed", "cuda-python not installed", "no CUDA device")."""

from __future__ import annotations

import pytest

from ks_runtime.engine import gpu_probe


def needs(*what: str):
    """Decorator: mark a test `gpu` and skip it, naming why, unless every need (keys of gpu_probe.REASONS) is met."""
    reason = gpu_probe.missing(*what)

    def mark(test):
        return pytest.mark.gpu(pytest.mark.skipif(reason is not None, reason=str(reason))(test))

    return mark
