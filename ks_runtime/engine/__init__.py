"""Inference engines by name: what runs a bundle's encoder (once per frame) and head (once per clip).

`ort` is onnxruntime (`ort.py`, `ort_graphs.py`): the CPU provider, or on `cuda`/`cuda:N` the CUDA provider
(onnxruntime-gpu) with IOBinding, so inputs already on the device are bound in place; `ort-trt` is the same with
onnxruntime's TensorRT provider first; `trt` is native TensorRT with our CUDA batching kernels (`trt.py`). Every
engine has the two calls of `Engine` (`base.py`); the stream scheduler needs nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ks_runtime.core.bundle import Manifest
from ks_runtime.core.errors import ConfigError
from ks_runtime.engine.base import Engine, EngineError, parse_device
from ks_runtime.engine.ort import OrtEngine
from ks_runtime.engine.trt import TrtEngine

__all__ = ["ENGINES", "Engine", "EngineError", "OrtEngine", "TrtEngine", "create_engine", "parse_device"]


def _ort_trt(bundle: Manifest | Path | str, device: str = "cuda", threads: int = 0) -> Engine:
    return OrtEngine(bundle, device=device, threads=threads, tensorrt=True)


def _trt(bundle: Manifest | Path | str, device: str = "cuda", threads: int = 0) -> Engine:
    return TrtEngine(bundle, device=device, threads=threads)


ENGINES: dict[str, Callable[..., Engine]] = {"ort": OrtEngine, "ort-trt": _ort_trt, "trt": _trt}


def create_engine(bundle: Manifest | Path | str, engine: str = "ort", device: str = "cpu", threads: int = 0) -> Engine:
    """The engine registered as `engine`, on `device` ('cpu', 'cuda', 'cuda:N'), with `threads` intra-op
    threads (0: the engine's default)."""
    if engine not in ENGINES:
        raise ConfigError(f"engine {engine!r}: known engines are {', '.join(ENGINES)}")
    parse_device(device)
    if threads < 0:
        raise ConfigError(f"threads must be >= 0, got {threads}")
    return ENGINES[engine](bundle, device=device, threads=threads)
