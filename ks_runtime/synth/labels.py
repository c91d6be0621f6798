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
DISFA figures in TARGETS (docs/synthau.md, 'Labels') by label_fit.fit_label_model; the numbers are stored in
`_FITTED`, so the model is fixed by the code (re-run the fit: `python -m ks_runtime.synth.label_fit`; test:
`pytest -m slow -k fit`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from ks_runtime.core.au import BP4D, DISFA, AUSet

# Every AU SynthAU renders, in the one order the label columns, the face's blend shapes (face_model.py) and an
# identity's gains and quirks (identity.py) share. Both label sets render all of them, so unlabelled AUs
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


_BP4D_RATES = {
    1: 0.211,
    2: 0.171,
    4: 0.203,
    6: 0.461,
    7: 0.549,
    10: 0.594,
    12: 0.562,
    14: 0.466,
    15: 0.169,
    17: 0.343,
    23: 0.165,
    24: 0.151,
}
TARGETS: dict[str, LabelTargets] = {
    "bp4d": LabelTargets(
        rates=_BP4D_RATES,
        phi={
            (6, 12): 0.54,
            (1, 2): 0.46,
            (4, 12): -0.26,
            # BP4D's figure for this pair is P(17 | 24) = .81; with the marginals that is phi ~ .415.
            (17, 24): round(phi_from_conditional(0.81, _BP4D_RATES[17], _BP4D_RATES[24]), 3),
        },
        median_runs={1: 32, 2: 32, 4: 32, 6: 82, 7: 77, 10: 87, 12: 122, 14: 62, 15: 20, 17: 20, 23: 20, 24: 20},
        conditionals={(12, 6): 0.85, (6, 12): 0.70, (2, 1): 0.51, (1, 2): 0.63, (12, 4): 0.30, (17, 24): 0.81},
        none_fraction=0.079,
        top_combos={(): 0.079, (6, 7, 10, 12, 14): 0.057, (6, 7, 10, 12): 0.047, (4,): 0.024},
    ),
    "disfa": LabelTargets(
        rates={1: 0.050, 2: 0.043, 4: 0.152, 6: 0.079, 9: 0.042, 12: 0.129, 25: 0.277, 26: 0.088},
        # [R] our choices, not measured here: DISFA's brows and smiles co-occur strongly, lips-part goes with
        # jaw-drop, and brow-lowering avoids smiling (bounded by the low rates: phi >= -.16 for AU4/AU12).
        phi={(1, 2): 0.45, (6, 12): 0.45, (25, 26): 0.35, (4, 12): -0.12},
        # [R] durations at 25 fps: DISFA's spontaneous expressions while watching video are long.
        median_runs={1: 40, 2: 40, 4: 60, 6: 70, 9: 30, 12: 90, 25: 60, 26: 30},
    ),
}
TARGETS["bp4dplus"] = TARGETS["bp4d"]

# Rates and durations of the AUs a set renders but does not label [R]: plausible, not measured.
UNLABELLED_RATES = {
    "bp4d": {9: 0.06, 25: 0.35, 26: 0.12},
    "disfa": {7: 0.15, 10: 0.12, 14: 0.12, 15: 0.05, 17: 0.10, 23: 0.05, 24: 0.05},
}
UNLABELLED_RUNS = {
    "bp4d": {9: 25, 25: 45, 26: 25},
    "disfa": {7: 60, 10: 60, 14: 50, 15: 20, 17: 20, 23: 20, 24: 20},
}


# ---------------------------------------------------------------------------------------------------------
# Design: the structure the fit leaves alone [R]. Loadings are in latent standard deviations.

# Within a sequence, which AUs move together from moment to moment (correlation = loadings products).
_MOMENT_FACTORS: dict[str, dict[int, float]] = {
    "general": {**{au: 0.55 for au in RENDERED_AUS}, 4: 0.15, 12: 0.35},
    "smile": {6: 0.65, 7: 0.35, 10: 0.45, 12: 0.65, 14: 0.30, 25: 0.20},
    "brow raise": {1: 0.70, 2: 0.70, 25: 0.10, 26: 0.20},
    "brow lower": {4: 0.55, 7: 0.30, 9: 0.40, 10: 0.15},
    "valence": {4: 0.55, 6: -0.35, 12: -0.50, 15: 0.20},
    "lip press": {15: 0.35, 17: 0.75, 23: 0.55, 24: 0.75},
    "mouth open": {25: 0.60, 26: 0.55, 10: 0.10},
}
# Between subjects: who frowns, who smiles, whose brows are mobile (sd per AU, then a factor correlation).
_SUBJECT_SD: dict[int, float] = {
    1: 1.20,
    2: 1.10,
    4: 0.80,
    6: 0.65,
    7: 0.70,
    9: 0.60,
    10: 0.65,
    12: 0.60,
    14: 0.75,
    15: 0.70,
    17: 0.65,
    23: 0.70,
    24: 0.70,
    25: 0.60,
    26: 0.60,
}
_SUBJECT_FACTORS: dict[str, dict[int, float]] = {
    "expressive": {**{au: 0.70 for au in RENDERED_AUS}, 4: 0.30},
    "smiley": {4: -0.60, 6: 0.55, 7: 0.35, 10: 0.45, 12: 0.55, 14: 0.30},
    "brows": {1: 0.60, 2: 0.60},
    "frowner": {4: 0.55, 7: 0.25, 9: 0.30},
    "presser": {15: 0.40, 17: 0.50, 23: 0.45, 24: 0.50},
}
# Tasks act on shared factors; each factor moves several AUs.
_TASK_FACTORS: dict[str, dict[int, float]] = {
    "smile": {6: 1.0, 7: 0.5, 10: 0.6, 12: 1.1, 14: 0.35, 25: 0.5},
    "brow raise": {1: 1.0, 2: 1.0, 26: 0.3},
    "brow lower": {4: 1.0, 7: 0.4, 9: 0.3},
    "lip press": {17: 0.8, 23: 0.8, 24: 0.8},
    "sadness": {1: 0.5, 4: 0.5, 15: 1.0, 17: 0.6},
    "mouth open": {25: 1.0, 26: 0.8, 10: 0.2},
    "disgust": {9: 1.0, 10: 0.7, 4: 0.3, 15: 0.2},
    "pain": {4: 0.6, 6: 0.8, 7: 1.0, 9: 0.5, 10: 0.6},
}
_TASK_PROFILES: tuple[dict[str, float], ...] = (
    {"smile": 0.8, "mouth open": 0.8, "brow raise": 0.2, "brow lower": -0.6},  # pleasant chat
    {"smile": -2.5, "sadness": 1.2, "lip press": 0.3, "mouth open": -0.5, "brow lower": 0.3},  # sad
    {"brow raise": 1.3, "mouth open": 0.9, "smile": 0.3, "brow lower": -0.3},  # startle
    {"smile": 0.9, "lip press": 0.6, "mouth open": 0.3, "brow lower": -0.5},  # embarrassment
    {"brow raise": 0.7, "brow lower": 0.7, "lip press": 0.5, "smile": -0.6},  # fear
    {"pain": 1.3, "brow lower": 0.8, "smile": 0.0},  # pain
    {"brow lower": 1.4, "lip press": 1.0, "smile": -1.0},  # anger
    {"disgust": 1.4, "brow lower": 0.8, "smile": -0.7},  # disgust
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
    activation = np.array([[profile.get(name, 0.0) for name in names] for profile in _TASK_PROFILES])  # [K, F]
    effects = activation @ loadings.T  # [K, R]
    return effects - effects.mean(axis=0, keepdims=True)


# ---------------------------------------------------------------------------------------------------------
# Fitted constants (written by label_fit.fit_label_model; re-run with `python -m ks_runtime.synth.label_fit`).


@dataclass(frozen=True)
class FittedConstants:
    """What the fit sets: a threshold and a time constant per rendered AU, the target pairs' correlations."""

    thresholds: tuple[float, ...]  # RENDERED_AUS order, latent units
    pair_correlations: tuple[tuple[int, int, float], ...]  # (au_a, au_b, innovation correlation)
    taus: tuple[float, ...]  # RENDERED_AUS order, frames at REFERENCE_FPS


_FITTED: dict[str, FittedConstants] = {
    "bp4d": FittedConstants(
        thresholds=(
            1.3328,
            1.5116,
            1.3231,
            0.2442,
            -0.192,
            2.1403,
            -0.3053,
            -0.1791,
            0.1184,
            1.271,
            0.5222,
            1.2668,
            1.3425,
            0.6133,
            1.5248,
        ),
        pair_correlations=((6, 12, 0.5957), (1, 2, 0.5653), (4, 12, -0.5917), (17, 24, 0.7728)),
        taus=(21.56, 22.76, 22.07, 40.12, 35.4, 23.72, 35.2, 48.8, 34.01, 14.77, 12.13, 15.38, 16.53, 26.76, 21.8),
    ),
    "disfa": FittedConstants(
        thresholds=(
            2.7441,
            2.7512,
            1.6248,
            2.3039,
            1.495,
            2.3874,
            1.7021,
            1.8617,
            1.5829,
            2.2085,
            1.6639,
            2.1419,
            2.1419,
            0.9239,
            1.7584,
        ),
        pair_correlations=((1, 2, 0.7683), (6, 12, 0.7865), (25, 26, 0.7681), (4, 12, -0.2782)),
        taus=(34.58, 38.95, 50.66, 67.08, 48.41, 30.36, 56.06, 82.24, 42.81, 20.07, 16.91, 20.0, 20.07, 38.92, 29.29),
    ),
}


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


def fit_key(au_set: AUSet) -> str:
    """The name of an AU set's fitted constants (bp4d or disfa); raises for a set with none."""
    if au_set.numbers == BP4D.numbers:
        return "bp4d"
    if au_set.numbers == DISFA.numbers:
        return "disfa"
    raise ValueError(
        f"no fitted SynthAU label model for AU set {au_set.name!r} {au_set.numbers}; "
        f"known: {BP4D.numbers} (bp4d), {DISFA.numbers} (disfa)"
    )


def build_label_model(au_set: AUSet, fitted: FittedConstants) -> LabelModel:
    """The model from the design above and a set of fitted constants; raises if the correlation is not PD."""
    correlation = design_correlation()
    for a, b, value in fitted.pair_correlations:
        i, j = RENDERED_AUS.index(a), RENDERED_AUS.index(b)
        correlation[i, j] = correlation[j, i] = value
    smallest = float(np.linalg.eigvalsh(correlation)[0])
    if smallest < 1e-3:
        pairs = [(a, b) for a, b, _ in fitted.pair_correlations]
        raise ValueError(
            f"SynthAU latent correlation not positive definite (eigenvalue {smallest:.4f}) after setting pairs {pairs}"
        )
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
    return build_label_model(au_set, _FITTED[fit_key(au_set)])


def draw_label_traits(model: LabelModel, rng: np.random.Generator) -> LabelTraits:
    """One subject's correlated threshold offsets and tempo."""
    offset = model.subject_factor @ rng.standard_normal(len(model.rendered_aus))
    tempo = float(np.exp(model.tempo_sd * rng.standard_normal()))
    return LabelTraits(offset=offset, tempo=tempo)


def kernel_overlap(tau: np.ndarray) -> np.ndarray:
    """[R, R] correlation at one frame of two unit Matern-3/2 processes made from the same white noise."""
    return 2.0 * np.sqrt(np.outer(tau, tau)) / (tau[:, None] + tau[None, :])


def smooth_noise(
    n_frames: int, tau: np.ndarray, rng: np.random.Generator, mixing: np.ndarray | None = None
) -> np.ndarray:
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


def sample_labels(
    model: LabelModel,
    traits: LabelTraits,
    task_index: int,
    n_frames: int,
    rng: np.random.Generator,
    fps: float = REFERENCE_FPS,
) -> LabelTrack:
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
