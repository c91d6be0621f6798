"""KS's loss terms as pure functions (docs/model.md, Losses).

Shapes: B clips, n slots, U AUs. Labels are float tensors with 1 / 0 and -1 for unknown (masked).
Every supervised term is per-AU binary cross-entropy weighted by the inverse positive rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

UNKNOWN = -1.0
AU_WEIGHTINGS = ("inverse_rate", "none")
POSITIVE_WEIGHTINGS = ("none", "balanced", "rare")


@dataclass
class AUWeights:
    """per_au (U,) scales each AU's whole term; positive (U,) scales the positive class within an AU."""

    per_au: torch.Tensor
    positive: torch.Tensor

    def to(self, device: torch.device) -> AUWeights:
        return AUWeights(self.per_au.to(device), self.positive.to(device))

    def without_positive(self) -> AUWeights:
        """The same per-AU weights with both classes weighted alike."""
        return AUWeights(self.per_au, torch.ones_like(self.positive))

    @classmethod
    def uniform(cls, n_aus: int, device: torch.device | None = None) -> AUWeights:
        return cls(torch.ones(n_aus, device=device), torch.ones(n_aus, device=device))


def positive_rates(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    known = labels != UNKNOWN
    return ((labels == 1) & known).sum(0) / np.maximum(known.sum(0), 1)


def inverse_rate_weights(labels: np.ndarray, min_rate: float = 0.01) -> np.ndarray:
    """Per-AU weights proportional to 1 / positive rate over the known labels, normalised to mean 1."""
    inverse = 1.0 / np.maximum(positive_rates(labels), min_rate)
    return (inverse / inverse.mean()).astype(np.float32)


def au_weights(
    labels: np.ndarray, per_au: str = "inverse_rate", positive: str = "none", max_positive: float = 10.0
) -> AUWeights:
    """Loss weights from the kept training labels. `positive="balanced"` weighs positives by (1 - p) / p
    (clipped to [1/max, max]), so that 0.5 separates the classes as if they were equally frequent [R]."""
    if per_au not in AU_WEIGHTINGS or positive not in POSITIVE_WEIGHTINGS:
        raise ValueError(f"AU weighting must be one of {AU_WEIGHTINGS} and {POSITIVE_WEIGHTINGS}")
    n = np.asarray(labels).shape[1]
    w = inverse_rate_weights(labels) if per_au == "inverse_rate" else np.ones(n, np.float32)
    pw = np.ones(n, np.float32)
    if positive in ("balanced", "rare"):
        rate = np.clip(positive_rates(labels), 1e-3, 1 - 1e-3)
        # "rare" never weighs positives below negatives: F1 rewards recall of a frequent AU's positives.
        low = 1.0 if positive == "rare" else 1 / max_positive
        pw = np.clip((1 - rate) / rate, low, max_positive).astype(np.float32)
    return AUWeights(torch.from_numpy(w), torch.from_numpy(pw))


def weighted_bce(logits: torch.Tensor, targets: torch.Tensor, weights: AUWeights, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the masked-in entries of w_u * BCE(logit, target) with positives scaled by pw_u; 0 when
    nothing is masked in. logits, targets, mask (..., U). Targets may be soft (probabilities).
    Computed in fp32 whatever autocast made the logits: a bf16 mask sum miscounts past 256 entries."""
    logits, mask = logits.float(), mask.float()
    per_entry = F.binary_cross_entropy_with_logits(
        logits, targets.float().clamp(0, 1), reduction="none", pos_weight=weights.positive
    )
    total = (per_entry * weights.per_au * mask).sum()
    return total / mask.sum().clamp(min=1.0)


def loss_a(sa_logits: torch.Tensor, labels: torch.Tensor, weights: AUWeights) -> torch.Tensor:
    """L_A: S_a on every labelled frame of the clip against its label. (B, n, U)."""
    return weighted_bce(sa_logits, labels, weights, labels != UNKNOWN)


def loss_t(tt_logits: torch.Tensor, labels: torch.Tensor, weights: AUWeights) -> torch.Tensor:
    """L_T: the Temporal Teacher at every labelled slot against the label. (B, n, U)."""
    return weighted_bce(tt_logits, labels, weights, labels != UNKNOWN)


def loss_skd(student_key_logits: torch.Tensor, sa_key_logits: torch.Tensor, clip_mask: torch.Tensor) -> torch.Tensor:
    """L_SKD: the active student on the key frame against stop-gradient S_a probabilities. (B, U)."""
    targets = torch.sigmoid(sa_key_logits.detach())
    plain = AUWeights.uniform(student_key_logits.shape[-1], student_key_logits.device)
    return weighted_bce(student_key_logits, targets, plain, clip_mask[:, None].expand_as(targets))


def pseudo_labels(tt_logits: torch.Tensor) -> torch.Tensor:
    """Hard pseudo labels: the more probable class of each binary AU [S]."""
    return (tt_logits.detach() >= 0).to(tt_logits.dtype)


PL_TARGETS = ("tt", "truth", "key_label")


def pl_targets(
    kind: str,
    tt_logits: torch.Tensor,
    labels: torch.Tensor,
    truth: torch.Tensor,
    key_slot: int,
    accepted: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L_PL's targets (B, n, U), 1 / 0 with -1 unknown (masked), and the clips they train (B,) bool
    (`loss.pl_target`). L_PL reads them at the unlabelled slots only.

    - `tt`: TT's hard pseudo labels, for the clips the gate accepted: the model.
    - `truth`: the hidden labels (`ClipBatch.truth`), for every clip, the gate bypassed: what perfect spreading
      would give, the ceiling of L_PL.
    - `key_label`: the key slot's kept label copied to every slot, for the clips whose key is labelled, the gate
      bypassed: the paper's temporal label smoothness (a clip's frames share the key's AUs). With strided feeding
      a clip with a labelled key has no unlabelled slot, so this trains nothing there: use it with paper feeding.

    tt_logits, labels (kept labels, -1 elsewhere), truth (B, n, U); accepted (B,) bool, the gate's verdict.
    """
    if kind == "tt":
        return pseudo_labels(tt_logits), accepted
    if kind == "truth":
        return truth, torch.ones_like(accepted)
    if kind == "key_label":
        key = labels[:, key_slot]  # (B, U), -1 throughout where the key frame's label was not kept
        return key[:, None, :].expand_as(labels), (key != UNKNOWN).any(-1)
    raise ValueError(f"loss.pl_target must be one of {PL_TARGETS}, got {kind!r}")


def loss_pl(
    sa_logits: torch.Tensor,
    targets: torch.Tensor,
    unlabelled_slots: torch.Tensor,
    accepted: torch.Tensor,
    weights: AUWeights,
) -> torch.Tensor:
    """L_PL: S_a on the unlabelled slots of accepted clips against `targets` (`pl_targets`: TT's hard pseudo
    labels by default); unknown targets (-1) are masked.

    sa_logits, targets (B, n, U); unlabelled_slots (B, n) bool; accepted (B,) bool.
    """
    mask = (unlabelled_slots & accepted[:, None])[..., None] & (targets != UNKNOWN)
    return weighted_bce(sa_logits, targets.detach(), weights, mask)


def loss_self(clean_logits: torch.Tensor, perturbed_logits: torch.Tensor) -> torch.Tensor:
    """L_self: the PPL classifier tells clean (0) from perturbed (1) token sequences. (B,) each."""
    logits = torch.cat([clean_logits, perturbed_logits]).float()
    targets = torch.cat([torch.zeros_like(clean_logits), torch.ones_like(perturbed_logits)])
    return F.binary_cross_entropy_with_logits(logits, targets)
