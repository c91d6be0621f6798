"""The inference-engine interface: what the stream scheduler calls, and the device strings it accepts."""

from __future__ import annotations

import numpy as np

from ks_runtime.core.bundle import Manifest
from ks_runtime.core.errors import ConfigError


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
    def clip_stride(self) -> int:
        return self.manifest.clip_stride

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
