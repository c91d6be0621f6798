"""L_PL's targets (`loss.pl_target`: TT's pseudo labels, or the ceilings `truth` and `key_label`) and the per-epoch
pseudo-label counts, on hand-made batches."""

import math

import pytest
import torch

from ks_runtime.core.errors import ConfigError
from ks_train import losses, methods
from ks_train.config import ExperimentConfig, LossConfig, load_config
from ks_train.data.clips import ClipBatch
from ks_train.model.ks import KSConfig

U, N, KEY = 3, 3, 1


def hand_batch() -> ClipBatch:
    """4 clips of 3 slots, key slot 1: clips 0 and 1 labelled at the key only, clips 2 and 3 with no label."""
    torch.manual_seed(0)
    truth = torch.randint(0, 2, (4, N, U)).float()
    truth[2, 0, 1] = losses.UNKNOWN  # a hidden label the dataset does not know either
    labelled = torch.zeros(4, N, dtype=torch.bool)
    labelled[:2, KEY] = True
    labels = torch.where(labelled[..., None], truth, torch.full_like(truth, losses.UNKNOWN))
    frames = torch.randn(4, N, 3, 32, 32)
    return ClipBatch(frames, labels, truth, labelled, KEY, torch.tensor([True, True, False, False]))


def run_step(monkeypatch, pl_target: str) -> dict:
    """One semi-supervised KS step on the hand batch; returns what pl_targets and L_PL were given."""
    seen = {}
    real_targets, real_loss = losses.pl_targets, losses.loss_pl

    def spy_targets(kind, tt_logits, labels, truth, key_slot, accepted):
        seen.update(kind=kind, tt=tt_logits.detach(), gate=accepted)
        return real_targets(kind, tt_logits, labels, truth, key_slot, accepted)

    def spy_loss(sa_logits, targets, unlabelled_slots, accepted, weights):
        seen.update(targets=targets, unlabelled=unlabelled_slots, trained=accepted)
        seen["L_PL"] = real_loss(sa_logits, targets, unlabelled_slots, accepted, weights)
        return seen["L_PL"]

    monkeypatch.setattr(losses, "pl_targets", spy_targets)
    monkeypatch.setattr(losses, "loss_pl", spy_loss)
    cfg = ExperimentConfig(model=KSConfig(n_aus=U, clip_len=N), loss=LossConfig(pl_target=pl_target, gate="ppl"))
    method = methods.create_method(cfg)
    torch.manual_seed(0)
    result = method.train_step(method.build_model(), hand_batch(), losses.AUWeights.uniform(U), True)
    assert torch.isfinite(result.loss) and seen["kind"] == pl_target
    return seen


def test_truth_targets_are_the_hidden_labels_at_the_unlabelled_slots_of_every_clip(monkeypatch):
    seen = run_step(monkeypatch, "truth")
    batch = hand_batch()
    unlabelled = ~batch.labelled_slots
    assert torch.equal(seen["unlabelled"], unlabelled)
    assert torch.equal(seen["targets"][unlabelled], batch.truth[unlabelled])
    assert seen["trained"].all()  # the gate is bypassed, whatever it said


def test_truth_targets_give_zero_l_pl_when_s_a_predicts_them():
    batch = hand_batch()
    gate = torch.tensor([False, True, False, True])
    targets, trained = losses.pl_targets("truth", torch.randn(4, N, U), batch.labels, batch.truth, KEY, gate)
    assert trained.all()
    perfect = torch.where(batch.truth == 1, 40.0, -40.0)  # the unknown label is masked, not scored as negative
    loss = losses.loss_pl(perfect, targets, ~batch.labelled_slots, trained, losses.AUWeights.uniform(U))
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    wrong = losses.loss_pl(-perfect, targets, ~batch.labelled_slots, trained, losses.AUWeights.uniform(U))
    assert wrong.item() > 30


def test_key_label_targets_copy_the_key_label_to_the_clip_where_the_key_is_labelled(monkeypatch):
    seen = run_step(monkeypatch, "key_label")
    batch = hand_batch()
    assert seen["trained"].tolist() == [True, True, False, False]
    for clip in (0, 1):
        for slot in range(N):
            assert torch.equal(seen["targets"][clip, slot], batch.truth[clip, KEY])
    assert (seen["targets"][2:] == losses.UNKNOWN).all()  # no kept key label: nothing to copy


def test_tt_targets_are_tts_pseudo_labels_for_the_clips_the_gate_accepts(monkeypatch):
    seen = run_step(monkeypatch, "tt")
    assert torch.equal(seen["targets"], losses.pseudo_labels(seen["tt"]))
    assert torch.equal(seen["trained"], seen["gate"])


def test_an_unknown_pl_target_is_refused_naming_the_field():
    with pytest.raises(ConfigError, match=r"loss.pl_target must be one of \('tt', 'truth', 'key_label'\)"):
        load_config("synth-cpu", ['loss.pl_target="oracle"'])
    with pytest.raises(ConfigError, match="loss.pl_target"):
        ExperimentConfig(loss=LossConfig(pl_target="teacher"))
    with pytest.raises(ValueError, match="loss.pl_target"):
        losses.pl_targets("teacher", *([torch.zeros(1, N, U)] * 3), KEY, torch.ones(1, dtype=torch.bool))
    assert load_config("synth-cpu").loss.pl_target == "tt"


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_the_confidence_gate_at_the_same_share_scores_the_most_confident_clips():
    """Slot 0 labelled, slot 1 not; two AUs. PPL accepts clip 0 (2 of 2 right) and clip 3, which has no unlabelled
    slot and so counts for nothing. The most confident clip with an unlabelled slot is clip 1 (1 of 2 right)."""
    tt = torch.zeros(4, 2, 2)  # 4 clips, 2 slots, 2 AUs
    tt[0, 1] = torch.tensor([0.1, -0.1])  # p 0.52 / 0.48: barely confident; pseudo labels (1, 0)
    tt[1, 1] = torch.tensor([5.0, 5.0])  # the most confident; pseudo labels (1, 1)
    tt[2, 1] = torch.tensor([2.0, -2.0])  # pseudo labels (1, 0)
    tt[3] = 9.0  # very confident, but nothing unlabelled
    truth = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 1.0]])[:, None, :].repeat(1, 2, 1)
    unlabelled = torch.tensor([[False, True], [False, True], [False, True], [False, False]])
    accepted = torch.tensor([True, False, False, True])
    counts = methods.pseudo_label_counts(tt, truth, unlabelled, accepted)
    assert counts["clips_with_unlabelled"] == 3 and counts["clips_accepted"] == 1
    assert (counts["pl_correct_all"], counts["pl_total_all"]) == (4, 6)
    assert (counts["pl_correct_accepted"], counts["pl_total_accepted"]) == (2, 2)
    assert (counts["pl_correct_confidence"], counts["pl_total_confidence"]) == (1, 2)  # clip 1 only
    summary = methods.summarise_counts(counts)
    assert summary["pl_acc_accepted"] == 1.0 and summary["pl_acc_confidence_same_share"] == 0.5
    assert summary["ppl_accept_rate"] == pytest.approx(1 / 3) and summary["pl_acc_all"] == pytest.approx(4 / 6)

    two = methods.pseudo_label_counts(tt, truth, unlabelled, torch.tensor([True, False, True, False]))
    assert (two["pl_correct_confidence"], two["pl_total_confidence"]) == (2, 4)  # clips 1 and 2: 1 + 1 right
    none = methods.summarise_counts(methods.pseudo_label_counts(tt, truth, unlabelled, torch.zeros(4, dtype=bool)))
    assert math.isnan(none["pl_acc_confidence_same_share"]) and math.isnan(none["pl_acc_accepted"])


def test_most_confident_picks_by_confidence_among_the_eligible_ties_to_the_earlier():
    confidence = torch.tensor([0.6, 0.9, 0.6, 0.99])
    eligible = torch.tensor([True, True, True, False])
    assert methods.most_confident(confidence, 2, eligible).tolist() == [True, True, False, False]
    assert methods.most_confident(confidence, 0, eligible).tolist() == [False] * 4
