"""SynthAU as a dataset: read from disk (the generic layout plus synthau.json) or generated in memory.

Both return a SynthAUDataset, an AUDataset that also records the generator version and config, since
results must name the version they were measured on (docs/synthau.md).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ks_runtime.core.au import get_au_set
from ks_runtime.core.errors import ConfigError, DataError
from ks_runtime.synth.generate import GENERATOR_VERSION, SynthConfig, generate_sequence, subject_id, synth_parts
from ks_train.data.base import AUDataset, VideoSequence
from ks_train.data.generic import read_generic

if TYPE_CHECKING:
    from ks_runtime.synth.generate import SynthConfig

log = logging.getLogger(__name__)

META_FILE = "synthau.json"
NAME = "synthau"


@dataclass
class SynthAUDataset(AUDataset):
    """An AUDataset made by SynthAU: `version` is the generator version, `config` its SynthConfig dict."""

    version: str = ""
    config: dict = field(default_factory=dict)


def read_synth(root: Path | str, missing_frames: str = "error") -> SynthAUDataset:
    """Open a SynthAU set that write_dataset wrote: the generic reader plus a check of synthau.json."""
    root = Path(root)
    meta_path = root / META_FILE
    if not meta_path.is_file():
        raise DataError(
            f"no {META_FILE} under {root}: not a SynthAU set (write one with write_dataset, or "
            f"open other data in the generic layout as kind 'generic')"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{meta_path}: line {exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("version"), str):
        raise DataError(f"{meta_path}: expected an object with a string field 'version'")
    try:
        cfg = SynthConfig.from_dict(meta)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{meta_path}: not a SynthAU config ({exc})") from None
    version = meta["version"]
    if version != GENERATOR_VERSION:
        log.warning(
            "%s: written by SynthAU generator %s, this code generates %s; results on it name %s",
            meta_path,
            version,
            GENERATOR_VERSION,
            version,
        )
    data = read_generic(root, name=NAME, missing_frames=missing_frames)
    expected = get_au_set(cfg.au_set)
    if data.au_set.numbers != expected.numbers:
        raise DataError(
            f"{meta_path}: field au_set is {cfg.au_set!r} ({', '.join(expected.columns)}), "
            f"but the label files have {', '.join(data.au_set.columns)}"
        )
    return SynthAUDataset(NAME, expected, data.sequences, data.parts, version=version, config=meta)


def synth_dataset(cfg: SynthConfig, progress: bool = False, subjects: Iterable[str] | None = None) -> SynthAUDataset:
    """Generate a SynthAU set in memory (no disk). `subjects` (ids such as "S01") renders only those, e.g.
    one test part; `parts` stays the set's full synth_parts either way."""
    from tqdm import tqdm

    shape = cfg.shape
    known = [subject_id(i) for i in range(shape.subjects)]
    wanted = known if subjects is None else list(dict.fromkeys(subjects))
    unknown = [s for s in wanted if s not in known]
    if unknown:
        raise ConfigError(f"subjects: {', '.join(unknown)} not in this SynthAU set ({known[0]}..{known[-1]})")
    jobs = [(known.index(s), k) for s in wanted for k in range(shape.tasks)]
    jobs.sort()
    sequences = [synth_sequence(cfg, s, k) for s, k in tqdm(jobs, disable=not progress, desc="SynthAU", unit="seq")]
    return SynthAUDataset(NAME, cfg.aus, sequences, synth_parts(cfg), version=GENERATOR_VERSION, config=cfg.to_dict())


def synth_sequence(cfg: SynthConfig, subject_index: int, task_index: int) -> VideoSequence:
    """One generated SynthAU video as an in-memory VideoSequence (frames [T, S, S, 3] RGB uint8)."""
    generated = generate_sequence(cfg, subject_index, task_index, render=True)
    n = len(generated.labels)
    return VideoSequence(
        generated.subject,
        generated.task,
        np.asarray(generated.labels, dtype=np.int8),
        np.arange(n, dtype=np.int64),
        frames=generated.frames,
    )
