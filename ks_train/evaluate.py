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
from ks_train.data.sampling import SparseIndex, clip_frames
from ks_train.losses import pseudo_labels
from ks_train.methods import Method, pseudo_label_counts, summarise_counts
from ks_train.model.ks import one_hot_slot
from ks_train.ppl_gate import sequence_verdict

ANALYSIS_CALIBRATION_CLIPS = 2048  # clean prior draws that set the sequence gate's threshold in the analysis


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
    """Accuracy of TT's pseudo labels on hidden training labels at the scored clips' unlabelled slots, under three
    gates: PPL, none (naive), and a confidence gate accepting as many clips as PPL. `keys` says which frames
    key the clips (`scores_between_labels`): "labelled frames" or "frames between labels"; `labels_scored` counts
    the pseudo labels scored (slot and AU, with a known hidden label), `clips` the clips with an unlabelled slot."""

    clips: int
    labels_scored: int
    keys: str
    accepted_fraction: float
    accuracy_naive: float
    accuracy_ppl: float
    accuracy_confidence: float

    def to_dict(self) -> dict:
        return asdict(self)


def scores_between_labels(stride: int, every_k: int) -> bool:
    """Which clips the pseudo-label analysis scores: the clips L_PL spreads labels over, cut at the model's own
    stride (the only one TT knows).

    - Paper feeding (stride 1, or any stride that is not a multiple of k, the label spacing): the clip around
      each labelled key, whose other slots are unlabelled frames: a key frame's knowledge spread to its
      neighbours. Returns False ("labelled frames").
    - Strided feeding (stride a multiple of k): a labelled key's clip is labelled at every slot, so L_PL only ever
      trains on clips with no kept label; the analysis keys a clip on the frame halfway to the next label,
      t + k // 2 for each labelled t, whose slots all fall between labels. Returns True ("frames between labels").
    """
    return stride % every_k == 0


def analysis_keys(mask: np.ndarray, stride: int, every_k: int) -> np.ndarray:
    """The key frames of one training sequence's analysis clips (`scores_between_labels`)."""
    keys = np.flatnonzero(mask)
    if not scores_between_labels(stride, every_k):
        return keys
    keys = keys + every_k // 2
    return keys[keys < len(mask)]


def analysis_clips(
    method: Method,
    model: torch.nn.Module,
    sequence: VideoSequence,
    mask: np.ndarray,
    every_k: int,
    preprocess: Preprocess,
    device: torch.device,
) -> tuple[torch.Tensor, ...]:
    """One sequence's analysis clips (`analysis_keys`, key slot = key number mod n): TT's logits (K, n, U), the
    hidden labels (K, n, U), the unlabelled slots (K, n), PPL's P(perturbed) (K,) and the key slots (K,)."""
    n, stride = method.clip_len, method.clip_stride or every_k
    keys = analysis_keys(mask, stride, every_k)
    slots = np.arange(len(keys)) % n
    frames = clip_frames(keys, slots, n, len(sequence), stride)  # (K, n)
    truth = torch.from_numpy(sequence.labels[frames].astype(np.float32))
    unlabelled = torch.from_numpy(~mask[frames])
    key_slots = torch.from_numpy(slots)
    if len(keys) == 0:
        return torch.zeros_like(truth), truth, unlabelled, torch.zeros(0), key_slots
    sa, students = encode_sequence(method, model, sequence, preprocess, device)
    index = torch.from_numpy(frames).to(device)
    key_onehot = one_hot_slot(key_slots.to(device), n)
    tokens, source = model.clip_tokens(sa[index], students[index], key_onehot)
    tt, encoded = model.temporal_teacher(tokens, source)
    return tt.float().cpu(), truth, unlabelled, torch.sigmoid(model.ppl(encoded)).float().cpu(), key_slots


def sequence_gate_accepts(
    method: Method, model: torch.nn.Module, tt: torch.Tensor, key_slots: torch.Tensor, device: torch.device
) -> torch.Tensor:
    """(K,) bool: the label-sequence gate's verdict on TT's pseudo labels (K, n, U), its threshold calibrated as in
    training on a fresh, larger draw from the label prior (`KSMethod.fit_data` must have run)."""
    lc = method.cfg.loss
    p, threshold = sequence_verdict(
        model.label_gate,
        method.require_label_prior(),
        pseudo_labels(tt).to(device),
        key_slots.to(device),
        torch.Generator().manual_seed(0),
        max(lc.gate_clips, ANALYSIS_CALIBRATION_CLIPS),
        lc.gate_acceptance,
    )
    return (p < threshold).cpu()


@torch.no_grad()
def pseudo_label_analysis(
    model: torch.nn.Module,
    sequences: list[VideoSequence],
    index: SparseIndex,
    preprocess: Preprocess,
    ppl_threshold: float,
    device: torch.device,
    method: Method,
) -> PseudoLabelAnalysis:
    """Score the training sequences' analysis clips (`analysis_keys`: around labelled keys for the paper's
    feeding, between labels for strided feeding), take TT's pseudo labels on their unlabelled slots, and compare
    them with the hidden labels for the clips PPL accepts, for all clips (naive), and for the most confident clips
    in the same number (the counts of training's per-epoch log). The model's train/eval mode is restored."""
    was_training = model.training
    model.eval()
    try:
        parts = [
            analysis_clips(method, model, s, mask, index.every_k, preprocess, device)
            for s, mask in zip(sequences, index.masks, strict=True)
        ]
    finally:
        model.train(was_training)
    tt, truth, unlabelled, p_perturbed, key_slots = (torch.cat(part) for part in zip(*parts, strict=True))
    if method.cfg.loss.gate == "sequence":
        accepted = sequence_gate_accepts(method, model, tt, key_slots, device)
    else:
        accepted = p_perturbed < ppl_threshold
    counts = pseudo_label_counts(tt, truth, unlabelled, accepted)
    summary = summarise_counts(counts)
    stride = method.clip_stride or index.every_k
    return PseudoLabelAnalysis(
        clips=int(counts["clips_with_unlabelled"]),
        labels_scored=int(counts["pl_total_all"]),
        keys="frames between labels" if scores_between_labels(stride, index.every_k) else "labelled frames",
        accepted_fraction=summary["ppl_accept_rate"],
        accuracy_naive=summary["pl_acc_all"],
        accuracy_ppl=summary["pl_acc_accepted"],
        accuracy_confidence=summary["pl_acc_confidence_same_share"],
    )
