"""The label-sequence gate (ks_train/ppl_gate.py): perturbations shaped like pseudo-label errors, a gate that
learns to spot them from the sequence and S_a's evidence, and the held-out threshold."""

import pytest
import torch

from ks_train import ppl_gate as pg
from ks_train.label_prior import MarkovLabelPrior
from tests.export.conftest import one_torch_thread

U = 6


@pytest.fixture(autouse=True)
def _one_torch_thread():
    with one_torch_thread():
        yield


def smooth_runs(b: int, n: int, u: int, gen: torch.Generator) -> torch.Tensor:
    """(b, n, u) 0/1 labels: alternating on / off runs of 3 to 8 frames, seen through a random n-frame window
    (a run cut by the window's edge can look shorter)."""
    lengths = torch.randint(3, 9, (b, u, n + 2), generator=gen)
    ends = lengths.cumsum(-1)  # (b, u, S)
    offset = torch.randint(0, 9, (b, u, 1), generator=gen)
    t = offset + torch.arange(n)  # (b, u, n)
    count = (ends[..., None, :] <= t[..., None]).sum(-1)
    start = torch.randint(0, 2, (b, u, 1), generator=gen)
    return ((start + count) % 2).float().transpose(1, 2)


def s_a_logits(labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A noisy per-frame classifier's logits: right most of the time, with a per-track bias and frame noise."""
    b, _, u = labels.shape
    bias = torch.randn(b, 1, u, generator=gen)
    return 2.5 * (2 * labels - 1) + bias + 1.5 * torch.randn(labels.shape, generator=gen)


def runs_of(track: list[int]) -> list[tuple[int, int]]:
    runs, start = [], None
    for t, v in enumerate([*track, 0]):
        if v and start is None:
            start = t
        elif not v and start is not None:
            runs.append((start, t - 1))
            start = None
    return runs


def blocks_of(changed: list[bool]) -> list[tuple[int, int]]:
    return runs_of([int(c) for c in changed])


def shifted_tracks(track: list[int]) -> list[list[int]]:
    """Every track reachable by moving one run by +-1 or +-2 frames, frames beyond the edge replicated."""
    n, out = len(track), []
    for s, e in runs_of(track):
        run = [int(s <= t <= e) for t in range(n)]
        for d in pg.SHIFTS:
            moved = [run[min(max(t - d, 0), n - 1)] for t in range(n)]
            out.append([max(a * (1 - r), m) for a, r, m in zip(track, run, moved, strict=True)])
    return out


def auc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    diff = positive[:, None] - negative[None, :]
    return float(((diff > 0).float() + 0.5 * (diff == 0).float()).mean())


def clips(seed: int, b: int = 200):
    gen = torch.Generator().manual_seed(seed)
    for n in range(5, 10):
        labels = smooth_runs(b, n, U, gen)
        yield labels, torch.randint(0, n, (b,), generator=gen), gen


# --- perturbations ----------------------------------------------------------------------------------------


def check_kind(kind: str, before: torch.Tensor, after: torch.Tensor, key: int, max_len: int) -> None:
    diff = before != after  # (n, U)
    aus = diff.any(0).nonzero()[:, 0].tolist()
    assert len(aus) == 1, f"{kind} changed AUs {aus}"
    assert not diff[key].any(), f"{kind} changed the key slot"
    old, new = before[:, aus[0]].int().tolist(), after[:, aus[0]].int().tolist()
    blocks = blocks_of(diff[:, aus[0]].tolist())
    sizes = [e - s + 1 for s, e in blocks]
    if kind == "shift":
        assert len(blocks) <= 2 and max(sizes) <= 2 and new in shifted_tracks(old), (old, new)
        return
    assert len(blocks) == 1, f"{kind} changed {blocks}"
    (s, e), size = blocks[0], sizes[0]
    assert len(set(old[s : e + 1])) == 1, f"{kind} flipped a block that was not constant"
    outside = [old[t] for t in (s - 1, e + 1) if 0 <= t < len(old)]
    if kind == "flip":
        assert size <= max_len and all(v == old[s] for v in outside), (old, new)
    elif kind == "stretch":
        assert size <= 2 and len(runs_of(new)) == len(runs_of(old)), (old, new)
    else:  # cut: a run loses an end (more than 2 frames) or vanishes
        assert old[s] == 1 and size <= max_len and (size > 2 or len(runs_of(new)) < len(runs_of(old))), (old, new)


@pytest.mark.parametrize("kind", pg.KINDS)
def test_each_kind_changes_a_few_consecutive_frames_of_one_au_and_never_the_key_slot(kind):
    for labels, key, gen in clips(seed=1):
        out, changed = pg.perturb_labels(labels, key, gen, kinds=(kind,), max_len=3)
        assert changed.float().mean() > 0.9, f"{kind} fitted only {changed.float().mean():.2f} of smooth clips"
        assert torch.equal(out[~changed], labels[~changed])
        for i in changed.nonzero()[:, 0].tolist():
            check_kind(kind, labels[i], out[i], int(key[i]), max_len=3)


def test_perturbations_are_deterministic_and_flip_probabilities():
    labels = smooth_runs(64, 7, U, torch.Generator().manual_seed(0))
    probs = (0.1 + 0.8 * labels) * torch.rand(labels.shape, generator=torch.Generator().manual_seed(1)).clamp(0.2)
    a = pg.perturb_labels(probs, 3, torch.Generator().manual_seed(5))
    b = pg.perturb_labels(probs, 3, torch.Generator().manual_seed(5))
    c = pg.perturb_labels(probs, 3, torch.Generator().manual_seed(6))
    assert torch.equal(a.labels, b.labels) and torch.equal(a.changed, b.changed)
    assert not torch.equal(a.labels, c.labels)
    moved = a.labels != probs
    torch.testing.assert_close(a.labels[moved], 1 - probs[moved])


def test_error_patterns_come_from_another_clip_and_spare_the_key_slot():
    pseudo = smooth_runs(4, 5, U, torch.Generator().manual_seed(0))
    reference = torch.zeros(4, 5, U, dtype=torch.bool)
    reference[0, 1:4, 2] = True  # only clip 0 has an error pattern: slots 1..3 of AU 2
    out, found = pg.error_pattern_perturbation(pseudo, reference, 2, torch.Generator().manual_seed(0))
    assert found.tolist() == [False, True, True, True]  # clip 0 may not take its own pattern
    expected = reference[0].clone()
    expected[2] = False  # the key slot
    for i in (1, 2, 3):
        assert torch.equal(out[i] != pseudo[i], expected)
    assert torch.equal(out[0], pseudo[0])
    sa, tt = torch.randn(3, 5, U), torch.randn(3, 5, U)
    assert torch.equal(pg.error_patterns(sa, tt), (sa >= 0) != (tt >= 0))


def test_training_batches_are_balanced_and_pair_each_clean_clip_with_its_perturbed_copy():
    gen = torch.Generator().manual_seed(0)
    labels = smooth_runs(16, 5, U, gen)
    sa = s_a_logits(labels, gen)
    clean = pg.gate_inputs(labels, sa, 1)
    patterns = pg.error_patterns(sa, sa + 3 * torch.randn(sa.shape, generator=gen))
    for batch in (pg.gate_training_batch(clean, gen), pg.gate_training_batch(clean, gen, patterns=patterns)):
        targets, weights = batch.targets, batch.weights
        p = int(targets.sum())
        assert targets[:16].sum() == 0 and p > 12 and len(targets) == 16 + p
        assert weights[targets == 0].sum().item() == pytest.approx(0.5)
        assert weights[targets == 1].sum().item() == pytest.approx(0.5)
        assert torch.equal(batch.inputs.sequence[:16], labels) and (batch.inputs.key_slot == 1).all()


# --- the gate ---------------------------------------------------------------------------------------------


def train_gate(kinds: tuple[str, ...], steps: int = 300, batch: int = 32) -> pg.LabelSequenceGate:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    gate = pg.LabelSequenceGate(U)
    optimiser = torch.optim.Adam(gate.parameters(), lr=1e-2)
    for step in range(steps):
        n = 5 + step % 5
        labels = smooth_runs(batch, n, U, gen)
        clean = pg.gate_inputs(labels, s_a_logits(labels, gen), step % n)
        data = pg.gate_training_batch(clean, gen, kinds=kinds)
        loss = pg.gate_loss(gate(data.inputs), data)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return gate


def test_a_gate_trained_on_shift_and_stretch_spots_cuts_and_flips_it_never_saw():
    gate = train_gate(("shift", "stretch"))
    gen = torch.Generator().manual_seed(123)
    scores = {}
    with torch.no_grad():
        for n in (5, 7, 9):
            labels = smooth_runs(300, n, U, gen)
            clean = pg.gate_inputs(labels, s_a_logits(labels, gen), n // 2)
            clean_p = gate.p_perturbed(clean)
            for kind in ("cut", "flip"):
                out, changed = pg.perturb_labels(labels, clean.key_slot, gen, kinds=(kind,))
                p = gate.p_perturbed(pg.GateInputs(out, clean.evidence, clean.key_slot))
                scores[kind, n] = auc(p[changed], clean_p)
    assert all(s > 0.7 for s in scores.values()), scores


def test_the_threshold_accepts_the_target_share_of_held_out_clips():
    gen = torch.Generator().manual_seed(0)
    adjacent = torch.full((4,), 0.5)
    for i in range(1, 4):  # neighbouring float32 values: no room for a midpoint
        adjacent[i] = torch.nextafter(adjacent[i - 1], torch.tensor(1.0))
    samples = [torch.rand(size, generator=gen) for size in (7, 50, 101)] + [adjacent, adjacent.double()]
    for p in samples:
        for target in (0.0, 0.3, 0.5, 0.8, 0.95, 1.0):
            accepted = (p < pg.fit_threshold(p, target)).double().mean().item()
            assert accepted == round(target * len(p)) / len(p), (len(p), target, accepted)
            assert abs(accepted - target) <= 1 / len(p)


def test_held_out_clips_are_apart_from_the_training_clips():
    train, held = pg.split_held_out(32, 0.25, torch.Generator().manual_seed(0))
    assert len(held) == 8 and sorted(train.tolist() + held.tolist()) == list(range(32))
    assert len(pg.split_held_out(2, 0.1, torch.Generator())[1]) == 1
    assert len(pg.split_held_out(1, 0.5, torch.Generator())[1]) == 0
    labels = torch.zeros(3, 5, U)
    labels[1, 2, 0] = -1
    assert pg.fully_labelled(labels).tolist() == [True, False, True]


def test_wrong_inputs_raise_errors_naming_the_argument():
    gen = torch.Generator()
    labels = torch.zeros(2, 5, U)
    cases = [
        ("labels", lambda: pg.perturb_labels(torch.zeros(5, U), 0, gen)),
        ("labels", lambda: pg.perturb_labels(labels - 1, 0, gen)),  # unknowns
        ("labels", lambda: pg.perturb_labels(torch.zeros(2, 1, U), 0, gen)),  # only the key slot
        ("kinds", lambda: pg.perturb_labels(labels, 0, gen, kinds=("swap",))),
        ("key_slot", lambda: pg.perturb_labels(labels, 5, gen)),
        ("key_slot", lambda: pg.gate_inputs(labels, labels, torch.zeros(3, dtype=torch.long))),
        ("evidence", lambda: pg.gate_inputs(labels, torch.zeros(2, 6, U), 0)),
        ("sequence", lambda: pg.LabelSequenceGate(U + 1)(pg.gate_inputs(labels, labels, 0))),
        ("reference", lambda: pg.error_pattern_perturbation(labels, torch.zeros(2, 4, U), 0, gen)),
        ("tt_logits", lambda: pg.error_patterns(labels, torch.zeros(2, 5))),
        ("p_perturbed_held_out", lambda: pg.fit_threshold(torch.zeros(2, 3), 0.5)),
        ("target_acceptance", lambda: pg.fit_threshold(torch.zeros(3), 1.5)),
        ("fraction", lambda: pg.split_held_out(8, 1.0, gen)),
    ]
    for name, call in cases:
        with pytest.raises(ValueError, match=name):
            call()


# --- the gate in training, against the label prior ---------------------------------------------------------


def prior_trained_gate(prior: MarkovLabelPrior, steps: int = 300) -> pg.LabelSequenceGate:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    gate = pg.LabelSequenceGate(U)
    optimiser = torch.optim.Adam(gate.parameters(), lr=1e-2)
    for _ in range(steps):
        verdict = pg.prior_gate_step(gate, prior, prior.sample(4, 7, gen), 3, gen, clips=64, kinds=("flip",))
        optimiser.zero_grad()
        verdict.loss.backward()
        optimiser.step()
    return gate


def test_the_prior_trained_gate_accepts_the_target_share_of_unseen_clean_sequences_and_rejects_glitches():
    prior = MarkovLabelPrior(torch.full((U,), 0.3), torch.full((U,), 0.95))
    gate = prior_trained_gate(prior)
    gen = torch.Generator().manual_seed(99)  # sequences the gate never saw
    clean = prior.sample(600, 7, gen)
    glitched, changed = pg.perturb_labels(clean, 3, gen, kinds=("flip",))
    with torch.no_grad():
        on_clean = pg.prior_gate_step(gate, prior, clean, 3, gen, clips=512, target_acceptance=0.9)
        on_glitched = pg.prior_gate_step(gate, prior, glitched[changed], 3, gen, clips=512, target_acceptance=0.9)
    assert abs(on_clean.accepted.float().mean().item() - 0.9) < 0.06
    assert on_glitched.accepted.float().mean().item() < 0.6  # 0.37 when written
    assert torch.equal(on_clean.accepted, on_clean.p_perturbed < on_clean.threshold)


def test_the_prior_gate_step_trains_in_float32_under_autocast():
    prior = MarkovLabelPrior(torch.full((U,), 0.3), torch.full((U,), 0.85))
    gate, gen = pg.LabelSequenceGate(U), torch.Generator().manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        verdict = pg.prior_gate_step(gate, prior, prior.sample(5, 7, gen), 3, gen)
    verdict.loss.backward()
    assert verdict.p_perturbed.dtype == torch.float32 and verdict.accepted.shape == (5,)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in gate.parameters())
