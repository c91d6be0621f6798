"""Turn batches of ClipItems into tensors: augmented, preprocessed frames and their labels.

A batch is assembled in one call (`ClipBatchBuilder.build`), so a DataLoader worker can prepare the next
batch while the model trains on this one. Augmentation draws come from a seed made of (run seed, epoch,
batch), which keeps a resumed run identical to an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ks_runtime.core.metrics import UNKNOWN
from ks_runtime.core.preprocess import Preprocess, to_network_input
from ks_train.data.augment import AugmentConfig, apply_clip_augment, draw_clip_augment
from ks_train.data.base import VideoSequence
from ks_train.data.sampling import ClipItem, SparseIndex, clip_frames


@dataclass
class ClipBatch:
    """frames (B, n, 3, H, W); labels (B, n, U) kept labels, -1 elsewhere; truth (B, n, U) every label,
    for analysis only; labelled_slots (B, n) kept-label frames; key_slot; clip_labelled (B,)."""

    frames: torch.Tensor
    labels: torch.Tensor
    truth: torch.Tensor
    labelled_slots: torch.Tensor
    key_slot: int
    clip_labelled: torch.Tensor

    def to(self, device: torch.device) -> ClipBatch:
        return ClipBatch(
            self.frames.to(device, non_blocking=True),
            self.labels.to(device),
            self.truth.to(device),
            self.labelled_slots.to(device),
            self.key_slot,
            self.clip_labelled.to(device),
        )


class ClipBatchBuilder:
    def __init__(
        self,
        sequences: list[VideoSequence],
        index: SparseIndex,
        n: int,
        preprocess: Preprocess,
        augment: AugmentConfig | None,
        seed: int,
        stride: int = 1,
    ) -> None:
        self.sequences, self.index, self.n, self.stride = sequences, index, n, stride
        self.preprocess, self.augment, self.seed = preprocess, augment, seed

    def build(self, items: list[ClipItem], epoch: int, batch: int) -> ClipBatch:
        rng = np.random.default_rng([self.seed, epoch, batch])
        frames, labels, truth, kept = [], [], [], []
        for item in items:
            sequence = self.sequences[item.sequence]
            positions = clip_frames(item.key, item.slot, self.n, len(sequence), self.stride)
            clip = sequence.load(positions)  # (n, H, W, 3) uint8
            if self.augment is not None:
                clip = apply_clip_augment(clip, draw_clip_augment(self.augment, rng))
            frames.append(to_network_input(clip, self.preprocess))
            slot_kept = self.index.masks[item.sequence][positions]
            true = sequence.labels[positions].astype(np.float32)
            truth.append(true)
            labels.append(np.where(slot_kept[:, None], true, np.float32(UNKNOWN)))
            kept.append(slot_kept)
        return ClipBatch(
            frames=torch.from_numpy(np.stack(frames)),
            labels=torch.from_numpy(np.stack(labels)),
            truth=torch.from_numpy(np.stack(truth)),
            labelled_slots=torch.from_numpy(np.stack(kept)),
            key_slot=items[0].slot,
            clip_labelled=torch.tensor([item.labelled for item in items]),
        )


class EpochBatches(torch.utils.data.Dataset):
    """A map-style dataset over one epoch's precomputed batches, for a DataLoader with batch_size=None."""

    def __init__(self, builder: ClipBatchBuilder, batches: list[list[ClipItem]], epoch: int, first_batch: int) -> None:
        self.builder, self.batches, self.epoch, self.first_batch = builder, batches, epoch, first_batch

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> ClipBatch:
        return self.builder.build(self.batches[i], self.epoch, self.first_batch + i)
