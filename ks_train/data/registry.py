"""open_dataset: the one call site that turns a dataset kind and a root into an AUDataset."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

from ks_runtime.core.errors import ConfigError
from ks_runtime.synth.generate import SynthConfig
from ks_train.data.base import AUDataset
from ks_train.data.bp4d import read_bp4d, read_bp4dplus
from ks_train.data.disfa import read_disfa
from ks_train.data.generic import read_generic
from ks_train.data.synth import read_synth, synth_dataset

READERS: dict[str, Callable[..., AUDataset]] = {
    "synth": read_synth,
    "bp4d": read_bp4d,
    "bp4dplus": read_bp4dplus,
    "disfa": read_disfa,
    "generic": read_generic,
}
KINDS = tuple(READERS)


def open_dataset(kind: str, root: str | Path | None, **options) -> AUDataset:
    """Open a dataset of `kind` at `root`. kind "synth" with root None generates in memory and needs
    config=SynthConfig(...) (options: progress, subjects); with a root it reads a written SynthAU set."""
    if kind not in READERS:
        raise ValueError(f"unknown dataset kind {kind!r}; known: {', '.join(KINDS)}")
    if root is None:
        if kind != "synth":
            raise ValueError(f"dataset kind {kind!r} needs a root folder")
        config = options.pop("config", None)
        if config is None:
            raise ConfigError("dataset kind 'synth' without a root needs config=SynthConfig(...)")
        if isinstance(config, dict):
            config = SynthConfig.from_dict(config)
        reader: Callable[..., AUDataset] = synth_dataset
        _check_options(kind, reader, options, skip=1)
        return synth_dataset(config, **options)
    reader = READERS[kind]
    _check_options(kind, reader, options, skip=1)
    return reader(Path(root), **options)


def _check_options(kind: str, reader: Callable, options: dict, skip: int) -> None:
    """Unknown options name themselves and the ones the reader takes, instead of a bare TypeError."""
    accepted = list(inspect.signature(reader).parameters)[skip:]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"dataset kind {kind!r}: unknown option(s) {', '.join(unknown)}; it takes {', '.join(accepted) or 'none'}"
        )
