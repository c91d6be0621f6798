"""Dense testing: every frame of every test sequence scored through the shared key-slot policy.

The per-frame part runs once per frame and the per-clip head once per clip, exactly as the streaming
runtime does, so `ks-train eval` and `ks-run` compute the same numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from ks_runtime.core.metrics import F1Report, f1_report
from ks_runtime.core.policy import dense_clip_indices
from ks_runtime.core.preprocess import Preprocess, to_network_input
from ks_train.data.base import VideoSequence
from ks_train.data.sampling import clip_frames
from ks_train.methods import Method
from ks_train.model.ks import one_hot_slot


@torch.no_grad()
def encode_sequence(
    method: Method,
    model: torch.nn.Module,
    sequence: VideoSequence,
    preprocess: Preprocess,
    device: torch.device,
    batch_size: int = 64,
) -> tuple[torch.Tensor, ...]:
    """The per-frame outputs of every frame of a sequence, each (T, ...)."""
    outputs: list[tuple[torch.Tensor, ...]] = []
    for start in range(0, len(sequence), batch_size):
        positions = np.arange(start, min(start + batch_size, len(sequence)))
        frames = torch.from_numpy(to_network_input(sequence.load(positions), preprocess)).to(device)
        outputs.append(method.encode(model, frames))
    return tuple(torch.cat(parts) for parts in zip(*outputs, strict=True))


@torch.no_grad()
def dense_probabilities(
    method: Method, model: torch.nn.Module, per_frame: tuple[torch.Tensor, ...], policy: str, batch_size: int = 256
) -> np.ndarray:
    """Probabilities [T, U] from per-frame outputs: each frame's clip(s) by the policy, then the head."""
    length = per_frame[0].shape[0]
    n = method.clip_len
    frames, slots = dense_clip_indices(length, n, policy, method.clip_stride)  # (T, k, n), (T, k)
    k = slots.shape[1]
    flat_frames = torch.from_numpy(frames.reshape(-1, n))
    flat_slots = torch.from_numpy(slots.reshape(-1))
    device = per_frame[0].device
    probs = []
    for start in range(0, len(flat_slots), batch_size):
        index = flat_frames[start : start + batch_size].to(device)
        gathered = tuple(output[index] for output in per_frame)  # each (b, n, ...)
        probs.append(method.head(model, gathered, flat_slots[start : start + batch_size].to(device)))
    return torch.cat(probs).float().cpu().numpy().reshape(length, k, -1).mean(1)


def predict_sequences(
    method: Method,
    model: torch.nn.Module,
    sequences: list[VideoSequence],
    preprocess: Preprocess,
    policy: str,
    device: torch.device,
) -> list[np.ndarray]:
    was_training = model.training
    model.eval()
    try:
        return [
            dense_probabilities(method, model, encode_sequence(method, model, s, preprocess, device), policy)
            for s in sequences
        ]
    finally:
        model.train(was_training)


def evaluate(
    method: Method,
    model: torch.nn.Module,
    sequences: list[VideoSequence],
    preprocess: Preprocess,
    policy: str,
    device: torch.device,
    columns: list[str],
) -> F1Report:
    """Per-AU F1 over all frames of `sequences`, dense testing under `policy`."""
    probs = predict_sequences(method, model, sequences, preprocess, policy, device)
    labels = np.concatenate([s.labels for s in sequences])
    return f1_report(np.concatenate(probs), labels, columns)


@dataclass
class PseudoLabelAnalysis:
    """Accuracy of pseudo labels on hidden training labels under three gates accepting the same share."""

    clips: int
    accepted_fraction: float
    accuracy_naive: float
    accuracy_ppl: float
    accuracy_confidence: float

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def pseudo_label_analysis(
    model: torch.nn.Module,
    sequences: list[VideoSequence],
    masks: list[np.ndarray],
    preprocess: Preprocess,
    ppl_threshold: float,
    device: torch.device,
    method: Method,
) -> PseudoLabelAnalysis:
    """Score every training key frame's clip (slot = key number mod n, so slots are balanced), take TT's
    pseudo labels on its unlabelled slots, and compare them with the hidden labels for the clips that
    PPL accepts, for all clips (naive), and for the most confident clips in the same number."""
    model.eval()
    n, stride = model.cfg.clip_len, model.cfg.clip_stride
    p_perturbed, confidence, correct, total = [], [], [], []
    for sequence, mask in zip(sequences, masks, strict=True):
        sa, students = encode_sequence(method, model, sequence, preprocess, device)
        keys = np.flatnonzero(mask)
        if len(keys) == 0:
            continue
        slots = np.arange(len(keys)) % n
        frames = clip_frames(keys, slots, n, len(sequence), stride)  # (K, n)
        index = torch.from_numpy(frames).to(device)
        key_onehot = one_hot_slot(torch.from_numpy(slots).to(device), n)
        tokens, source = model.clip_tokens(sa[index], students[index], key_onehot)
        tt, encoded = model.temporal_teacher(tokens, source)
        p_perturbed.append(torch.sigmoid(model.ppl(encoded)).cpu().numpy())
        unlabelled = ~mask[frames]  # (K, n)
        truth = sequence.labels[frames]  # (K, n, U)
        probs = torch.sigmoid(tt).cpu().numpy()
        known = (truth != -1) & unlabelled[..., None]
        hits = ((probs >= 0.5) == (truth == 1)) & known
        confidence.append(np.where(unlabelled[..., None], np.maximum(probs, 1 - probs), np.nan).reshape(len(keys), -1))
        correct.append(hits.reshape(len(keys), -1).sum(1))
        total.append(known.reshape(len(keys), -1).sum(1))
    p_perturbed, correct, total = map(np.concatenate, (p_perturbed, correct, total))
    confidence = np.nanmean(np.concatenate(confidence), axis=1)
    accept = p_perturbed < ppl_threshold
    k = int(accept.sum())
    by_confidence = np.zeros_like(accept)
    by_confidence[np.argsort(-np.nan_to_num(confidence, nan=-1.0), kind="stable")[:k]] = True

    def accuracy(selected: np.ndarray) -> float:
        return float(correct[selected].sum() / total[selected].sum()) if total[selected].sum() else float("nan")

    return PseudoLabelAnalysis(
        len(accept), float(accept.mean()), accuracy(np.ones_like(accept)), accuracy(accept), accuracy(by_confidence)
    )
