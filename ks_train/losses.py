"""KS's loss terms as pure functions (KS_SPEC.md, Losses).

Shapes: B clips, n slots, U AUs. Labels are float tensors with 1 / 0 and -1 for unknown (masked).
Every supervised term is per-AU binary cross-entropy weighted by the inverse positive rate.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

UNKNOWN = -1.0


def inverse_rate_weights(labels: np.ndarray, min_rate: float = 0.01) -> np.ndarray:
    """Per-AU weights proportional to 1 / positive rate over the known labels, normalised to mean 1."""
    labels = np.asarray(labels)
    known = labels != UNKNOWN
    rate = ((labels == 1) & known).sum(0) / np.maximum(known.sum(0), 1)
    inverse = 1.0 / np.maximum(rate, min_rate)
    return (inverse / inverse.mean()).astype(np.float32)


def weighted_bce(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
                 mask: torch.Tensor) -> torch.Tensor:
    """Mean over the masked-in entries of w_u * BCE(logit, target); 0 when nothing is masked in.

    logits, targets, mask (..., U); weights (U,). Targets may be soft (probabilities).
    """
    mask = mask.to(logits.dtype)
    per_entry = F.binary_cross_entropy_with_logits(logits, targets.clamp(0, 1), reduction="none")
    total = (per_entry * weights * mask).sum()
    return total / mask.sum().clamp(min=1.0)


def loss_a(sa_logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """L_A: S_a on every labelled frame of the clip against its label. (B, n, U)."""
    return weighted_bce(sa_logits, labels, weights, labels != UNKNOWN)


def loss_t(tt_logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """L_T: the Temporal Teacher at every labelled slot against the label. (B, n, U)."""
    return weighted_bce(tt_logits, labels, weights, labels != UNKNOWN)


def loss_skd(student_key_logits: torch.Tensor, sa_key_logits: torch.Tensor, clip_mask: torch.Tensor
             ) -> torch.Tensor:
    """L_SKD: the active student on the key frame against stop-gradient S_a probabilities. (B, U)."""
    targets = torch.sigmoid(sa_key_logits.detach())
    ones = torch.ones(student_key_logits.shape[-1], device=student_key_logits.device)
    return weighted_bce(student_key_logits, targets, ones, clip_mask[:, None].expand_as(targets))


def pseudo_labels(tt_logits: torch.Tensor) -> torch.Tensor:
    """Hard pseudo labels: the more probable class of each binary AU [S]."""
    return (tt_logits.detach() >= 0).to(tt_logits.dtype)


def loss_pl(sa_logits: torch.Tensor, tt_logits: torch.Tensor, unlabelled_slots: torch.Tensor,
            accepted: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """L_PL: TT's hard pseudo labels train S_a on the unlabelled slots of accepted clips.

    sa_logits, tt_logits (B, n, U); unlabelled_slots (B, n) bool; accepted (B,) bool.
    """
    mask = (unlabelled_slots & accepted[:, None])[..., None].expand_as(sa_logits)
    return weighted_bce(sa_logits, pseudo_labels(tt_logits), weights, mask)


def loss_self(clean_logits: torch.Tensor, perturbed_logits: torch.Tensor) -> torch.Tensor:
    """L_self: the PPL classifier tells clean (0) from perturbed (1) token sequences. (B,) each."""
    logits = torch.cat([clean_logits, perturbed_logits])
    targets = torch.cat([torch.zeros_like(clean_logits), torch.ones_like(perturbed_logits)])
    return F.binary_cross_entropy_with_logits(logits, targets)
