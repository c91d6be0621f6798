"""Sparse label sampling and clip construction (docs/model.md, Data feeding).

Labels are kept on every k-th frame of each training sequence; a kept frame is a key frame. A clip is a key
frame with its n-1 neighbours, clamped at the sequence's edges (edge replication, as in dense testing), and
the key frame sits at slot m = batch index mod n, so that over n batches every slot is used equally.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ks_runtime.core.metrics import UNKNOWN

log = logging.getLogger(__name__)


def every_k_from_ratio(ratio: float) -> int:
    """The sampling interval k that keeps about `ratio` of the labels (ratio 0.1 -> every 10th frame)."""
    if not 0 < ratio <= 1:
        raise ValueError(f"label ratio must be in (0, 1], got {ratio}")
    return max(1, int(round(1.0 / ratio)))


def sparse_label_mask(length: int, every_k: int, offset: int = 0) -> np.ndarray:
    """bool [T]: True on the frames whose label is kept (offset, offset + k, ...)."""
    if every_k < 1:
        raise ValueError(f"every_k must be >= 1, got {every_k}")
    mask = np.zeros(length, dtype=bool)
    mask[offset % every_k :: every_k] = True
    return mask


def clip_frames(key, slot, n: int, length: int, stride: int = 1) -> np.ndarray:
    """The n frame positions, `stride` frames apart, of the clip whose slot `slot` holds frame `key`,
    clamped into the sequence: [n] for one clip, [..., n] for arrays of keys and slots."""
    key, slot = np.asarray(key), np.asarray(slot)
    if np.any((slot < 0) | (slot >= n)):
        raise ValueError(f"key slot {slot} outside a clip of {n}")
    return np.clip(key[..., None] + (np.arange(n) - slot[..., None]) * stride, 0, length - 1)


@dataclass(frozen=True)
class ClipItem:
    """One training clip: which sequence, which key frame, which slot, and whether it is labelled."""

    sequence: int
    key: int
    slot: int
    labelled: bool


@dataclass
class SparseIndex:
    """The kept-label masks of every training sequence and the frames usable as clip centres."""

    masks: list[np.ndarray]
    every_k: int

    @property
    def n_labelled(self) -> int:
        return int(sum(m.sum() for m in self.masks))

    def labelled_keys(self) -> list[tuple[int, int]]:
        return [(s, int(t)) for s, m in enumerate(self.masks) for t in np.flatnonzero(m)]

    def unlabelled_keys(self, n: int, slot: int, stride: int = 1) -> list[tuple[int, int]]:
        """(sequence, frame) of key frames whose clip at `slot` holds no kept label at all."""
        keys = []
        for s, mask in enumerate(self.masks):
            window = clip_frames(np.arange(len(mask)), slot, n, len(mask), stride)  # [T, n]
            keys.extend((s, int(i)) for i in np.flatnonzero(~mask[window].any(axis=1)))
        return keys


def build_sparse_index(lengths: list[int], every_k: int, seed: int = 0) -> SparseIndex:
    """Kept-label masks; each sequence gets its own offset so key frames do not line up with starts."""
    rng = np.random.default_rng(seed)
    offsets = rng.integers(0, every_k, size=len(lengths))
    return SparseIndex([sparse_label_mask(n, every_k, int(o)) for n, o in zip(lengths, offsets, strict=True)], every_k)


def masked_labels(labels: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """A copy of labels [T, U] with the rows sparse sampling did not keep set to unknown."""
    out = labels.copy()
    out[~kept] = UNKNOWN
    return out


class ClipBatches:
    """Batches of clips for one epoch: batch b puts the key frame at slot b mod n (the paper's rule).

    Labelled clips are shuffled and cut into batches of `batch_size`; once `with_unlabelled` is on, each
    batch also carries `unlabelled_per_batch` clips with no kept label at all (after the warm-up).
    """

    def __init__(
        self,
        index: SparseIndex,
        n: int,
        batch_size: int,
        unlabelled_per_batch: int = 0,
        drop_last: bool = True,
        stride: int = 1,
    ) -> None:
        self.index, self.n = index, n
        self.unlabelled_per_batch = unlabelled_per_batch
        self.drop_last = drop_last
        self._labelled = index.labelled_keys()
        if 0 < len(self._labelled) < batch_size:
            log.warning(
                "only %d labelled frames, fewer than a batch of %d: batches hold all of them",
                len(self._labelled),
                batch_size,
            )
        self.batch_size = min(batch_size, max(len(self._labelled), 1))
        self._unlabelled = [index.unlabelled_keys(n, m, stride) if unlabelled_per_batch else [] for m in range(n)]
        if not self._labelled:
            raise ValueError("no labelled frames to train on: check the label ratio and the data")

    def __len__(self) -> int:
        full, rest = divmod(len(self._labelled), self.batch_size)
        return full if self.drop_last or not rest else full + 1

    def epoch(
        self, rng: np.random.Generator, with_unlabelled: bool, first_batch: int = 0, count: int | None = None
    ) -> Iterator[list[ClipItem]]:
        """Yield `count` batches (default: one pass over the labelled clips); past the end of a pass the
        labelled clips are reshuffled and cycled, so sparse labels can get as many steps as dense ones.
        `first_batch` continues the global slot cycle across epochs."""
        count = len(self) if count is None else count
        per_pass = len(self)
        order = rng.permutation(len(self._labelled))
        for b in range(count):
            if b and b % per_pass == 0:
                order = rng.permutation(len(self._labelled))
            slot = (first_batch + b) % self.n
            start = (b % per_pass) * self.batch_size
            picked = order[start : start + self.batch_size]
            items = [ClipItem(*self._labelled[i], slot, True) for i in picked]
            pool = self._unlabelled[slot]
            if with_unlabelled and pool:
                extra = rng.choice(len(pool), size=min(self.unlabelled_per_batch, len(pool)), replace=False)
                items += [ClipItem(*pool[i], slot, False) for i in extra]
            yield items
