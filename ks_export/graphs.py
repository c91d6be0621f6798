"""The three inference graphs as torch modules with plain tensor signatures, and the checkpoint they come from.

Each module's forward arguments carry the bundle's tensor names, so the exporter's dynamic shapes and input
names line up with ks_runtime.core.bundle's constants. Everything runs in eval mode: dropout off, BatchNorm frozen.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ks_export import ExportError
from ks_runtime.core.bundle import CLIPS, FRAMES, KEY_SLOT, PROBS, SA_LOGITS, STUDENT_LOGITS
from ks_train.checkpoint import load_checkpoint, load_model_state
from ks_train.config import ExperimentConfig
from ks_train.methods import create_method
from ks_train.model.ks import KSModel


class EncoderGraph(nn.Module):
    """encoder.onnx: frames (B, 3, S, S) -> sa_logits (B, U), student_logits (B, n, U). Once per frame."""

    input_names = (FRAMES,)
    output_names = (SA_LOGITS, STUDENT_LOGITS)

    def __init__(self, model: KSModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.encode_frames(frames)


class HeadGraph(nn.Module):
    """head.onnx: sa_logits (B, n, U), student_logits (B, n, n, U), key_slot (B,) -> probs (B, U). Once per clip."""

    input_names = (SA_LOGITS, STUDENT_LOGITS, KEY_SLOT)
    output_names = (PROBS,)

    def __init__(self, model: KSModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, sa_logits: torch.Tensor, student_logits: torch.Tensor, key_slot: torch.Tensor) -> torch.Tensor:
        return self.model.head(sa_logits, student_logits, key_slot)


class ClipGraph(nn.Module):
    """clip.onnx: clips (B, n, 3, S, S), key_slot (B,) -> probs (B, U). The fused reference, and Triton's model."""

    input_names = (CLIPS, KEY_SLOT)
    output_names = (PROBS,)

    def __init__(self, model: KSModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, clips: torch.Tensor, key_slot: torch.Tensor) -> torch.Tensor:
        return self.model(clips, key_slot)


GRAPH_MODULES: dict[str, type[nn.Module]] = {"encoder": EncoderGraph, "head": HeadGraph, "clip": ClipGraph}


@dataclass
class LoadedCheckpoint:
    """A KS model in eval mode, its experiment config, and the checkpoint's other entries."""

    model: KSModel
    config: ExperimentConfig
    state: dict[str, Any]
    path: Path

    @property
    def clip_len(self) -> int:
        return self.config.model.clip_len

    @property
    def n_aus(self) -> int:
        return len(self.state["au_columns"])

    @property
    def size(self) -> int:
        return self.config.preprocess.size


def load_ks_checkpoint(path: Path | str) -> LoadedCheckpoint:
    """Load a checkpoint (file, or a run folder: best.pt, else last.pt) as an eval-mode KS model."""
    state = load_checkpoint(path)
    config = ExperimentConfig.from_dict(state["config"])
    if config.method != "ks":
        raise ExportError(
            f"{state['path']}: method {config.method!r}; only Knowledge-Spreader ('ks') checkpoints "
            f"export in this version"
        )
    if config.model.clip_stride == 0:  # the trainer writes the stride it resolved; 0 means it never ran
        raise ExportError(
            f"{state['path']}: model.clip_stride is 0 (the label spacing, resolved by ks-train fit); "
            f"this checkpoint was not written by the trainer: set the stride it was trained with"
        )
    model = create_method(config).build_model()
    load_model_state(model, state)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return LoadedCheckpoint(model, config, state, Path(state["path"]))


def graph_modules(model: KSModel) -> dict[str, nn.Module]:
    """The encoder, head and clip modules over one shared model, in eval mode."""
    return {role: cls(model).eval() for role, cls in GRAPH_MODULES.items()}


def random_inputs(
    role: str, batch: int, clip_len: int, n_aus: int, size: int, generator: torch.Generator, key_slot: int | None = None
) -> tuple[torch.Tensor, ...]:
    """Fresh random inputs for a graph; logits ~ N(0, 2^2) span the sigmoid's useful range.

    Key slots are `key_slot` for the whole batch, or random per item when None.
    """

    def normal(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * scale

    def slots() -> torch.Tensor:
        if key_slot is not None:
            return torch.full((batch,), key_slot, dtype=torch.int64)
        return torch.randint(0, clip_len, (batch,), generator=generator)

    if role == "encoder":
        return (normal(batch, 3, size, size),)
    if role == "head":
        return normal(batch, clip_len, n_aus, scale=2.0), normal(batch, clip_len, clip_len, n_aus, scale=2.0), slots()
    if role == "clip":
        return normal(batch, clip_len, 3, size, size), slots()
    raise ValueError(f"unknown graph role {role!r}")
