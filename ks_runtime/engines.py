"""Inference engines by name: what runs a bundle's encoder (once per frame) and head (once per clip).

`ort` is onnxruntime through ks_runtime.ort_graphs (CPU provider, or CUDA with onnxruntime-gpu); `trt`
(native TensorRT) is a later issue and says so. Every engine has the two calls of `Engine`; the streaming
runtime (stream.py) needs nothing else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ks_runtime.bundle import Manifest, read_manifest
from ks_runtime.errors import ConfigError

log = logging.getLogger(__name__)


class EngineError(ConfigError):
    """An engine or device that this build or machine cannot provide; the message says what to install."""


class Engine:
    """A bundle's encoder and head. Shapes: frames [B, 3, S, S] -> sa [B, U], students [B, n, U];
    head(sa [B, n, U], students [B, n, n, U], key_slot [B]) -> probs [B, U]."""

    name = ""
    manifest: Manifest
    device = "cpu"

    def encode(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def head(self, sa_logits: np.ndarray, student_logits: np.ndarray, key_slot: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @property
    def clip_len(self) -> int:
        return self.manifest.clip_len

    @property
    def n_aus(self) -> int:
        return self.manifest.n_aus

    def describe(self) -> str:
        return f"{self.name} on {self.device}"


def parse_device(device: str) -> tuple[str, int]:
    """'cpu' -> ('cpu', 0); 'cuda' -> ('cuda', 0); 'cuda:1' -> ('cuda', 1)."""
    kind, _, index = device.strip().lower().partition(":")
    if kind == "cpu" and not index:
        return "cpu", 0
    if kind in ("cuda", "gpu") and (not index or index.isdigit()):
        return "cuda", int(index or 0)
    raise ConfigError(f"device {device!r}: use cpu, cuda or cuda:N")


def ort_providers(device: str) -> list:
    """onnxruntime execution providers for a device string; cuda needs onnxruntime-gpu."""
    import onnxruntime as ort

    kind, index = parse_device(device)
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        raise EngineError(f"device {device!r}: onnxruntime {ort.__version__} here has no CUDAExecutionProvider "
                          f"(providers: {', '.join(available)}); install the GPU build: pip install .[gpu]")
    return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]


class OrtEngine(Engine):
    """onnxruntime sessions for the bundle's encoder and head, checked against the manifest when opened."""

    name = "ort"

    def __init__(self, bundle: Manifest | Path | str, device: str = "cpu", threads: int = 0) -> None:
        from ks_runtime.ort_graphs import BundleGraphs

        self.manifest = bundle if isinstance(bundle, Manifest) else read_manifest(bundle)
        self.device = device
        providers = ort_providers(device)
        self.graphs = BundleGraphs(self.manifest, roles=("encoder", "head"), providers=providers, threads=threads)
        used = self.graphs.sessions["encoder"].get_providers()
        if parse_device(device)[0] == "cuda" and "CUDAExecutionProvider" not in used:
            raise EngineError(f"device {device!r}: onnxruntime could not start the CUDA provider (it runs {used}); "
                              f"check the CUDA and cuDNN libraries onnxruntime-gpu needs")
        self.providers = used

    def encode(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.graphs.encode(frames)

    def head(self, sa_logits: np.ndarray, student_logits: np.ndarray, key_slot: np.ndarray) -> np.ndarray:
        return self.graphs.head(sa_logits, student_logits, key_slot)

    def describe(self) -> str:
        return f"ort ({', '.join(self.providers)}) on {self.device}"


def _trt_unavailable(bundle: Manifest | Path | str, device: str = "cpu", threads: int = 0) -> Engine:
    raise EngineError("engine 'trt' (native TensorRT) is not available in this build; use --engine ort")


ENGINES: dict[str, Callable[..., Engine]] = {"ort": OrtEngine, "trt": _trt_unavailable}


def create_engine(bundle: Manifest | Path | str, engine: str = "ort", device: str = "cpu", threads: int = 0) -> Engine:
    """The engine registered as `engine`, on `device` ('cpu', 'cuda', 'cuda:N'), with `threads` intra-op
    threads (0: the engine's default)."""
    if engine not in ENGINES:
        raise ConfigError(f"engine {engine!r}: known engines are {', '.join(ENGINES)}")
    parse_device(device)
    if threads < 0:
        raise ConfigError(f"threads must be >= 0, got {threads}")
    return ENGINES[engine](bundle, device=device, threads=threads)
