"""ks_export/parity.py: the one comparison every verification uses (onnxruntime against PyTorch, FP16 against
FP32, TensorRT engines and `ks-export verify` against onnxruntime's FP32 graphs), and its report line."""

import math

import numpy as np
import pytest

from ks_export.parity import Tolerance, compare, compare_outputs

PROBS = Tolerance(atol=1e-4)


def reference():
    return np.linspace(0.05, 0.95, 12, dtype=np.float32).reshape(3, 4)


def test_equal_arrays_pass_with_zero_error():
    result = compare("probs", reference(), reference(), PROBS)
    assert result.ok and result.max_abs == 0.0 and result.max_rel == 0.0
    assert result.report() == "probs: max abs 0, max rel 0 (atol 1e-4, rtol 0) OK"


def test_the_report_line_is_polygraphy_style():
    result = compare("probs", np.array([0.5 + 1.2e-5]), np.array([0.5]), Tolerance(atol=1e-4, rtol=1e-3))
    assert result.report() == "probs: max abs 1.2e-5, max rel 2.4e-5 (atol 1e-4, rtol 1e-3) OK"


def test_one_element_past_the_tolerance_fails_and_is_named():
    candidate = reference().copy()
    candidate[1, 2] += 2e-4
    candidate[0, 0] += 0.5e-4  # within tolerance: not the worst
    result = compare("probs", candidate, reference(), PROBS)
    assert not result.ok
    assert result.worst_index == (1, 2)
    assert result.worst_candidate == pytest.approx(candidate[1, 2]) and result.worst_reference == reference()[1, 2]
    assert result.max_abs == pytest.approx(2e-4, rel=1e-3)
    assert result.report().startswith("probs: max abs 2.0e-4, max rel ")
    assert "(atol 1e-4, rtol 0) FAIL at [1, 2]: " in result.report()


def test_an_error_within_the_tolerance_passes():
    result = compare("probs", reference() + 0.9e-4, reference(), PROBS)
    assert result.ok and 0 < result.max_abs <= 1e-4


def test_the_relative_tolerance_scales_with_the_reference():
    logits = np.array([100.0, -0.01])
    off = logits + np.array([5e-3, 0.0])  # 5e-3 on 100: 5e-5 relative
    assert compare("logits", off, logits, Tolerance(atol=1e-4, rtol=1e-4)).ok
    strict = compare("logits", off, logits, Tolerance(atol=1e-4))
    assert not strict.ok and strict.worst_index == (0,)
    assert strict.max_rel == pytest.approx(5e-5)


def test_the_worst_element_is_the_one_furthest_past_its_allowance():
    logits = np.array([1000.0, 0.0])
    off = logits + np.array([0.05, 0.002])  # 0.05 is within 1e-4 + 1e-4 * 1000; 0.002 is not within 1e-4
    result = compare("logits", off, logits, Tolerance(atol=1e-4, rtol=1e-4))
    assert not result.ok and result.worst_index == (1,) and result.max_abs == pytest.approx(0.05)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_value_fails_with_infinite_errors(bad):
    candidate = reference().copy()
    candidate[2, 3] = bad
    result = compare("probs", candidate, reference(), PROBS)
    assert not result.ok and math.isinf(result.max_abs) and math.isinf(result.max_rel)
    assert result.worst_index == (2, 3) and "FAIL at [2, 3]" in result.report()
    assert not compare("probs", reference(), candidate, PROBS).ok  # in the reference too


def test_a_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match=r"probs: candidate of shape \[3, 4\] against a reference of shape \[4, 3\]"):
        compare("probs", reference(), reference().T, PROBS)


def test_without_a_tolerance_the_comparison_is_informational():
    result = compare("probs", reference() + 0.3, reference(), None)
    assert result.ok and not result.judged and result.max_abs == pytest.approx(0.3)
    assert result.report().endswith("(not judged) INFO")


def test_empty_arrays_pass():
    result = compare("probs", np.zeros((0, 4)), np.zeros((0, 4)), PROBS)
    assert result.ok and result.max_abs == 0.0 and result.worst_index is None


def test_named_outputs_are_compared_in_the_reference_order_with_their_tolerances():
    ref = {"sa_logits": np.array([10.0]), "probs": np.array([0.5])}
    got = {"probs": np.array([0.5003]), "sa_logits": np.array([10.0005])}
    results = compare_outputs(got, ref, {"sa_logits": Tolerance(1e-4, 1e-4), "probs": PROBS})
    assert [r.name for r in results] == ["sa_logits", "probs"]
    assert [r.ok for r in results] == [True, False]
    assert [r.ok for r in compare_outputs(got, ref, Tolerance(atol=1e-3))] == [True, True]


def test_named_outputs_must_match():
    with pytest.raises(ValueError, match=r"candidate outputs \['probs'\] against reference outputs \['logits'\]"):
        compare_outputs({"probs": np.zeros(2)}, {"logits": np.zeros(2)}, PROBS)
