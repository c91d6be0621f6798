"""Checkpoints: written atomically, loaded with weights_only=True, checked against the config and AU list.

A checkpoint holds only tensors and plain Python values (configs as dicts, RNG states as tensors), so
`torch.load(..., weights_only=True)` reads it and no pickle runs. Checkpoints (and the trainer's other whole-file
writes) go to `.NAME.tmpPID` and are renamed into place: a write that fails (a full disk) leaves the previous file
intact and names the file, and the temporaries of a killed process are removed at the next start.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import torch

from ks_runtime.core.errors import CheckpointError, OutputError

FORMAT_VERSION = 1
TEMPORARY = re.compile(r"^\..+\.tmp(?P<pid>\d+)$")  # what atomic_write names its temporary: .NAME.tmpPID

log = logging.getLogger(__name__)


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write atomically (atomic_write): a crash never leaves half a checkpoint, a full disk never the previous one
    damaged."""
    with atomic_write(Path(path)) as handle:
        torch.save({"format_version": FORMAT_VERSION, **state}, handle)


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_write(Path(path)) as handle:
        handle.write(text.encode())


@contextmanager
def atomic_write(path: Path) -> Iterator[BinaryIO]:
    """A file handle on `.NAME.tmpPID` beside `path`, flushed to disk and renamed onto `path` when the block ends.
    A failed write removes the temporary and raises OutputError naming `path` and the cause ("no space left on
    device"); `path` keeps its previous content."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as handle:  # a handle, not a path: torch then reports a full disk as OSError ENOSPC
            yield handle
            handle.flush()
            os.fsync(handle.fileno())  # the bytes are on disk before the rename makes them the file
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if not isinstance(error, (OSError, RuntimeError)):  # torch wraps some write failures in RuntimeError
            raise
        kept = f"the previous {path.name} is intact" if path.exists() else "nothing was written"
        raise OutputError(f"{path}: cannot write it ({write_failure(error, path.parent)}); {kept}") from None


def write_failure(error: BaseException, folder: Path) -> str:
    """The OS error behind a failed write (torch chains it behind its own), with the free space when it is space."""
    cause: BaseException | None = error
    while cause is not None and not (isinstance(cause, OSError) and cause.errno):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return str(error)
    reason = os.strerror(cause.errno).lower()
    if cause.errno in (errno.ENOSPC, errno.EDQUOT):
        reason += f", {shutil.disk_usage(folder).free / 2**20:.0f} MiB free on {folder}"
    return reason


def pid_alive(pid: int) -> bool:
    """Whether process `pid` is running here (another user's counts; a pid no process can have does not)."""
    if pid <= 0:  # os.kill would signal a process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True


def stale_entries(folder: Path, pattern: re.Pattern) -> list[Path]:
    """The entries of `folder` whose name `pattern` matches, with a `pid` group naming a process no longer running."""
    if not folder.is_dir():
        return []
    matches = ((path, pattern.match(path.name)) for path in folder.iterdir())
    return sorted(path for path, match in matches if match and not pid_alive(int(match["pid"])))


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporaries (.NAME.tmpPID) that killed processes left in `folder`, logging each one."""
    removed = stale_entries(Path(folder), TEMPORARY)
    for path in removed:
        path.unlink(missing_ok=True)
        pid = TEMPORARY.match(path.name)["pid"]
        log.warning(
            "%s: removed, the temporary of a save that process %s (no longer running) did not finish", path, pid
        )
    return removed


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
