"""A label-sequence gate for pseudo labels (docs/model.md, PPL) [R]: perturbations shaped like real pseudo-label
errors, a small classifier of P(sequence is perturbed), and a threshold calibrated on clips the gate never trained
on. Training only; nothing here is exported.

Why: the token-level PPL gate (`methods.perturb_tokens` + `PPLClassifier`) grades itself. L_self trains it with
the very clips it then gates as its clean negatives, so its acceptance is its specificity; its perturbations
(negating half a frame's logits, another video's token) are far larger than real pseudo-label errors, which are
short runs shared by neighbouring frames; and it judges TT's encoding of the tokens, not the pseudo-label
sequence that the paper wants checked against the regular pattern of facial action movements.

What the gate sees (`GateInputs`), per clip of n slots and U AUs:
- `sequence` (B, n, U) in [0, 1]: a label sequence. In training, clean kept labels or a perturbed copy; when
  gating, TT's hard pseudo labels (`losses.pseudo_labels`), the labels L_PL would train S_a with.
- `evidence` (B, n, U): S_a's logits on the same frames, a per-frame view made without TT.
- `key_slot` (B,): the key slot; perturbations never touch it (a labelled clip's key frame keeps its real label).
TT's own logits are deliberately not evidence: pseudo labels are TT's logits thresholded, so they always agree
with them, while a perturbed training sequence disagrees; a gate shown TT would learn "disagrees with TT" and
accept every pseudo-label sequence.

Perturbations (`perturb_labels`), each on one AU of a clip, never on the key slot:
- `shift`: one active run moved by 1 or 2 frames (its onset and its offset move together; frames beyond the
  clip are edge-replicated, so a run that leaves the clip only moves its visible end);
- `stretch`: one end of a run moved out (stretched) or in (shrunk) by 1 or 2 frames, the run keeping a frame;
- `cut`: a run cut short: more than 2 frames removed from one end, or the whole of a short visible run (a missed
  event), at most `max_len` frames;
- `flip`: a glitch: 1 to `max_len` consecutive frames flipped inside a constant stretch (a blip or a gap).
`error_pattern_perturbation` flips a clip's labels wherever S_a and TT disagree on another clip: a real error
pattern, in the place (slot, AU) where it happened.

In training (`loss.gate=sequence`, `prior_gate_step`, wired in `KSMethod.gate_terms`):
1. Clean sequences come from the label prior (`label_prior`: a per-AU Markov chain fitted from the kept labels,
   which with the paper's adjacent-frame clips and sparse labels are the only clean evidence there is). They
   carry no frames, so the gate sees no evidence (zero logits) there, and so also when it gates.
2. Each step the gate trains on a fresh draw and its perturbed copies (`loss.gate_perturbations`, flips by
   default: under the prior a shifted, stretched or cut run is as likely as a clean one, so a gate without
   evidence cannot learn them), with `gate_loss` as L_self.
3. A second fresh draw, which the gate never trains on, sets through `fit_threshold` the threshold that accepts
   `loss.gate_acceptance` of clean sequences (`sequence_verdict`).
4. TT's hard pseudo labels (`losses.pseudo_labels`) of the step's clips are accepted below that threshold, so
   the acceptance logged says how pseudo-label sequences compare with clean ones, not the gate's specificity.
With fully labelled clips (`fully_labelled`: with strided feeding, every labelled clip) the gate could instead
train on real clean sequences with S_a's evidence (`gate_training_batch`, `split_held_out`); that path is
tested but not wired, since the strided feeding leaves L_PL no unlabelled slot in a labelled clip.

Randomness comes only from the `generator` argument (a CPU `torch.Generator`): same seed, same output.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ks_train.label_prior import MarkovLabelPrior
from ks_train.losses import UNKNOWN
from ks_train.model.ks import one_hot_slot

KINDS = ("shift", "stretch", "cut", "flip")
SHIFTS = (-2, -1, 1, 2)  # frames a `shift` moves a run by
MAX_BOUNDARY_MOVE = 2  # frames a `stretch` moves one end of a run by, at most
GATE_CHANNELS = 4  # label, S_a probability, their agreement, key slot


@dataclass(frozen=True)
class GateInputs:
    """What the gate sees: sequence (B, n, U) in [0, 1]; evidence (B, n, U) S_a logits; key_slot (B,) long."""

    sequence: torch.Tensor
    evidence: torch.Tensor
    key_slot: torch.Tensor

    def select(self, index: torch.Tensor) -> GateInputs:
        return GateInputs(self.sequence[index], self.evidence[index], self.key_slot[index])


class Perturbed(NamedTuple):
    """labels (B, n, U): the perturbed labels; changed (B,) bool: which clips were perturbed."""

    labels: torch.Tensor
    changed: torch.Tensor


@dataclass(frozen=True)
class GateBatch:
    """Gate training data: inputs (N clips), targets (N,) 0 clean / 1 perturbed, weights (N,) summing to 1."""

    inputs: GateInputs
    targets: torch.Tensor
    weights: torch.Tensor


# --- argument checks --------------------------------------------------------------------------------------


def _check_sequence(name: str, x: torch.Tensor, like: torch.Tensor | None = None) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a (B, n, U) tensor, got {shape}")
    if like is not None and x.shape != like.shape:
        raise ValueError(f"{name} must have the shape {tuple(like.shape)}, got {tuple(x.shape)}")


def _check_probabilities(name: str, x: torch.Tensor) -> None:
    _check_sequence(name, x)
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"{name} must hold labels or probabilities in [0, 1] (no unknowns, {UNKNOWN:g})")


def _key_slots(key_slot: int | torch.Tensor, b: int, n: int, device: torch.device) -> torch.Tensor:
    """key_slot as a (B,) long tensor, checked to lie in [0, n)."""
    key = torch.as_tensor(key_slot, device=device).long()
    if key.dim() == 0:
        key = key.expand(b)
    if key.shape != (b,):
        raise ValueError(f"key_slot must be an int or a ({b},) tensor, got shape {tuple(key.shape)}")
    if key.numel() and (key.min() < 0 or key.max() >= n):
        raise ValueError(f"key_slot must lie in [0, {n}), got {key.tolist()}")
    return key


def _check_kinds(kinds: tuple[str, ...]) -> None:
    unknown = [k for k in kinds if k not in KINDS]
    if not kinds or unknown:
        raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got {kinds!r}")


def gate_inputs(sequence: torch.Tensor, evidence: torch.Tensor, key_slot: int | torch.Tensor) -> GateInputs:
    """Checked `GateInputs`; key_slot an int (the whole batch, as in `KSMethod.train_step`) or (B,)."""
    _check_probabilities("sequence", sequence)
    _check_sequence("evidence", evidence, like=sequence)
    b, n, _ = sequence.shape
    return GateInputs(sequence, evidence, _key_slots(key_slot, b, n, sequence.device))


def fully_labelled(labels: torch.Tensor) -> torch.Tensor:
    """(B,) bool: clips whose kept labels (B, n, U), -1 unknown, cover every slot and AU: clean sequences."""
    _check_sequence("labels", labels)
    return (labels != UNKNOWN).flatten(1).all(1)


def error_patterns(sa_logits: torch.Tensor, tt_logits: torch.Tensor) -> torch.Tensor:
    """(B, n, U) bool: where S_a's and TT's thresholded logits disagree, one of them is wrong there."""
    _check_sequence("sa_logits", sa_logits)
    _check_sequence("tt_logits", tt_logits, like=sa_logits)
    return (sa_logits.detach() >= 0) != (tt_logits.detach() >= 0)


# --- perturbation candidates ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _blocks(n: int, max_len: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every block of 1..max_len consecutive slots: starts (C,), lengths (C,), masks (C, n) float."""
    pairs = [(a, length) for length in range(1, min(max_len, n - 1) + 1) for a in range(n - length + 1)]
    starts = torch.tensor([a for a, _ in pairs])
    lengths = torch.tensor([length for _, length in pairs])
    slots = torch.arange(n)
    masks = ((slots >= starts[:, None]) & (slots < (starts + lengths)[:, None])).float()
    return starts, lengths, masks


def _neighbours(x: torch.Tensor, starts: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """For each block: does the slot before / after it exist, and its value. x (B, U, n) float."""
    n = x.shape[-1]
    has_left, has_right = starts > 0, starts + lengths < n
    left = x[..., (starts - 1).clamp(min=0)]
    right = x[..., (starts + lengths).clamp(max=n - 1)]
    return has_left, left, has_right, right


def _block_validity(x: torch.Tensor, max_len: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Which blocks each of stretch / cut / flip may flip: {kind: (B, U, C) bool}, and the masks (C, n)."""
    starts, lengths, masks = (t.to(x.device) for t in _blocks(x.shape[-1], max_len))
    inside = x @ masks.T  # (B, U, C) active frames in the block
    ones, zeros = inside == lengths, inside == 0
    value = ones.to(x.dtype)  # the block's value where it is constant
    has_left, left, has_right, right = _neighbours(x, starts, lengths)
    left_same, left_diff = has_left & (left == value), has_left & (left != value)
    right_same, right_diff = has_right & (right == value), has_right & (right != value)
    constant = ones | zeros
    # flip: a blip or a gap: a constant block whose existing neighbours all share its value
    flip = constant & (left_same | ~has_left) & (right_same | ~has_right)
    # stretch: one end of a run moves; the other side keeps the block's value (or is the clip's edge when a run
    # grows to it); a shrunk run keeps a frame
    other_right = right_same | (~has_right & zeros)
    other_left = left_same | (~has_left & zeros)
    stretch = constant & (lengths <= MAX_BOUNDARY_MOVE) & ((left_diff & other_right) | (right_diff & other_left))
    # cut: an end of a run removed, longer than a stretch, or the whole of a visible run
    whole = (left_diff | ~has_left) & (right_diff | ~has_right)
    cut = ones & (left_diff | right_diff) & ((lengths > MAX_BOUNDARY_MOVE) | whole)
    return {"stretch": stretch, "cut": cut, "flip": flip}, masks.bool()


def _shift_changes(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Shifting the run that starts at each slot by each of SHIFTS, frames beyond the clip edge-replicated:
    valid (B, U, n * D) bool and changes (B, U, n * D, n) bool."""
    n = x.shape[-1]
    active = x.bool()
    starts = active & ~F.pad(active, (1, 0))[..., :n]  # (B, U, n) a run starts here
    run_id = starts.long().cumsum(-1)
    runs = active[..., None, :] & (run_id[..., None, :] == run_id[..., :, None])  # (B, U, s, n)
    runs &= starts[..., None]
    source = (torch.arange(n, device=x.device) - torch.tensor(SHIFTS, device=x.device)[:, None]).clamp(0, n - 1)
    moved = runs[..., source]  # (B, U, s, D, n)
    new = (active[..., None, :] & ~runs)[..., None, :] | moved
    changes = (new != active[..., None, None, :]).flatten(2, 3)
    return changes.any(-1), changes


def _choose(valid: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A uniformly random True of each row of valid (B, K): index (B,) and whether the row had one (B,)."""
    scores = torch.rand(valid.shape, generator=generator).to(valid.device)
    return torch.where(valid, scores, -1.0).argmax(1), valid.any(1)


def perturb_labels(
    labels: torch.Tensor,
    key_slot: int | torch.Tensor,
    generator: torch.Generator,
    kinds: tuple[str, ...] = KINDS,
    max_len: int = 3,
) -> Perturbed:
    """Perturb one AU of each clip like a real pseudo-label error (module docstring), never at the key slot.

    labels (B, n, U): 0/1 labels or probabilities (a run is where p >= 0.5; a changed frame's p becomes 1 - p).
    Each clip draws a kind uniformly among `kinds` that fit it, then a place uniformly among that kind's; a clip
    that no kind fits comes back unchanged with changed False.
    """
    _check_probabilities("labels", labels)
    _check_kinds(tuple(kinds))
    if max_len < 1:
        raise ValueError(f"max_len must be at least 1, got {max_len}")
    b, n, u = labels.shape
    if n < 2:
        raise ValueError(f"labels must have at least 2 slots (one is the key slot), got shape {tuple(labels.shape)}")
    key = _key_slots(key_slot, b, n, labels.device)
    x = (labels.detach() >= 0.5).float().transpose(1, 2)  # (B, U, n)
    valid, masks = _block_validity(x, max_len)
    valid = {k: v & ~masks[:, key].T[:, None, :] for k, v in valid.items()}  # never the key slot
    shift_valid, shift_changes = _shift_changes(x)
    at_key = shift_changes.gather(-1, key[:, None, None, None].expand(*shift_changes.shape[:3], 1))[..., 0]
    valid["shift"] = shift_valid & ~at_key
    kind, fits = _choose(torch.stack([valid[k].flatten(1).any(1) for k in kinds], 1), generator)
    change = torch.zeros(b, u, n, dtype=torch.bool, device=labels.device)
    rows = torch.arange(b, device=labels.device)
    for i, k in enumerate(kinds):
        place, _ = _choose(valid[k].flatten(1), generator)
        au, candidate = place // valid[k].shape[2], place % valid[k].shape[2]
        track = shift_changes[rows, au, candidate] if k == "shift" else masks[candidate]  # (B, n)
        picked = (fits & (kind == i))[:, None, None] & F.one_hot(au, u).bool()[..., None]
        change |= picked & track[:, None, :]
    change = change.transpose(1, 2)
    return Perturbed(torch.where(change, 1 - labels, labels), fits)


def error_pattern_perturbation(
    pseudo: torch.Tensor,
    reference: torch.Tensor,
    key_slot: int | torch.Tensor,
    generator: torch.Generator,
    same_batch: bool = True,
    max_changed: int | None = None,
) -> Perturbed:
    """Flip each clip's labels wherever a real S_a error pattern says: reference (R, n, U) bool from
    `error_patterns` (S_a and TT disagree there), one donor clip drawn per clip, applied at the same slots and
    AUs, the clip's key slot excluded. pseudo (B, n, U) labels or probabilities (flipped: p -> 1 - p).

    same_batch: reference comes from the same clips as pseudo (R = B), and a clip never takes its own pattern.
    max_changed: donors with more disagreements than this (outside the key slot) are not used.
    A clip with no usable donor comes back unchanged with changed False.
    """
    _check_probabilities("pseudo", pseudo)
    _check_sequence("reference", reference)
    b, n, u = pseudo.shape
    if reference.shape[1:] != (n, u) or (same_batch and reference.shape[0] != b):
        want = f"({b if same_batch else 'R'}, {n}, {u})"
        raise ValueError(f"reference must be {want} to match pseudo, got {tuple(reference.shape)}")
    key = _key_slots(key_slot, b, n, pseudo.device)
    per_slot = reference.bool().sum(2)  # (R, n)
    count = per_slot.sum(1)[None, :] - per_slot[:, key].T  # (B, R): disagreements outside clip i's key slot
    usable = count > 0
    if max_changed is not None:
        usable &= count <= max_changed
    if same_batch:
        usable &= ~torch.eye(b, dtype=torch.bool, device=pseudo.device)
    donor, found = _choose(usable, generator)
    pattern = reference.bool()[donor] & ~one_hot_slot(key, n).bool()[..., None] & found[:, None, None]
    return Perturbed(torch.where(pattern, 1 - pseudo, pseudo), found)


# --- the gate ---------------------------------------------------------------------------------------------


def gate_features(inputs: GateInputs) -> torch.Tensor:
    """(B, U, n, GATE_CHANNELS): per AU and slot, the label, S_a's probability, their agreement, the key slot."""
    y = inputs.sequence.float()
    p = torch.sigmoid(inputs.evidence.float())
    agreement = y * p + (1 - y) * (1 - p)
    key = one_hot_slot(inputs.key_slot, y.shape[1])[..., None].expand_as(y)
    return torch.stack([y, p, agreement, key], dim=3).transpose(1, 2)


class LabelSequenceGate(nn.Module):
    """P(a label sequence is perturbed) from the sequence, S_a's evidence and the key slot (training only).

    Each AU's track goes through the same two temporal convolutions (edge-replicated, plus a learned per-AU
    bias), then a max and a mean over AUs and slots feed one logit: an error on a few frames of one AU shows in
    the max. Works for any n.
    """

    def __init__(self, n_aus: int, hidden: int = 16, kernel: int = 3) -> None:
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"kernel must be odd and positive, got {kernel}")
        self.n_aus, self.kernel = n_aus, kernel
        self.conv1 = nn.Linear(kernel * GATE_CHANNELS, hidden)
        self.conv2 = nn.Linear(kernel * hidden, hidden)
        self.au_bias = nn.Parameter(torch.zeros(n_aus, hidden))
        self.out = nn.Linear(2 * hidden, 1)

    def _windows(self, h: torch.Tensor) -> torch.Tensor:
        """(B, U, n, C) -> (B, U, n, kernel * C): each slot's edge-replicated temporal neighbourhood."""
        n, pad = h.shape[2], self.kernel // 2
        padded = torch.cat([h[:, :, :1]] * pad + [h] + [h[:, :, -1:]] * pad, dim=2)
        return torch.cat([padded[:, :, o : o + n] for o in range(self.kernel)], dim=3)

    def forward(self, inputs: GateInputs) -> torch.Tensor:
        """(B,) logit of "perturbed"."""
        _check_sequence("sequence", inputs.sequence)
        if inputs.sequence.shape[2] != self.n_aus:
            raise ValueError(f"sequence must have {self.n_aus} AUs, got shape {tuple(inputs.sequence.shape)}")
        x = gate_features(inputs)  # (B, U, n, C)
        h = F.gelu(self.conv1(self._windows(x)) + self.au_bias[None, :, None, :])
        h = F.gelu(self.conv2(self._windows(h)))  # (B, U, n, hidden)
        pooled = torch.cat([h.amax(dim=(1, 2)), h.mean(dim=(1, 2))], dim=1)
        return self.out(pooled).squeeze(-1)

    def p_perturbed(self, inputs: GateInputs) -> torch.Tensor:
        """(B,) P(sequence is perturbed)."""
        return torch.sigmoid(self(inputs))


# --- training and calibration -----------------------------------------------------------------------------


def gate_training_batch(
    clean: GateInputs,
    generator: torch.Generator,
    kinds: tuple[str, ...] = KINDS,
    max_len: int = 3,
    patterns: torch.Tensor | None = None,
    pattern_share: float = 0.5,
) -> GateBatch:
    """Each clean clip (target 0) and, where one fits, its perturbed copy (target 1), with the same evidence and
    key slot; weights give each class half of the loss. patterns (B, n, U) bool from `error_patterns` on the
    same clips: then a `pattern_share` of the perturbed copies take a real error pattern instead.
    """
    sequence = clean.sequence
    perturbed, ok = perturb_labels(sequence, clean.key_slot, generator, kinds, max_len)
    if patterns is not None:
        _check_sequence("patterns", patterns, like=sequence)
        real, found = error_pattern_perturbation(sequence, patterns, clean.key_slot, generator)
        use = found & (torch.rand(len(found), generator=generator).to(found.device) < pattern_share)
        use |= found & ~ok
        perturbed, ok = torch.where(use[:, None, None], real, perturbed), ok | use
    ids = ok.nonzero()[:, 0]
    inputs = GateInputs(
        torch.cat([sequence, perturbed[ids]]),
        torch.cat([clean.evidence, clean.evidence[ids]]),
        torch.cat([clean.key_slot, clean.key_slot[ids]]),
    )
    b, p = len(sequence), len(ids)
    targets = torch.cat([sequence.new_zeros(b), sequence.new_ones(p)])
    clean_share = 0.5 if p else 1.0
    weights = torch.cat([sequence.new_full((b,), clean_share / max(b, 1)), sequence.new_full((p,), 0.5 / max(p, 1))])
    return GateBatch(inputs, targets, weights)


def gate_loss(logits: torch.Tensor, batch: GateBatch) -> torch.Tensor:
    """The gate's loss: weighted binary cross-entropy of its logits (N,) against the batch's targets."""
    if logits.shape != batch.targets.shape:
        raise ValueError(f"logits must have the shape {tuple(batch.targets.shape)}, got {tuple(logits.shape)}")
    per_clip = F.binary_cross_entropy_with_logits(logits.float(), batch.targets.float(), reduction="none")
    return (per_clip * batch.weights.float()).sum()


def split_held_out(batch_size: int, fraction: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random disjoint (train, held_out) index tensors over batch_size clips; held_out has round(fraction * B)
    clips, at least 1 when fraction > 0 and B >= 2, and train keeps at least 1."""
    if batch_size < 0:
        raise ValueError(f"batch_size must be >= 0, got {batch_size}")
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must lie in [0, 1), got {fraction}")
    order = torch.randperm(batch_size, generator=generator)
    held = round(fraction * batch_size)
    if batch_size >= 2:
        held = min(max(held, 1 if fraction > 0 else 0), batch_size - 1)
    else:
        held = 0
    return order[held:].sort().values, order[:held].sort().values


def fit_threshold(p_perturbed_held_out: torch.Tensor, target_acceptance: float) -> float:
    """The threshold t with which the gate's rule `p < t` accepts round(target * N) of the N held-out clean clips
    (P(perturbed) (N,)): halfway between the last accepted and the first rejected. Ties can move the share. Compare
    against it in p's dtype (a float32 tensor against the returned Python float is)."""
    p = torch.as_tensor(p_perturbed_held_out)
    if p.dim() != 1 or p.numel() == 0:
        raise ValueError(f"p_perturbed_held_out must be a non-empty (N,) tensor, got shape {tuple(p.shape)}")
    if not 0 <= target_acceptance <= 1:
        raise ValueError(f"target_acceptance must lie in [0, 1], got {target_acceptance}")
    ordered = p.detach().flatten().cpu()
    ordered = (ordered if ordered.is_floating_point() else ordered.float()).sort().values
    k = round(target_acceptance * len(ordered))
    if k == 0:
        return float(ordered[0])
    if k == len(ordered):
        return float(torch.nextafter(ordered[-1], ordered.new_tensor(float("inf"))))
    below, above = ordered[k - 1], ordered[k]
    middle = (below + above) / 2  # in p's own precision, so that `p < threshold` compares what it fitted
    return float(middle if middle > below else above)


# --- the gate in training: against a label prior ----------------------------------------------------------


@dataclass(frozen=True)
class GateVerdict:
    """loss: the gate's training loss (L_self); accepted (B,) bool; p_perturbed (B,); the threshold used."""

    loss: torch.Tensor
    accepted: torch.Tensor
    p_perturbed: torch.Tensor
    threshold: float


def sequence_verdict(
    gate: LabelSequenceGate,
    prior: MarkovLabelPrior,
    pseudo: torch.Tensor,
    key_slot: int | torch.Tensor,
    generator: torch.Generator,
    clips: int = 64,
    target_acceptance: float = 0.9,
) -> tuple[torch.Tensor, float]:
    """The gate's P(perturbed) (B,) for pseudo (B, n, U) 0/1 label sequences, and the threshold that accepts
    `target_acceptance` of `clips` clean sequences drawn fresh from the prior (held out: the gate never trains on
    them), each taking the key slot of a gated clip. The gate sees no evidence (zero logits): the prior has no
    frames. Without gradients, in float32."""
    _check_probabilities("pseudo", pseudo)
    b, n, _ = pseudo.shape
    keys = _key_slots(key_slot, b, n, pseudo.device)
    if b == 0:
        return pseudo.new_zeros(0), 1.0
    held_keys = keys[torch.randint(b, (clips,), generator=generator).to(keys.device)]
    held = prior.sample(clips, n, generator).to(pseudo.device)
    with torch.no_grad(), torch.autocast(pseudo.device.type, enabled=False):
        threshold = fit_threshold(
            gate.p_perturbed(GateInputs(held, torch.zeros_like(held), held_keys)), target_acceptance
        )
        sequence = pseudo.detach().float()
        return gate.p_perturbed(GateInputs(sequence, torch.zeros_like(sequence), keys)), threshold


def prior_gate_step(
    gate: LabelSequenceGate,
    prior: MarkovLabelPrior,
    pseudo: torch.Tensor,
    key_slot: int,
    generator: torch.Generator,
    clips: int = 64,
    target_acceptance: float = 0.9,
    kinds: tuple[str, ...] = KINDS,
) -> GateVerdict:
    """One training step of the gate against the label prior, and its verdict on pseudo (B, n, U) 0/1 labels.

    The gate trains on `clips` clean sequences drawn from the prior and their perturbed copies (`kinds`), with
    no evidence (zero logits), in float32 whatever autocast the caller holds; `sequence_verdict` then judges the
    pseudo labels against a threshold calibrated on a fresh draw.
    """
    n, device = pseudo.shape[1], pseudo.device
    clean = prior.sample(clips, n, generator).to(device)
    with torch.autocast(device.type, enabled=False):
        batch = gate_training_batch(gate_inputs(clean, torch.zeros_like(clean), key_slot), generator, kinds)
        loss = gate_loss(gate(batch.inputs), batch)
    p, threshold = sequence_verdict(gate, prior, pseudo, key_slot, generator, clips, target_acceptance)
    return GateVerdict(loss, p < threshold, p, threshold)
