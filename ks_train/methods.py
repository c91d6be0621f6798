"""Training methods behind one registry: `ks` (the full Knowledge-Spreader) and `frame` (the frame-only
baseline: S_a's backbone and head on single labelled frames, the floor KS must beat).

A method builds its model, computes one training step's loss terms, and predicts frames for evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ks_train import losses
from ks_train.config import ExperimentConfig, LossConfig
from ks_train.data.clips import ClipBatch
from ks_train.label_prior import MarkovLabelPrior, fit_label_prior
from ks_train.model.ks import FrameModel, KSModel, one_hot_slot
from ks_train.ppl_gate import LabelSequenceGate, prior_gate_step

METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    METHODS[cls.name] = cls
    return cls


def create_method(cfg: ExperimentConfig) -> Method:
    try:
        return METHODS[cfg.method](cfg)
    except KeyError:
        raise ValueError(f"unknown method {cfg.method!r}; known: {', '.join(METHODS)}") from None


@dataclass
class StepResult:
    """The total loss, each term's value, and counts summed over an epoch (acceptance, pseudo-label hits)."""

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]
    counts: dict[str, float] = field(default_factory=dict)


class Method:
    name = ""
    clip_len = 1  # frames per training item
    clip_stride = 1  # frames between a clip's slots

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.cfg = cfg

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def fit_data(self, label_tracks: list[np.ndarray], spacing: int) -> None:
        """Learn what the method needs from the training set's kept labels before the first step: label_tracks
        are each video's kept labels (T_i, U) in frame order, `spacing` frames apart. Nothing by default."""

    def rng_states(self) -> dict[str, torch.Tensor]:
        """The method's own random generators' states, for a checkpoint's "rng" (none by default)."""
        return {}

    def set_rng_states(self, states: dict[str, torch.Tensor]) -> None:
        """Restore what `rng_states` saved; a checkpoint written without them leaves the generators as seeded."""

    def train_step(
        self, model: nn.Module, batch: ClipBatch, weights: losses.AUWeights, semi_supervised: bool
    ) -> StepResult:
        raise NotImplementedError

    def encode(self, model: nn.Module, frames: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per-frame outputs for dense testing; each (B, ...)."""
        raise NotImplementedError

    def head(self, model: nn.Module, per_frame: tuple[torch.Tensor, ...], key_slot: torch.Tensor) -> torch.Tensor:
        """Per-clip probabilities (B, U) from per-frame outputs gathered into clips (B, n, ...)."""
        raise NotImplementedError


@register_method
class FrameMethod(Method):
    name = "frame"

    def build_model(self) -> nn.Module:
        return FrameModel(self.cfg.model)

    def train_step(self, model, batch, weights, semi_supervised):
        logits = model.frame_logits(batch.frames.flatten(0, 1))  # (B*n, U)
        loss = losses.loss_a(logits, batch.labels.flatten(0, 1), weights)
        return StepResult(loss, {"L_A": loss.detach()})

    def encode(self, model, frames):
        return (model.frame_logits(frames),)

    def head(self, model, per_frame, key_slot):
        (logits,) = per_frame  # (B, n, U): a frame model only looks at the key frame
        return torch.sigmoid((logits * one_hot_slot(key_slot, logits.shape[1])[..., None]).sum(1))


def perturb_tokens(tokens: torch.Tensor, key_slot: int, kinds: tuple[str, ...]) -> torch.Tensor:
    """Mimic the temporal glitch a wrong pseudo label makes [R]: in each clip, one non-key token is either
    swapped for the same slot's token of another clip (`swap`) or has its logits negated on a random
    subset of AUs (`negate`). tokens (B, n, U)."""
    b, n, u = tokens.shape
    device = tokens.device
    slot = (key_slot + 1 + torch.randint(n - 1, (b,), device=device)) % n
    target = one_hot_slot(slot, n)[..., None]  # (B, n, 1)
    subset = torch.rand(b, u, device=device) < 0.5
    subset[torch.arange(b, device=device), torch.randint(u, (b,), device=device)] = True
    negated = tokens * (1 - 2 * target * subset[:, None, :].to(tokens.dtype))
    if "swap" not in kinds or b < 2:
        return negated
    swapped = tokens * (1 - target) + tokens.roll(1, dims=0) * target
    if "negate" not in kinds:
        return swapped
    use_swap = (torch.rand(b, device=device) < 0.5)[:, None, None]
    return torch.where(use_swap, swapped, negated)


def clip_confidence(tt_logits: torch.Tensor, unlabelled_slots: torch.Tensor) -> torch.Tensor:
    """Each clip's confidence (B,): the mean of max(p, 1 - p) over the AUs of its unlabelled slots (0 if none)."""
    p = torch.sigmoid(tt_logits.float())
    confidence = torch.maximum(p, 1 - p).mean(-1)  # (B, n)
    slots = unlabelled_slots.to(confidence.dtype)
    return (confidence * slots).sum(1) / slots.sum(1).clamp(min=1)


def gate(
    loss_cfg: LossConfig, p_perturbed: torch.Tensor, tt_logits: torch.Tensor, unlabelled_slots: torch.Tensor
) -> torch.Tensor:
    """Which clips' pseudo labels to accept (B,) bool: PPL, none (naive: all) or a confidence threshold."""
    if loss_cfg.gate == "none":
        return torch.ones_like(p_perturbed, dtype=torch.bool)
    if loss_cfg.gate == "confidence":
        return clip_confidence(tt_logits, unlabelled_slots) >= loss_cfg.confidence_threshold
    return p_perturbed < loss_cfg.ppl_threshold


def most_confident(confidence: torch.Tensor, count: int, eligible: torch.Tensor) -> torch.Tensor:
    """The `count` eligible clips of highest confidence (B,) bool, ties to the earlier clip: a confidence gate
    accepting as many clips as another gate did."""
    score = torch.where(eligible, confidence.float(), torch.full_like(confidence.float(), -torch.inf))
    chosen = torch.zeros_like(eligible)
    chosen[torch.argsort(score, descending=True, stable=True)[:count]] = True
    return chosen & eligible


@register_method
class KSMethod(Method):
    name = "ks"

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__(cfg)
        self.clip_len, self.clip_stride = cfg.model.clip_len, cfg.model.clip_stride
        self.label_prior: MarkovLabelPrior | None = None  # loss.gate=sequence: from fit_data
        self.gate_generator = torch.Generator().manual_seed(cfg.train.seed)

    def build_model(self) -> nn.Module:
        model = KSModel(self.cfg.model)
        if self.cfg.loss.gate == "sequence":
            model.label_gate = LabelSequenceGate(self.cfg.model.n_aus)  # training only: the export never runs it
        return model

    def fit_data(self, label_tracks, spacing):
        if self.cfg.loss.gate == "sequence":
            self.label_prior = fit_label_prior(label_tracks, spacing)

    def require_label_prior(self) -> MarkovLabelPrior:
        """The sequence gate's label prior, or an error saying what was skipped."""
        if self.label_prior is None:
            raise RuntimeError("loss.gate=sequence needs the label prior: call KSMethod.fit_data with the kept labels")
        return self.label_prior

    def rng_states(self):
        return {"gate": self.gate_generator.get_state()}  # the sequence gate's draws: resume continues them

    def set_rng_states(self, states):
        if "gate" in states:
            self.gate_generator.set_state(states["gate"])

    def forward_clips(self, model, batch: ClipBatch) -> tuple[torch.Tensor, ...]:
        """S_a (B, n, U), the slot students (B, n, U), TT's tokens (B, n, U) and sources (B, n), TT (B, n, U)."""
        b, n = batch.frames.shape[:2]
        sa, students = model.encode_frames(batch.frames.flatten(0, 1))
        sa = sa.reshape(b, n, -1)  # (B, n, U)
        students = students.reshape(b, n, n, -1)  # (B, n, n, U) [frame, student, AU]
        key_onehot = one_hot_slot(torch.full((b,), batch.key_slot, device=sa.device), n)  # (B, n)
        tokens, source = model.clip_tokens(sa, students, key_onehot)
        own_student = students[:, torch.arange(n), torch.arange(n)]  # (B, n, U)

        # Sometimes the key token is the active student's, so TT is supervised on student-made tokens too.
        student_key = torch.rand(b, device=sa.device) < self.cfg.loss.p_student_key
        swap_key = (student_key[:, None] & key_onehot.bool())[..., None]
        tokens = torch.where(swap_key, own_student, tokens)
        source = torch.where(student_key[:, None], torch.zeros_like(source), source)
        tt, _ = model.temporal_teacher(tokens, source)  # (B, n, U)
        return sa, own_student, tokens, source, tt

    def ppl_terms(self, model, tokens: torch.Tensor, source: torch.Tensor, key_slot: int) -> tuple[torch.Tensor, ...]:
        """PPL's logit on the clean token sequences (B,) and L_self on clean vs perturbed ones."""
        lc = self.cfg.loss
        ppl_tokens = tokens.detach() if lc.ppl_detach_tokens else tokens
        _, clean_encoded = model.temporal_teacher(ppl_tokens, source)
        _, perturbed_encoded = model.temporal_teacher(perturb_tokens(ppl_tokens, key_slot, lc.perturbations), source)
        clean_logit = model.ppl(clean_encoded)
        return clean_logit, losses.loss_self(clean_logit, model.ppl(perturbed_encoded))

    def gate_terms(self, model, tokens, source, tt, unlabelled, key_slot) -> tuple[torch.Tensor, torch.Tensor]:
        """L_self and the clips whose pseudo labels are accepted (B,) bool, under loss.gate: the label-sequence
        gate judging TT's pseudo labels against the label prior, or the token-level PPL (L_self on clean vs
        perturbed token sequences, its clean verdict gating) and the gates that read it or TT."""
        lc = self.cfg.loss
        if lc.gate != "sequence":
            clean_logit, l_self = self.ppl_terms(model, tokens, source, key_slot)
            return l_self, gate(lc, torch.sigmoid(clean_logit.detach()), tt.detach(), unlabelled)
        pseudo = losses.pseudo_labels(tt).float()
        verdict = prior_gate_step(
            model.label_gate,
            self.require_label_prior(),
            pseudo,
            key_slot,
            self.gate_generator,
            lc.gate_clips,
            lc.gate_acceptance,
            tuple(lc.gate_perturbations),
        )
        return verdict.loss, verdict.accepted

    def train_step(self, model, batch, weights, semi_supervised):
        lc = self.cfg.loss
        m = batch.key_slot
        sa, own_student, tokens, source, tt = self.forward_clips(model, batch)
        terms = {
            "L_A": losses.loss_a(sa, batch.labels, weights),
            "L_T": losses.loss_t(tt, batch.labels, weights),
            "L_SKD": losses.loss_skd(own_student[:, m], sa[:, m], batch.clip_labelled),
        }
        unlabelled = ~batch.labelled_slots
        terms["L_self"], accepted = self.gate_terms(model, tokens, source, tt, unlabelled, m)
        if semi_supervised:
            pl_weights = weights if lc.pl_weight_positives else weights.without_positive()
            targets, trained = losses.pl_targets(lc.pl_target, tt, batch.labels, batch.truth, m, accepted)
            terms["L_PL"] = losses.loss_pl(sa, targets, unlabelled, trained, pl_weights)
        loss = (
            terms["L_A"]
            + terms["L_T"]
            + lc.l_skd * terms["L_SKD"]
            + lc.l_self * terms["L_self"]
            + lc.l_pl * terms.get("L_PL", torch.zeros((), device=sa.device))
        )
        # The counts score TT's pseudo labels and the gate's verdict whatever loss.pl_target trains S_a on.
        counts = pseudo_label_counts(tt.detach(), batch.truth, unlabelled, accepted)
        return StepResult(loss, {k: v.detach() for k, v in terms.items()}, counts)

    def encode(self, model, frames):
        return model.encode_frames(frames)

    def head(self, model, per_frame, key_slot):
        sa, students = per_frame
        return model.head(sa, students, key_slot)


def pseudo_label_counts(
    tt_logits: torch.Tensor, truth: torch.Tensor, unlabelled: torch.Tensor, accepted: torch.Tensor
) -> dict[str, float]:
    """Acceptance and the pseudo labels' accuracy on hidden labels at the unlabelled slots: for all clips, for the
    accepted ones, and for the most confident clips in the same number as were accepted (`most_confident`).
    tt_logits, truth (B, n, U); unlabelled (B, n) bool; accepted (B,) bool. Summed over an epoch."""
    has_unlabelled = unlabelled.any(1)
    accepted = accepted & has_unlabelled
    correct = (losses.pseudo_labels(tt_logits) == truth) & (truth != losses.UNKNOWN)  # (B, n, U)
    known = (truth != losses.UNKNOWN) & unlabelled[..., None]
    confident = most_confident(clip_confidence(tt_logits, unlabelled), int(accepted.sum()), has_unlabelled)
    counts = {"clips_with_unlabelled": float(has_unlabelled.sum()), "clips_accepted": float(accepted.sum())}
    for name, selected in (("all", has_unlabelled), ("accepted", accepted), ("confidence", confident)):
        mask = known & selected[:, None, None]
        counts[f"pl_correct_{name}"] = float((correct & mask).sum())
        counts[f"pl_total_{name}"] = float(mask.sum())
    return counts


def summarise_counts(counts: dict[str, float]) -> dict[str, float]:
    """Epoch summaries from summed counts: the gate's acceptance rate and the pseudo labels' accuracies, for all
    clips, the accepted ones, and a confidence gate accepting as many clips as the gate did in each batch."""

    def ratio(a: str, b: str) -> float:
        return counts.get(a, 0.0) / counts[b] if counts.get(b) else float("nan")

    return {
        "ppl_accept_rate": ratio("clips_accepted", "clips_with_unlabelled"),
        "pl_acc_all": ratio("pl_correct_all", "pl_total_all"),
        "pl_acc_accepted": ratio("pl_correct_accepted", "pl_total_accepted"),
        "pl_acc_confidence_same_share": ratio("pl_correct_confidence", "pl_total_confidence"),
    }


def to_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().float().cpu().numpy()
