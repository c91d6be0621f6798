"""The one output comparison every verification uses: a candidate's arrays against a reference's, Polygraphy style.

onnxruntime against PyTorch (verify.py), the FP16 graphs against FP32 (fp16.py), the TensorRT engines and the
re-checked bundle against onnxruntime's FP32 graphs (export.py) all call `compare` (or `compare_outputs`), so
every check measures its errors the same way and reports them in the same line:

    probs: max abs 1.2e-5, max rel 3.4e-4 (atol 1e-4, rtol 0) OK

An element passes when |candidate - reference| <= atol + rtol * |reference| (numpy.isclose's rule); a NaN or an
infinity in either array fails the comparison and makes its errors infinite. A comparison without a tolerance
is informational: its errors are reported and it never fails. docs/bundle-format.md lists the tolerances.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

REL_FLOOR = 1e-6  # the relative error divides by max(|reference|, REL_FLOOR)


@dataclass(frozen=True)
class Tolerance:
    """An element passes when |candidate - reference| <= atol + rtol * |reference|."""

    atol: float
    rtol: float = 0.0

    def allowed(self, reference: np.ndarray) -> np.ndarray:
        return self.atol + self.rtol * np.abs(reference)

    def __str__(self) -> str:
        return f"atol {_number(self.atol, 0)}, rtol {_number(self.rtol, 0)}"


@dataclass(frozen=True)
class Parity:
    """One output compared: its max absolute and relative errors, the worst element, and the verdict.

    The worst element is the one furthest past its allowance (with no tolerance: the largest absolute error);
    `worst_index` is its index in the array (() for a scalar), `worst_candidate` and `worst_reference` its values.
    """

    name: str
    max_abs: float
    max_rel: float
    worst_index: tuple[int, ...] | None  # None: the arrays are empty
    worst_candidate: float
    worst_reference: float
    tolerance: Tolerance | None  # None: informational, never fails
    ok: bool

    @property
    def judged(self) -> bool:
        return self.tolerance is not None

    def report(self) -> str:
        """'probs: max abs 1.2e-5, max rel 3.4e-4 (atol 1e-4, rtol 0) OK', FAIL naming the worst element."""
        line = f"{self.name}: max abs {_number(self.max_abs)}, max rel {_number(self.max_rel)}"
        if self.tolerance is None:
            return f"{line} (not judged) INFO"
        verdict = (
            "OK"
            if self.ok
            else (
                f"FAIL at {list(self.worst_index or ())}: {self.worst_candidate:.6g} against {self.worst_reference:.6g}"
            )
        )
        return f"{line} ({self.tolerance}) {verdict}"


def _number(value: float, digits: int = 1) -> str:
    """1.2e-5 rather than 1.2e-05; zero as 0, infinities and NaN as Python writes them."""
    if value == 0:
        return "0"
    if not math.isfinite(value):
        return str(value)
    mantissa, exponent = f"{value:.{digits}e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def compare(name: str, candidate: ArrayLike, reference: ArrayLike, tolerance: Tolerance | None) -> Parity:
    """Compare one output of the candidate with the reference's. ValueError when the shapes differ."""
    actual, expected = np.asarray(candidate, np.float64), np.asarray(reference, np.float64)
    if actual.shape != expected.shape:
        raise ValueError(
            f"{name}: candidate of shape {list(actual.shape)} against a reference of shape {list(expected.shape)}"
        )
    if actual.size == 0:
        return Parity(name, 0.0, 0.0, None, math.nan, math.nan, tolerance, True)
    with np.errstate(invalid="ignore", over="ignore"):  # NaN and infinities are judged below, not warned about
        diff = np.abs(actual - expected)
        finite = np.isfinite(actual) & np.isfinite(expected)
        allowed = None if tolerance is None else tolerance.allowed(expected)
        excess = diff if allowed is None else diff / np.maximum(allowed, np.finfo(np.float64).tiny)
        worst = np.unravel_index(int(np.argmax(np.where(finite, excess, np.inf))), diff.shape)
    worst = tuple(int(i) for i in worst)
    if finite.all():
        max_abs = float(diff.max())
        max_rel = float((diff / np.maximum(np.abs(expected), REL_FLOOR)).max())
    else:
        max_abs = max_rel = math.inf
    ok = allowed is None or bool(finite.all() and (diff <= allowed).all())
    return Parity(name, max_abs, max_rel, worst, float(actual[worst]), float(expected[worst]), tolerance, ok)


def compare_outputs(
    candidate: Mapping[str, ArrayLike],
    reference: Mapping[str, ArrayLike],
    tolerance: Tolerance | None | Mapping[str, Tolerance | None],
) -> list[Parity]:
    """Compare each named output of the candidate with the reference's, in the reference's order.

    `tolerance`: one for every output, or one per output name. ValueError when the names differ.
    """
    if set(candidate) != set(reference):
        raise ValueError(f"candidate outputs {sorted(candidate)} against reference outputs {sorted(reference)}")
    tolerances = tolerance if isinstance(tolerance, Mapping) else dict.fromkeys(reference, tolerance)
    return [compare(name, candidate[name], reference[name], tolerances[name]) for name in reference]
