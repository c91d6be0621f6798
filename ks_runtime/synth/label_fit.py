"""Fitting SynthAU's label model (labels.py) to its targets: a threshold and a time constant per rendered AU,
and the innovation correlations of the target pairs. The results are stored in labels._FITTED; re-run with
`python -m ks_runtime.synth.label_fit`, which prints them to paste there (checked by `pytest -m slow -k fit`).

Stationary occurrence statistics depend only on the Gaussian mixture (latent + subject + sequence covariance,
shifted by each task's effects), so thresholds and pair correlations are solved exactly from it; the time
constants are then fitted by simulation to the median run lengths.
"""

from __future__ import annotations

import logging
import math
import textwrap

import numpy as np

from ks_runtime.core.au import BP4D, DISFA, AUSet
from ks_runtime.synth.labels import (
    N_TASKS,
    RENDERED_AUS,
    SEQUENCE_SD,
    TARGETS,
    UNLABELLED_RATES,
    UNLABELLED_RUNS,
    FittedConstants,
    build_label_model,
    design_correlation,
    draw_label_traits,
    fit_key,
    kernel_overlap,
    sample_labels,
    subject_covariance,
    task_effects,
)
from ks_runtime.synth.stats import median_run_lengths

log = logging.getLogger(__name__)


def _norm_cdf(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF (Numerical Recipes' erfc, fractional error < 1.2e-7), pure numpy."""
    z = np.abs(np.asarray(x, dtype=np.float64)) / math.sqrt(2.0)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = (
        -z * z
        - 1.26551223
        + t
        * (
            1.00002368
            + t
            * (
                0.37409196
                + t
                * (
                    0.09678418
                    + t
                    * (
                        -0.18628806
                        + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))
                    )
                )
            )
        )
    )
    erfc = t * np.exp(poly)
    return np.where(np.asarray(x) >= 0, 1.0 - 0.5 * erfc, 0.5 * erfc)


_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(48)


def _both_above(a: np.ndarray, b: np.ndarray, rho: float) -> np.ndarray:
    """P(X > a, Y > b) for standard bivariate normals with correlation rho (Plackett's integral over rho)."""
    a, b = np.asarray(a, dtype=np.float64)[..., None], np.asarray(b, dtype=np.float64)[..., None]
    r = 0.5 * rho * (_GL_NODES + 1.0)  # [Q] nodes on [0, rho]
    one_minus = 1.0 - r * r
    exponent = -(a * a - 2.0 * r * a * b + b * b) / (2.0 * one_minus)  # [..., Q]
    density = np.exp(exponent) / (2 * np.pi * np.sqrt(one_minus))
    integral = 0.5 * rho * (density * _GL_WEIGHTS).sum(axis=-1)
    return _norm_cdf(-a[..., 0]) * _norm_cdf(-b[..., 0]) + integral


def total_covariance(frame_correlation: np.ndarray) -> np.ndarray:
    """Covariance [R, R] of latent + subject + sequence offsets, the same in every task."""
    return frame_correlation + subject_covariance() + np.diag(np.full(len(RENDERED_AUS), SEQUENCE_SD**2))


def mixture_rates(thresholds: np.ndarray, covariance: np.ndarray) -> np.ndarray:
    """Each AU's active fraction [R] over the equal-weight mixture of tasks."""
    sd = np.sqrt(np.diag(covariance))
    return _norm_cdf((task_effects() - thresholds) / sd).mean(axis=0)


def mixture_phi(i: int, j: int, thresholds: np.ndarray, covariance: np.ndarray) -> float:
    """phi of AUs at columns i, j over the mixture of tasks."""
    sd = np.sqrt(np.diag(covariance))
    effects = task_effects()
    a = (thresholds[i] - effects[:, i]) / sd[i]  # [K]
    b = (thresholds[j] - effects[:, j]) / sd[j]
    p_ab = float(_both_above(a, b, covariance[i, j] / (sd[i] * sd[j])).mean())
    p_a, p_b = float(_norm_cdf(-a).mean()), float(_norm_cdf(-b).mean())
    return (p_ab - p_a * p_b) / math.sqrt(p_a * (1 - p_a) * p_b * (1 - p_b))


def _bisect(function, target: float, lo: float, hi: float, what: str, steps: int = 60) -> float:
    """The x in [lo, hi] where an increasing function reaches target."""
    if not function(lo) <= target <= function(hi):
        reach = f"[{function(lo):.4f}, {function(hi):.4f}]"
        raise ValueError(f"cannot fit {what}: target {target} outside the reachable {reach}")
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if function(mid) < target else (lo, mid)
    return 0.5 * (lo + hi)


def fit_thresholds(key: str) -> np.ndarray:
    """Thresholds [R] giving each rendered AU its target (or designed) rate over the subject-task mixture."""
    rates = {**TARGETS[key].rates, **UNLABELLED_RATES[key]}
    sd = np.sqrt(np.diag(total_covariance(design_correlation())))  # variances do not depend on the pairs
    effects = task_effects()
    thresholds = np.zeros(len(RENDERED_AUS))
    for i, au in enumerate(RENDERED_AUS):
        # The rate falls as the threshold rises; bisect on the negated threshold.
        thresholds[i] = -_bisect(
            lambda m, i=i: float(_norm_cdf((effects[:, i] + m) / sd[i]).mean()),
            rates[au],
            -12.0,
            12.0,
            f"threshold of AU{au}",
        )
    return thresholds


def fit_pair_correlations(key: str, thresholds: np.ndarray, taus: np.ndarray) -> tuple[tuple[int, int, float], ...]:
    """Innovation correlations putting each target pair's phi over the subject-task mixture on target."""
    correlation = design_correlation()
    overlap = kernel_overlap(taus)
    fitted = []
    for (a, b), target in TARGETS[key].phi.items():
        i, j = RENDERED_AUS.index(a), RENDERED_AUS.index(b)

        def phi_at(value: float, i: int = i, j: int = j) -> float:
            trial = correlation.copy()
            trial[i, j] = trial[j, i] = value
            return mixture_phi(i, j, thresholds, total_covariance(trial * overlap))

        fitted.append((a, b, round(_bisect(phi_at, target, -0.95, 0.95, f"correlation of AU{a}/AU{b}"), 4)))
    return tuple(fitted)


def fit_taus(
    key: str, thresholds: np.ndarray, n_sequences: int = 3000, frames: int = 500, iterations: int = 6, seed: int = 12345
) -> np.ndarray:
    """Time constants [R] whose simulated median run lengths hit the targets (secant steps in log-log space).

    An AU's runs depend only on its own tau and thresholds, so each AU is solved on its own and keeps the tau
    that came closest; the draws reuse one seed, which makes the fit deterministic.
    """
    runs = {**TARGETS[key].median_runs, **UNLABELLED_RUNS[key]}
    log_target = np.log([runs[au] for au in RENDERED_AUS])
    log_tau = log_target - np.log(2.5)  # a first guess; run length is roughly proportional to tau
    best_tau, best_error = log_tau.copy(), np.full(len(log_tau), np.inf)
    slope = np.ones_like(log_tau)  # d log(run) / d log(tau): 1 unless the sequence's end truncates runs
    previous = None
    everything = AUSet("rendered", RENDERED_AUS)  # measure the unlabelled AUs' runs too
    for step in range(iterations):
        model = build_label_model(everything, FittedConstants(tuple(thresholds), (), tuple(np.exp(log_tau))))
        occurrences = []
        for s in range(n_sequences):
            rng = np.random.default_rng(np.random.SeedSequence([seed, s]))
            traits = draw_label_traits(model, rng)
            occurrences.append(sample_labels(model, traits, s % N_TASKS, frames, rng).occurrence)
        log_measured = np.log(np.maximum(median_run_lengths(occurrences), 1.0))
        error = np.abs(log_measured - log_target)
        better = error < best_error
        best_tau[better], best_error[better] = log_tau[better], error[better]
        log.info("tau fit step %d: worst |log(run / target)| %.3f", step, float(error.max()))
        if previous is not None:
            moved = log_tau - previous[0]
            ok = np.abs(moved) > 0.02  # smaller steps make the slope mostly the medians' integer rounding
            slope[ok] = np.clip((log_measured - previous[1])[ok] / moved[ok], 0.5, 1.2)
        previous = (log_tau.copy(), log_measured)
        log_tau = log_tau + (log_target - log_measured) / slope
    log.info("tau fit: worst |log(run / target)| kept %.3f", float(best_error.max()))
    return np.exp(best_tau)


def fit_label_model(au_set: AUSet) -> FittedConstants:
    """Fit thresholds, time constants and target-pair correlations for `au_set`; deterministic, and slow (the
    time constants are fitted by simulation)."""
    key = fit_key(au_set)
    thresholds = np.round(fit_thresholds(key), 4)
    taus = np.round(fit_taus(key, thresholds), 2)
    pairs = fit_pair_correlations(key, thresholds, taus)
    return FittedConstants(
        thresholds=tuple(float(t) for t in thresholds), pair_correlations=pairs, taus=tuple(float(t) for t in taus)
    )


def format_fitted(name: str, fitted: FittedConstants) -> str:
    """The constants as the source text of one labels._FITTED entry (wrapped at 110 columns)."""

    def wrapped(label: str, values: tuple) -> str:
        text = f"{label}=({', '.join(repr(v) for v in values)}),"
        indent = " " * (10 + len(label))  # under the first value
        return textwrap.fill(text, width=110, initial_indent=" " * 8, subsequent_indent=indent)

    return "\n".join(
        [
            f'    "{name}": FittedConstants(',
            wrapped("thresholds", fitted.thresholds),
            wrapped("pair_correlations", fitted.pair_correlations),
            wrapped("taus", fitted.taus),
            "    ),",
        ]
    )


def main() -> None:
    """Re-run the fit for both sets and print the constants to paste into labels._FITTED."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for au_set in (BP4D, DISFA):
        print(format_fitted(au_set.name, fit_label_model(au_set)))  # noqa: T201 - a developer tool's output


if __name__ == "__main__":
    main()
