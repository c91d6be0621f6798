"""Checkpoints: written atomically, loaded with weights_only=True, checked against the config and AU list.

A checkpoint holds only tensors and plain Python values (configs as dicts, RNG states as tensors), so
`torch.load(..., weights_only=True)` reads it and no pickle runs.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import torch

from ks_runtime.core.errors import CheckpointError

FORMAT_VERSION = 1


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write to a temporary file in the same folder, then rename: a crash never leaves half a checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save({"format_version": FORMAT_VERSION, **state}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path | str) -> dict[str, Any]:
    """Load and sanity-check a checkpoint; truncated, foreign or old files raise CheckpointError."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt" if (path / "best.pt").exists() else path / "last.pt"
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as error:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): {error}") from None
    except Exception as error:  # unpickling refused by weights_only: not one of ours
        raise CheckpointError(f"{path}: refused to load ({type(error).__name__}: {error})") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"{path}: not a Knowledge-Spreader checkpoint (no model or config entry)")
    version = state.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {version}, this version reads {FORMAT_VERSION}")
    state["path"] = str(path)
    return state


def load_model_state(model: torch.nn.Module, state: dict[str, Any]) -> None:
    """Load weights strictly; a mismatch names the keys and shapes that differ."""
    expected = model.state_dict()
    weights = state["model"]
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong_shape = [k for k in expected if k in weights and tuple(expected[k].shape) != tuple(weights[k].shape)]
    if missing or unexpected or wrong_shape:
        details = []
        if missing:
            details.append(f"missing {missing[:3]}{' ...' if len(missing) > 3 else ''}")
        if unexpected:
            details.append(f"unexpected {unexpected[:3]}{' ...' if len(unexpected) > 3 else ''}")
        if wrong_shape:
            k = wrong_shape[0]
            details.append(f"shape of {k}: checkpoint {tuple(weights[k].shape)}, model {tuple(expected[k].shape)}")
        raise CheckpointError(
            f"{state.get('path', 'checkpoint')}: weights do not fit this model config ({'; '.join(details)})"
        )
    model.load_state_dict(weights)


def check_au_columns(state: dict[str, Any], columns: list[str]) -> None:
    saved = list(state.get("au_columns", []))
    if saved != list(columns):
        raise CheckpointError(
            f"{state.get('path', 'checkpoint')}: trained on AUs {saved}, but the data has {list(columns)}"
        )
