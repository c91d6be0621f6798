import math

import numpy as np
import pytest
import torch

from ks_train import losses


def bce(logit, target):
    p = 1 / (1 + math.exp(-logit))
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


def test_inverse_rate_weights_favour_rare_aus_and_ignore_unknowns():
    labels = np.array([[1, 1], [0, 1], [0, 1], [0, 1], [-1, 0]])
    w = losses.inverse_rate_weights(labels)
    # rates 1/4 and 4/5 -> inverse 4 and 1.25, normalised to mean 1
    np.testing.assert_allclose(w, np.array([4, 1.25]) / 2.625, rtol=1e-6)


def test_balanced_positive_weights_are_the_odds_against():
    labels = np.array([[1, 1], [0, 1], [0, 1], [0, 1], [-1, 0]])
    w = losses.au_weights(labels, per_au="none", positive="balanced")
    np.testing.assert_allclose(w.positive.numpy(), [3.0, 0.25], rtol=1e-6)
    np.testing.assert_allclose(w.per_au.numpy(), [1.0, 1.0])
    rare = losses.au_weights(labels, per_au="none", positive="rare")  # a frequent AU's positives keep 1
    np.testing.assert_allclose(rare.positive.numpy(), [3.0, 1.0], rtol=1e-6)


def test_loss_a_masks_unknown_labels_and_weights_by_au_and_class():
    logits = torch.tensor([[[2.0, -1.0], [0.5, 0.0]]])  # (B=1, n=2, U=2)
    labels = torch.tensor([[[1.0, -1.0], [0.0, 1.0]]])
    weights = losses.AUWeights(per_au=torch.tensor([2.0, 0.5]), positive=torch.tensor([3.0, 4.0]))
    expected = (2 * 3 * bce(2.0, 1) + 2 * bce(0.5, 0) + 0.5 * 4 * bce(0.0, 1)) / 3
    assert losses.loss_a(logits, labels, weights).item() == pytest.approx(expected, rel=1e-6)
    assert losses.loss_t(logits, labels, weights).item() == pytest.approx(expected, rel=1e-6)


def test_bf16_logits_are_scored_in_fp32():
    # Under CPU autocast the logits arrive in bf16; a bf16 mask sum would count 257 entries as 256.
    logits = torch.zeros(1, 257, 1, dtype=torch.bfloat16)
    labels = torch.zeros(1, 257, 1)
    labels[0, 0, 0] = 1.0
    weights = losses.AUWeights(per_au=torch.ones(1), positive=torch.tensor([257.0]))
    value = losses.loss_a(logits, labels, weights)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(math.log(2) * (257 + 256) / 257, rel=1e-6)


def test_nothing_known_gives_zero_not_nan():
    logits = torch.zeros(2, 3, 4)
    assert losses.loss_a(logits, torch.full((2, 3, 4), -1.0), losses.AUWeights.uniform(4)).item() == 0.0


def test_loss_skd_targets_detached_teacher_probabilities_on_labelled_clips():
    student = torch.tensor([[0.3, -0.2], [5.0, 5.0]], requires_grad=True)
    teacher = torch.tensor([[1.0, -2.0], [0.0, 0.0]], requires_grad=True)
    loss = losses.loss_skd(student, teacher, torch.tensor([True, False]))
    p1, p2 = 1 / (1 + math.exp(-1.0)), 1 / (1 + math.exp(2.0))
    assert loss.item() == pytest.approx((bce(0.3, p1) + bce(-0.2, p2)) / 2, rel=1e-6)
    loss.backward()
    assert teacher.grad is None or torch.all(teacher.grad == 0)


def test_loss_pl_uses_hard_tt_labels_on_unlabelled_slots_of_accepted_clips():
    sa = torch.tensor([[[0.2, -0.4], [1.0, 1.0]], [[3.0, 3.0], [3.0, 3.0]]], requires_grad=True)
    tt = torch.tensor([[[-0.1, 0.7], [9.0, 9.0]], [[-9.0, -9.0], [-9.0, -9.0]]], requires_grad=True)
    unlabelled = torch.tensor([[True, False], [True, True]])
    accepted = torch.tensor([True, False])
    loss = losses.loss_pl(sa, losses.pseudo_labels(tt), unlabelled, accepted, losses.AUWeights.uniform(2))
    # only clip 0, slot 0 counts: pseudo labels (0, 1)
    assert loss.item() == pytest.approx((bce(0.2, 0) + bce(-0.4, 1)) / 2, rel=1e-6)
    loss.backward()
    assert tt.grad is None or torch.all(tt.grad == 0)


def test_pseudo_positives_can_drop_the_positive_class_weight():
    sa = torch.tensor([[[0.3, -0.2]]])
    tt = torch.tensor([[[2.0, 2.0]]])  # pseudo labels (1, 1)
    weights = losses.AUWeights(per_au=torch.tensor([2.0, 0.5]), positive=torch.tensor([4.0, 9.0]))
    plain = weights.without_positive()
    torch.testing.assert_close(plain.per_au, weights.per_au)
    mask = torch.tensor([[True]]), torch.tensor([True])
    expected = (2 * bce(0.3, 1) + 0.5 * bce(-0.2, 1)) / 2
    targets = losses.pseudo_labels(tt)
    assert losses.loss_pl(sa, targets, *mask, plain).item() == pytest.approx(expected, rel=1e-6)
    assert losses.loss_pl(sa, targets, *mask, weights).item() == pytest.approx(
        (2 * 4 * bce(0.3, 1) + 0.5 * 9 * bce(-0.2, 1)) / 2, rel=1e-6
    )


def test_loss_pl_masks_unknown_targets():
    sa = torch.tensor([[[0.2, -0.4]]])
    targets = torch.tensor([[[1.0, -1.0]]])  # the second AU's hidden label is unknown
    loss = losses.loss_pl(sa, targets, torch.tensor([[True]]), torch.tensor([True]), losses.AUWeights.uniform(2))
    assert loss.item() == pytest.approx(bce(0.2, 1), rel=1e-6)


def test_loss_self_separates_clean_from_perturbed():
    clean = torch.tensor([-2.0, 0.0])
    perturbed = torch.tensor([1.0, 3.0])
    expected = (bce(-2.0, 0) + bce(0.0, 0) + bce(1.0, 1) + bce(3.0, 1)) / 4
    assert losses.loss_self(clean, perturbed).item() == pytest.approx(expected, rel=1e-6)
