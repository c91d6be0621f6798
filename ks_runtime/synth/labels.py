"""SynthAU labels: a smooth, correlated latent process per subject x task, thresholded into AU occurrence.

Each AU's latent z_i is white noise smoothed by a two-sided exponential kernel with the AU's own time
constant tau_i: a critically damped second-order OU process (Matern-3/2), whose level crossings are clean,
unlike a raw OU process that chatters around a threshold. The white noise is correlated across AUs
(correlation C), so every frame is N(0, C * kappa), kappa_ij = 2 sqrt(tau_i tau_j) / (tau_i + tau_j) being
the kernels' overlap, while each AU keeps exactly its own time course: its run lengths depend only on its own
tau and thresholds. AU i's intensity is a smooth clip of GAIN * (z_i + offsets - threshold_i) into [0, 5];
it occurs where the intensity reaches OCCURRENCE_LEVEL (as DISFA's ">= 2"), which leaves ambiguous
low-intensity frames at onsets and offsets. Offsets come from the subject (correlated across AUs), the task
(through shared factors: smile, brow raise, brow lower, lip press, ...) and the sequence.

Thresholds, time constants and the innovation correlations of the target pairs are fitted to the BP4D /
DISFA figures of SYNTH_AU.md by `fit_label_model`; the numbers are stored in `_FITTED`, so the model is fixed
by the code (re-run the fit: `python -m ks_runtime.synth.labels`; test: `pytest -m slow -k fit`).
"""

from __future__ import annotations

import functools
import logging
import math
import textwrap
from dataclasses import dataclass, field

import numpy as np

from ks_runtime.core.au import BP4D, DISFA, AUSet

log = logging.getLogger(__name__)

# Every AU the face can show, in render order; both label sets render all of them, so unlabelled AUs
# (AU9/25/26 under BP4D, AU7/10/14/... under DISFA) still move the face without a label.
RENDERED_AUS: tuple[int, ...] = (1, 2, 4, 6, 7, 9, 10, 12, 14, 15, 17, 23, 24, 25, 26)
OCCURRENCE_LEVEL = 2.0
INTENSITY_MAX = 5.0
GAIN = 2.0  # intensity units per latent standard deviation [R]
SOFTNESS = 3.0  # sharpness of the soft clip at 0 and 5
REFERENCE_FPS = 25.0  # time constants are stored in frames at this rate
TEMPO_SD = 0.2  # log-sd of a subject's tempo (some people hold expressions longer) [R]
SEQUENCE_SD = 0.35  # per-sequence offset sd in latent units: a subject is not the same in every task [R]
N_TASKS = 8
TASK_NAMES = ("pleasant chat", "sad", "startle", "embarrassment", "fear", "pain", "anger", "disgust")


# ---------------------------------------------------------------------------------------------------------
# Targets: the one table of what the labels should look like (stats.py compares against it).

def phi_from_conditional(p_a_given_b: float, p_a: float, p_b: float) -> float:
    """phi of two binary variables from P(a | b) and the marginals."""
    p_ab = p_a_given_b * p_b
    return (p_ab - p_a * p_b) / math.sqrt(p_a * (1 - p_a) * p_b * (1 - p_b))


@dataclass(frozen=True)
class LabelTargets:
    """What one AU set's labels should show; gated rows carry a tolerance, the rest are for information."""

    rates: dict[int, float]
    phi: dict[tuple[int, int], float]  # gated, +-phi_tolerance
    median_runs: dict[int, float]  # frames at 25 fps, gated within +-run_tolerance (relative)
    conditionals: dict[tuple[int, int], float] = field(default_factory=dict)  # (a, b): P(a | b), information
    none_fraction: float | None = None
    top_combos: dict[tuple[int, ...], float] = field(default_factory=dict)  # exact active set: fraction
    rate_tolerance: float = 0.02
    phi_tolerance: float = 0.05
    run_tolerance: float = 0.20


_BP4D_RATES = {1: .211, 2: .171, 4: .203, 6: .461, 7: .549, 10: .594, 12: .562, 14: .466, 15: .169,
               17: .343, 23: .165, 24: .151}
TARGETS: dict[str, LabelTargets] = {
    "bp4d": LabelTargets(
        rates=_BP4D_RATES,
        phi={(6, 12): .54, (1, 2): .46, (4, 12): -.26,
             # SYNTH_AU.md states this pair as P(17 | 24) = .81; with the marginals that is phi ~ .415.
             (17, 24): round(phi_from_conditional(.81, _BP4D_RATES[17], _BP4D_RATES[24]), 3)},
        median_runs={1: 32, 2: 32, 4: 32, 6: 82, 7: 77, 10: 87, 12: 122, 14: 62, 15: 20, 17: 20, 23: 20,
                     24: 20},
        conditionals={(12, 6): .85, (6, 12): .70, (2, 1): .51, (1, 2): .63, (12, 4): .30, (17, 24): .81},
        none_fraction=.079,
        top_combos={(): .079, (6, 7, 10, 12, 14): .057, (6, 7, 10, 12): .047, (4,): .024},
    ),
    "disfa": LabelTargets(
        rates={1: .050, 2: .043, 4: .152, 6: .079, 9: .042, 12: .129, 25: .277, 26: .088},
        # [R] our choices, not measured here: DISFA's brows and smiles co-occur strongly, lips-part goes with
        # jaw-drop, and brow-lowering avoids smiling (bounded by the low rates: phi >= -.16 for AU4/AU12).
        phi={(1, 2): .45, (6, 12): .45, (25, 26): .35, (4, 12): -.12},
        # [R] durations at 25 fps: DISFA's spontaneous expressions while watching video are long.
        median_runs={1: 40, 2: 40, 4: 60, 6: 70, 9: 30, 12: 90, 25: 60, 26: 30},
    ),
}
TARGETS["bp4dplus"] = TARGETS["bp4d"]

# Rates and durations of the AUs a set renders but does not label [R]: plausible, not measured.
_UNLABELLED_RATES = {
    "bp4d": {9: .06, 25: .35, 26: .12},
    "disfa": {7: .15, 10: .12, 14: .12, 15: .05, 17: .10, 23: .05, 24: .05},
}
_UNLABELLED_RUNS = {
    "bp4d": {9: 25, 25: 45, 26: 25},
    "disfa": {7: 60, 10: 60, 14: 50, 15: 20, 17: 20, 23: 20, 24: 20},
}


# ---------------------------------------------------------------------------------------------------------
# Design: the structure the fit leaves alone [R]. Loadings are in latent standard deviations.

# Within a sequence, which AUs move together from moment to moment (correlation = loadings products).
_MOMENT_FACTORS: dict[str, dict[int, float]] = {
    "general": {**{au: 0.55 for au in RENDERED_AUS}, 4: 0.15, 12: 0.35},
    "smile": {6: .65, 7: .35, 10: .45, 12: .65, 14: .30, 25: .20},
    "brow raise": {1: .70, 2: .70, 25: .10, 26: .20},
    "brow lower": {4: .55, 7: .30, 9: .40, 10: .15},
    "valence": {4: .55, 6: -.35, 12: -.50, 15: .20},
    "lip press": {15: .35, 17: .75, 23: .55, 24: .75},
    "mouth open": {25: .60, 26: .55, 10: .10},
}
# Between subjects: who frowns, who smiles, whose brows are mobile (sd per AU, then a factor correlation).
_SUBJECT_SD: dict[int, float] = {1: 1.20, 2: 1.10, 4: .80, 6: .65, 7: .70, 9: .60, 10: .65, 12: .60, 14: .75,
                                 15: .70, 17: .65, 23: .70, 24: .70, 25: .60, 26: .60}
_SUBJECT_FACTORS: dict[str, dict[int, float]] = {
    "expressive": {**{au: 0.70 for au in RENDERED_AUS}, 4: 0.30},
    "smiley": {4: -.60, 6: .55, 7: .35, 10: .45, 12: .55, 14: .30},
    "brows": {1: .60, 2: .60},
    "frowner": {4: .55, 7: .25, 9: .30},
    "presser": {15: .40, 17: .50, 23: .45, 24: .50},
}
# Tasks act on shared factors; each factor moves several AUs.
_TASK_FACTORS: dict[str, dict[int, float]] = {
    "smile": {6: 1.0, 7: .5, 10: .6, 12: 1.1, 14: .35, 25: .5},
    "brow raise": {1: 1.0, 2: 1.0, 26: .3},
    "brow lower": {4: 1.0, 7: .4, 9: .3},
    "lip press": {17: .8, 23: .8, 24: .8},
    "sadness": {1: .5, 4: .5, 15: 1.0, 17: .6},
    "mouth open": {25: 1.0, 26: .8, 10: .2},
    "disgust": {9: 1.0, 10: .7, 4: .3, 15: .2},
    "pain": {4: .6, 6: .8, 7: 1.0, 9: .5, 10: .6},
}
_TASK_PROFILES: tuple[dict[str, float], ...] = (
    {"smile": .8, "mouth open": .8, "brow raise": .2, "brow lower": -.6},  # pleasant chat
    {"smile": -2.5, "sadness": 1.2, "lip press": .3, "mouth open": -.5, "brow lower": .3},  # sad
    {"brow raise": 1.3, "mouth open": .9, "smile": .3, "brow lower": -.3},  # startle
    {"smile": .9, "lip press": .6, "mouth open": .3, "brow lower": -.5},  # embarrassment
    {"brow raise": .7, "brow lower": .7, "lip press": .5, "smile": -.6},  # fear
    {"pain": 1.3, "brow lower": .8, "smile": 0.0},  # pain
    {"brow lower": 1.4, "lip press": 1.0, "smile": -1.0},  # anger
    {"disgust": 1.4, "brow lower": .8, "smile": -.7},  # disgust
)


def _factor_matrix(factors: dict[str, dict[int, float]]) -> np.ndarray:
    """Loadings [R, F] in RENDERED_AUS order."""
    loadings = np.zeros((len(RENDERED_AUS), len(factors)))
    for f, column in enumerate(factors.values()):
        for au, value in column.items():
            loadings[RENDERED_AUS.index(au), f] = value
    return loadings


def _correlation_from_factors(factors: dict[str, dict[int, float]]) -> np.ndarray:
    """A factor-model correlation matrix [R, R]: loadings L L^T plus unique variance on the diagonal."""
    loadings = _factor_matrix(factors)
    common = loadings @ loadings.T
    if np.any(np.diag(common) >= 0.95):
        raise ValueError("factor loadings leave an AU with no unique variance")
    return common + np.diag(1.0 - np.diag(common))


def design_correlation() -> np.ndarray:
    """The correlation of the latent's innovations before the fitted pairs are set."""
    return _correlation_from_factors(_MOMENT_FACTORS)


def subject_covariance() -> np.ndarray:
    """Covariance [R, R] of a subject's threshold offsets."""
    sd = np.array([_SUBJECT_SD[au] for au in RENDERED_AUS])
    return _correlation_from_factors(_SUBJECT_FACTORS) * np.outer(sd, sd)


def task_effects() -> np.ndarray:
    """Each task's shift of every AU's latent [N_TASKS, R], centred over tasks (thresholds carry the mean)."""
    loadings = _factor_matrix(_TASK_FACTORS)  # [R, F]
    names = list(_TASK_FACTORS)
    activation = np.array([[profile.get(name, 0.0) for name in names]
                           for profile in _TASK_PROFILES])  # [K, F]
    effects = activation @ loadings.T  # [K, R]
    return effects - effects.mean(axis=0, keepdims=True)


# ---------------------------------------------------------------------------------------------------------
# Fitted constants (written by fit_label_model; re-run with `python -m ks_runtime.synth.labels`).

@dataclass(frozen=True)
class FittedConstants:
    """What the fit sets: a threshold and a time constant per rendered AU, the target pairs' correlations."""

    thresholds: tuple[float, ...]  # RENDERED_AUS order, latent units
    pair_correlations: tuple[tuple[int, int, float], ...]  # (au_a, au_b, innovation correlation)
    taus: tuple[float, ...]  # RENDERED_AUS order, frames at REFERENCE_FPS


_FITTED: dict[str, FittedConstants] = {}  # filled below the fitting code


# ---------------------------------------------------------------------------------------------------------
# The model and its sampling.

@dataclass(frozen=True, eq=False)
class LabelModel:
    """Everything that fixes one AU set's label process. Arrays are read-only; R = len(rendered_aus)."""

    au_set: AUSet
    rendered_aus: tuple[int, ...]
    labelled: np.ndarray  # int [U]: column of each labelled AU in rendered_aus
    threshold: np.ndarray  # [R] latent units
    correlation: np.ndarray  # [R, R] innovation correlation C, positive definite
    mixing: np.ndarray  # [R, R] symmetric square root of C
    tau: np.ndarray  # [R] time constants, frames at REFERENCE_FPS
    frame_correlation: np.ndarray  # [R, R] correlation of the latent at one frame, C * kernel_overlap(tau)
    subject_factor: np.ndarray  # [R, R] lower Cholesky factor of the subject offset covariance
    sequence_sd: np.ndarray  # [R]
    task_effect: np.ndarray  # [N_TASKS, R]
    tempo_sd: float = TEMPO_SD
    gain: float = GAIN
    level: float = OCCURRENCE_LEVEL
    x_at_level: float = 0.0  # soft-clip input whose output is `level`


@dataclass(frozen=True, eq=False)
class LabelTraits:
    """One subject's label habits: threshold offsets [R] (positive = more often active) and a tempo factor."""

    offset: np.ndarray
    tempo: float


@dataclass(frozen=True, eq=False)
class LabelTrack:
    """One sequence's labels: intensity float32 [T, R] in [0, 5], occurrence int8 [T, U] (au_set order)."""

    intensity: np.ndarray
    occurrence: np.ndarray


def soft_clip(x: np.ndarray, top: float = INTENSITY_MAX, softness: float = SOFTNESS) -> np.ndarray:
    """A smooth, increasing map of the real line onto (0, top): linear in the middle, flat at both ends."""
    return (np.logaddexp(0.0, softness * x) - np.logaddexp(0.0, softness * (x - top))) / softness


def _soft_clip_inverse(level: float) -> float:
    """The x with soft_clip(x) == level, by bisection (deterministic, scalar)."""
    lo, hi = -10.0, 15.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if soft_clip(np.array(mid)) < level else (lo, mid)
    return 0.5 * (lo + hi)


def _readonly(array: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    array = np.ascontiguousarray(array, dtype=dtype)
    array.setflags(write=False)
    return array


def _symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(values)) @ vectors.T


def _fit_key(au_set: AUSet) -> str:
    if au_set.numbers == BP4D.numbers:
        return "bp4d"
    if au_set.numbers == DISFA.numbers:
        return "disfa"
    raise ValueError(f"no fitted SynthAU label model for AU set {au_set.name!r} {au_set.numbers}; "
                     f"known: {BP4D.numbers} (bp4d), {DISFA.numbers} (disfa)")


def build_label_model(au_set: AUSet, fitted: FittedConstants) -> LabelModel:
    """The model from the design above and a set of fitted constants; raises if the correlation is not PD."""
    correlation = design_correlation()
    for a, b, value in fitted.pair_correlations:
        i, j = RENDERED_AUS.index(a), RENDERED_AUS.index(b)
        correlation[i, j] = correlation[j, i] = value
    smallest = float(np.linalg.eigvalsh(correlation)[0])
    if smallest < 1e-3:
        pairs = [(a, b) for a, b, _ in fitted.pair_correlations]
        raise ValueError(f"SynthAU latent correlation not positive definite (eigenvalue {smallest:.4f}) "
                         f"after setting pairs {pairs}")
    return LabelModel(
        au_set=au_set,
        rendered_aus=RENDERED_AUS,
        labelled=_readonly(np.array([RENDERED_AUS.index(au) for au in au_set.numbers]), dtype=np.int64),
        threshold=_readonly(np.array(fitted.thresholds)),
        correlation=_readonly(correlation),
        mixing=_readonly(_symmetric_sqrt(correlation)),
        tau=_readonly(np.array(fitted.taus)),
        frame_correlation=_readonly(correlation * kernel_overlap(np.array(fitted.taus))),
        subject_factor=_readonly(np.linalg.cholesky(subject_covariance())),
        sequence_sd=_readonly(np.full(len(RENDERED_AUS), SEQUENCE_SD)),
        task_effect=_readonly(task_effects()),
        x_at_level=_soft_clip_inverse(OCCURRENCE_LEVEL),
    )


@functools.cache
def label_model(au_set: AUSet) -> LabelModel:
    """The fitted label model of a known AU set (BP4D's 12 AUs or DISFA's 8). Cached and deterministic."""
    return build_label_model(au_set, _FITTED[_fit_key(au_set)])


def draw_label_traits(model: LabelModel, rng: np.random.Generator) -> LabelTraits:
    """One subject's correlated threshold offsets and tempo."""
    offset = model.subject_factor @ rng.standard_normal(len(model.rendered_aus))
    tempo = float(np.exp(model.tempo_sd * rng.standard_normal()))
    return LabelTraits(offset=offset, tempo=tempo)


def kernel_overlap(tau: np.ndarray) -> np.ndarray:
    """[R, R] correlation at one frame of two unit Matern-3/2 processes made from the same white noise."""
    return 2.0 * np.sqrt(np.outer(tau, tau)) / (tau[:, None] + tau[None, :])


def smooth_noise(n_frames: int, tau: np.ndarray, rng: np.random.Generator,
                 mixing: np.ndarray | None = None) -> np.ndarray:
    """Unit-variance stationary noise [T, R] whose column r has correlation (1 + |t|/tau) exp(-|t|/tau).

    White noise (correlated across columns by `mixing`, a square root of its correlation) convolved
    circularly, via FFT, with exp(-|t| / tau); the padding of 10 tau keeps the wrap-around correlation below
    1e-3, so the first n_frames are a stationary stretch from the very first frame.
    """
    pad = int(math.ceil(10.0 * float(tau.max())))
    length = -(-(n_frames + pad) // 64) * 64  # a round FFT length
    omega = 2.0 * np.pi * np.fft.rfftfreq(length)  # [F]
    transfer = 1.0 / (1.0 + (omega[:, None] * tau[None, :]) ** 2)  # [F, R]
    kernel = np.fft.irfft(transfer, n=length, axis=0)  # [N, R]
    scale = 1.0 / np.sqrt((kernel**2).sum(axis=0))  # [R]
    noise = rng.standard_normal((length, len(tau)))  # [N, R]
    if mixing is not None:
        noise = noise @ mixing.T
    smooth = np.fft.irfft(np.fft.rfft(noise, axis=0) * transfer, n=length, axis=0)  # [N, R]
    return smooth[:n_frames] * scale


def sample_labels(model: LabelModel, traits: LabelTraits, task_index: int, n_frames: int,
                  rng: np.random.Generator, fps: float = REFERENCE_FPS) -> LabelTrack:
    """One subject-task sequence of AU intensities and occurrences, deterministic given `rng`'s state."""
    if not 0 <= task_index < N_TASKS:
        raise ValueError(f"task_index {task_index} outside 0..{N_TASKS - 1}")
    if n_frames < 1 or fps <= 0:
        raise ValueError(f"need n_frames >= 1 and fps > 0, got n_frames={n_frames}, fps={fps}")
    tau = model.tau * traits.tempo * (fps / REFERENCE_FPS)  # [R] frames at this rate
    shift = traits.offset + model.task_effect[task_index] + model.sequence_sd * rng.standard_normal(len(tau))
    latent = smooth_noise(n_frames, tau, rng, model.mixing)  # [T, R], every row N(0, frame_correlation)
    x = model.x_at_level + model.gain * (latent + (shift - model.threshold))
    intensity = soft_clip(x).astype(np.float32)
    occurrence = (intensity[:, model.labelled] >= np.float32(model.level)).astype(np.int8)
    return LabelTrack(intensity=intensity, occurrence=occurrence)


# ---------------------------------------------------------------------------------------------------------
# Fitting. Stationary occurrence statistics depend only on the Gaussian mixture (latent + subject + sequence
# covariance, shifted by each task's effects), so thresholds and pair correlations are solved exactly from
# it; the time constants are then fitted by simulation to the median run lengths.

def _norm_cdf(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF (Numerical Recipes' erfc, fractional error < 1.2e-7), pure numpy."""
    z = np.abs(np.asarray(x, dtype=np.float64)) / math.sqrt(2.0)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = (-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (
            -0.82215223 + t * 0.17087277)))))))))
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
    rates = {**TARGETS[key].rates, **_UNLABELLED_RATES[key]}
    sd = np.sqrt(np.diag(total_covariance(design_correlation())))  # variances do not depend on the pairs
    effects = task_effects()
    thresholds = np.zeros(len(RENDERED_AUS))
    for i, au in enumerate(RENDERED_AUS):
        # The rate falls as the threshold rises; bisect on the negated threshold.
        thresholds[i] = -_bisect(lambda m, i=i: float(_norm_cdf((effects[:, i] + m) / sd[i]).mean()),
                                 rates[au], -12.0, 12.0, f"threshold of AU{au}")
    return thresholds


def fit_pair_correlations(key: str, thresholds: np.ndarray,
                          taus: np.ndarray) -> tuple[tuple[int, int, float], ...]:
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


def fit_taus(key: str, thresholds: np.ndarray, n_sequences: int = 3000, frames: int = 500,
             iterations: int = 6, seed: int = 12345) -> np.ndarray:
    """Time constants [R] whose simulated median run lengths hit the targets (secant steps in log-log space).

    An AU's runs depend only on its own tau and thresholds, so each AU is solved on its own and keeps the tau
    that came closest; the draws reuse one seed, which makes the fit deterministic.
    """
    from ks_runtime.synth.stats import median_run_lengths  # stats imports this module

    runs = {**TARGETS[key].median_runs, **_UNLABELLED_RUNS[key]}
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
    """Fit thresholds, time constants and target-pair correlations for `au_set`; deterministic, about 20 s."""
    key = _fit_key(au_set)
    thresholds = np.round(fit_thresholds(key), 4)
    taus = np.round(fit_taus(key, thresholds), 2)
    pairs = fit_pair_correlations(key, thresholds, taus)
    return FittedConstants(thresholds=tuple(float(t) for t in thresholds), pair_correlations=pairs,
                           taus=tuple(float(t) for t in taus))


_FITTED.update({
    "bp4d": FittedConstants(
        thresholds=(1.3328, 1.5116, 1.3231, 0.2442, -0.192, 2.1403, -0.3053, -0.1791, 0.1184, 1.271, 0.5222,
                    1.2668, 1.3425, 0.6133, 1.5248),
        pair_correlations=((6, 12, 0.5957), (1, 2, 0.5653), (4, 12, -0.5917), (17, 24, 0.7728)),
        taus=(21.56, 22.76, 22.07, 40.12, 35.4, 23.72, 35.2, 48.8, 34.01, 14.77, 12.13, 15.38, 16.53, 26.76,
              21.8),
    ),
    "disfa": FittedConstants(
        thresholds=(2.7441, 2.7512, 1.6248, 2.3039, 1.495, 2.3874, 1.7021, 1.8617, 1.5829, 2.2085, 1.6639,
                    2.1419, 2.1419, 0.9239, 1.7584),
        pair_correlations=((1, 2, 0.7683), (6, 12, 0.7865), (25, 26, 0.7681), (4, 12, -0.2782)),
        taus=(34.58, 38.95, 50.66, 67.08, 48.41, 30.36, 56.06, 82.24, 42.81, 20.07, 16.91, 20.0, 20.07, 38.92,
              29.29),
    ),
})


def format_fitted(name: str, fitted: FittedConstants) -> str:
    """The constants as the source text of one _FITTED entry (wrapped at 110 columns)."""
    def wrapped(label: str, values: tuple) -> str:
        text = f"{label}=({', '.join(repr(v) for v in values)}),"
        indent = " " * (10 + len(label))  # under the first value
        return textwrap.fill(text, width=110, initial_indent=" " * 8, subsequent_indent=indent)

    return "\n".join([
        f'    "{name}": FittedConstants(',
        wrapped("thresholds", fitted.thresholds),
        wrapped("pair_correlations", fitted.pair_correlations),
        wrapped("taus", fitted.taus),
        "    ),",
    ])


def main() -> None:
    """Re-run the fit for both sets and print the constants to paste into _FITTED."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for au_set in (BP4D, DISFA):
        print(format_fitted(au_set.name, fit_label_model(au_set)))  # noqa: T201 - a developer tool's output


if __name__ == "__main__":
    main()
