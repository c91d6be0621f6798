import numpy as np
import pytest

from ks_runtime.core.metrics import f1_report


def test_f1_against_a_hand_computed_case():
    # AU A: tp=2, fp=1, fn=1 -> F1 = 4/6. AU B: one unknown label ignored; tp=1, fp=0, fn=1 -> 2/3.
    probs = np.array([[0.9, 0.8], [0.7, 0.1], [0.6, 0.9], [0.2, 0.3], [0.1, 0.9]])
    labels = np.array([[1, 1], [1, 1], [0, -1], [1, 0], [0, 0]])
    probs[4, 1] = 0.2
    report = f1_report(probs, labels, ["A", "B"])
    np.testing.assert_allclose(report.f1, [4 / 6, 2 / 3])
    np.testing.assert_array_equal(report.support, [5, 4])
    np.testing.assert_allclose(report.positive_rate, [3 / 5, 2 / 4])
    np.testing.assert_allclose(report.floor, [2 * 0.6 / 1.6, 2 * 0.5 / 1.5])
    assert report.mean == pytest.approx((4 / 6 + 2 / 3) / 2)


def test_all_positive_prediction_scores_the_floor():
    labels = (np.random.default_rng(1).random((200, 3)) < [0.1, 0.4, 0.7]).astype(int)
    report = f1_report(np.ones((200, 3)), labels, ["a", "b", "c"])
    np.testing.assert_allclose(report.f1, report.floor)


def test_no_positives_and_no_predictions_scores_zero_and_shapes_are_checked():
    report = f1_report(np.zeros((3, 1)), np.zeros((3, 1), int), ["a"])
    assert report.f1[0] == 0.0
    with pytest.raises(ValueError):
        f1_report(np.zeros((3, 2)), np.zeros((3, 1)), ["a"])
