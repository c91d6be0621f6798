"""Label statistics of AU occurrence sequences (rates, phi, conditionals, run lengths, combinations) and the
SynthAU acceptance check that compares a large label-only draw with the targets in labels.TARGETS."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ks_runtime.core.au import AUSet, au_column
from ks_runtime.synth import labels

TOP_COMBOS = 5


def _stack_with_gaps(occurrences: list[np.ndarray]) -> np.ndarray:
    """All sequences [T_i, U] stacked with zero rows before, between and after them: no run crosses two."""
    if not occurrences:
        raise ValueError("no sequences to measure")
    width = occurrences[0].shape[1]
    gap = np.zeros((1, width), dtype=np.int8)
    parts = [gap]
    for occurrence in occurrences:
        if occurrence.ndim != 2 or occurrence.shape[1] != width:
            raise ValueError(f"occurrence arrays must be [T, {width}], got {occurrence.shape}")
        parts += [(np.asarray(occurrence) > 0).astype(np.int8), gap]
    return np.concatenate(parts)


def run_lengths(occurrences: list[np.ndarray]) -> list[np.ndarray]:
    """Per AU column, the length in frames of every contiguous active run within each sequence."""
    stacked = _stack_with_gaps(occurrences)  # [N, U] with zero borders
    edges = np.diff(stacked, axis=0)  # +1 where a run starts, -1 one past where it ends
    return [np.flatnonzero(edges[:, u] == -1) - np.flatnonzero(edges[:, u] == 1) for u in range(edges.shape[1])]


def median_run_lengths(occurrences: list[np.ndarray]) -> np.ndarray:
    """Median run length [U] in frames per AU column (nan for an AU that never occurs)."""
    return np.array([float(np.median(r)) if len(r) else math.nan for r in run_lengths(occurrences)])


def phi_matrix(occurrence: np.ndarray) -> np.ndarray:
    """phi [U, U] of every pair of binary columns of frames [N, U] (nan where a column is constant)."""
    x = occurrence.astype(np.float64)
    rates = x.mean(axis=0)
    joint = x.T @ x / len(x)
    spread = np.sqrt(rates * (1 - rates))
    with np.errstate(divide="ignore", invalid="ignore"):
        return (joint - np.outer(rates, rates)) / np.outer(spread, spread)


@dataclass(frozen=True, eq=False)
class LabelStats:
    """Statistics of a set of occurrence sequences over one AU set; arrays in au_set order."""

    au_set: AUSet
    fps: float
    n_sequences: int
    n_frames: int
    rates: np.ndarray  # [U]
    joint: np.ndarray  # [U, U] P(a and b)
    phi: np.ndarray  # [U, U]
    conditional: np.ndarray  # [U, U] P(row AU | column AU)
    median_run: np.ndarray  # [U] frames
    n_runs: np.ndarray  # [U]
    none_fraction: float
    mean_active: float
    combos: dict[tuple[int, ...], float]  # exact active set (AU numbers): fraction of frames, commonest first

    def rate(self, au: int) -> float:
        return float(self.rates[self.au_set.index(au)])

    def phi_of(self, a: int, b: int) -> float:
        return float(self.phi[self.au_set.index(a), self.au_set.index(b)])

    def p_given(self, a: int, b: int) -> float:
        """P(a active | b active)."""
        return float(self.conditional[self.au_set.index(a), self.au_set.index(b)])

    def median_run_of(self, au: int) -> float:
        return float(self.median_run[self.au_set.index(au)])

    @property
    def top_combos(self) -> list[tuple[tuple[int, ...], float]]:
        return list(self.combos.items())[:TOP_COMBOS]

    def combo_fraction(self, aus: tuple[int, ...]) -> float:
        """Fraction of frames whose active set is exactly `aus`."""
        return self.combos.get(tuple(sorted(aus)), 0.0)

    def to_dict(self) -> dict:
        columns = self.au_set.columns

        def by_column(values) -> dict:
            return dict(zip(columns, values, strict=True))

        return {
            "au_set": self.au_set.name,
            "fps": self.fps,
            "sequences": self.n_sequences,
            "frames": self.n_frames,
            "rates": by_column(_floats(self.rates)),
            "median_run_frames": by_column(_floats(self.median_run)),
            "runs": by_column(int(n) for n in self.n_runs),
            "phi": by_column(by_column(_floats(row)) for row in self.phi),
            "p_row_given_column": by_column(by_column(_floats(row)) for row in self.conditional),
            "none_fraction": self.none_fraction,
            "mean_active": self.mean_active,
            "top_combos": [
                {"aus": [au_column(n) for n in combo], "fraction": fraction} for combo, fraction in self.top_combos
            ],
        }


def _floats(values: np.ndarray) -> list[float | None]:
    """JSON-safe floats: nan becomes None."""
    return [None if not math.isfinite(v) else round(float(v), 6) for v in values]


def label_statistics(occurrences: list[np.ndarray], au_set: AUSet, fps: float = 25.0) -> LabelStats:
    """Rates, phi and conditionals over all frames, median run length per AU over runs within each sequence,
    the fraction of frames with no AU, the mean number active, and the most frequent exact combinations."""
    width = len(au_set)
    for occurrence in occurrences:
        if occurrence.ndim != 2 or occurrence.shape[1] != width:
            raise ValueError(f"occurrence arrays must be [T, {width}] for AU set {au_set.name}, got {occurrence.shape}")
    frames = np.concatenate([(np.asarray(o) > 0) for o in occurrences]).astype(np.int8)  # [N, U]
    x = frames.astype(np.float64)
    rates = x.mean(axis=0)
    joint = x.T @ x / len(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        conditional = joint / rates[None, :]
    runs = run_lengths(occurrences)
    codes = frames.astype(np.int64) @ (np.int64(1) << np.arange(width, dtype=np.int64))  # [N] active-set bits
    values, counts = np.unique(codes, return_counts=True)
    combos = {}
    for k in np.argsort(-counts, kind="stable"):
        aus = tuple(au for bit, au in enumerate(au_set.numbers) if (int(values[k]) >> bit) & 1)
        combos[aus] = float(counts[k] / len(codes))
    active = frames.sum(axis=1)
    return LabelStats(
        au_set=au_set,
        fps=fps,
        n_sequences=len(occurrences),
        n_frames=len(frames),
        rates=rates,
        joint=joint,
        phi=phi_matrix(frames),
        conditional=conditional,
        median_run=np.array([float(np.median(r)) if len(r) else math.nan for r in runs]),
        n_runs=np.array([len(r) for r in runs]),
        none_fraction=float((active == 0).mean()),
        mean_active=float(active.mean()),
        combos=combos,
    )


@dataclass(frozen=True)
class Row:
    """One comparison: `tolerance` is the allowed absolute distance; `passed` is None for information rows."""

    name: str
    measured: float
    target: float | None
    tolerance: float | None
    passed: bool | None

    @property
    def gated(self) -> bool:
        return self.passed is not None


@dataclass(frozen=True)
class Report:
    """Statistics beside their targets. `passed` is True when every gated row passes."""

    au_set: str
    n_sequences: int
    frames: int
    seed: int
    rows: tuple[Row, ...]
    stats: LabelStats
    gated: bool = True

    @property
    def passed(self) -> bool:
        return all(row.passed is not False for row in self.rows)

    @property
    def failures(self) -> list[Row]:
        return [row for row in self.rows if row.passed is False]

    def to_dict(self) -> dict:
        return {
            "au_set": self.au_set,
            "sequences": self.n_sequences,
            "frames": self.frames,
            "seed": self.seed,
            "gated": self.gated,
            "passed": self.passed,
            "rows": [
                {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(row).items()}
                for row in self.rows
            ],
            "stats": self.stats.to_dict(),
        }


def _row(name: str, measured: float, target: float | None, tolerance: float | None, gate: bool) -> Row:
    passed = None
    if gate and target is not None and tolerance is not None:
        passed = bool(math.isfinite(measured) and abs(measured - target) <= tolerance + 1e-12)
    return Row(name, float(measured), target, tolerance, passed)


def compare_with_targets(stats: LabelStats, gate: bool = True) -> list[Row]:
    """Rows for every target of the AU set (labels.TARGETS): gated ones carry a tolerance and, when `gate`,
    a PASS/FAIL; conditionals, none fraction, mean active AUs and combinations are for information."""
    targets = labels.TARGETS.get(stats.au_set.name)
    if targets is None:
        raise ValueError(f"no SynthAU targets for AU set {stats.au_set.name!r}")
    rows = [
        _row(f"rate {au_column(au)}", stats.rate(au), target, targets.rate_tolerance, gate)
        for au, target in targets.rates.items()
    ]
    rows += [
        _row(f"phi {au_column(a)}-{au_column(b)}", stats.phi_of(a, b), target, targets.phi_tolerance, gate)
        for (a, b), target in targets.phi.items()
    ]
    rows += [
        _row(
            f"median run {au_column(au)} (frames)",
            stats.median_run_of(au),
            target,
            targets.run_tolerance * target,
            gate,
        )
        for au, target in targets.median_runs.items()
    ]
    rows += [
        _row(f"P({au_column(a)}|{au_column(b)})", stats.p_given(a, b), target, None, False)
        for (a, b), target in targets.conditionals.items()
    ]
    rows.append(_row("none active (fraction of frames)", stats.none_fraction, targets.none_fraction, None, False))
    expected_active = round(sum(targets.rates.values()), 4)
    rows.append(_row("mean active AUs per frame", stats.mean_active, expected_active, None, False))
    for combo, target in targets.top_combos.items():
        name = "+".join(str(au) for au in combo) or "none"
        rows.append(_row(f"combo {name}", stats.combo_fraction(combo), target, None, False))
    for combo, fraction in stats.top_combos:
        name = "+".join(str(au) for au in combo) or "none"
        if combo not in targets.top_combos:
            rows.append(_row(f"combo {name} (measured top {TOP_COMBOS})", fraction, None, None, False))
    return rows


def draw_occurrences(
    au_set: AUSet, n_sequences: int, frames: int, seed: int = 0, fps: float = labels.REFERENCE_FPS
) -> list[np.ndarray]:
    """Label-only sequences through the same label_model / draw_label_traits / sample_labels path as a set.

    Sequence i is task i mod N_TASKS of its own subject: the tasks stay balanced, and averaging over
    n_sequences subjects instead of n_sequences / N_TASKS halves the subject sampling error (a rate's standard
    error is about .005 at 2,000 sequences against about .011 for 250 subjects x 8 tasks), which is what lets
    +-.02 gate the process rather than the luck of the draw.
    """
    model = labels.label_model(au_set)
    occurrences = []
    for i in range(n_sequences):
        task = i % labels.N_TASKS
        traits = labels.draw_label_traits(model, np.random.default_rng(np.random.SeedSequence([seed, i])))
        rng = np.random.default_rng(np.random.SeedSequence([seed, i, task + 1000]))
        occurrences.append(labels.sample_labels(model, traits, task, frames, rng, fps=fps).occurrence)
    return occurrences


def acceptance_report(au_set: AUSet, n_sequences: int = 2000, frames: int = 500, seed: int = 0) -> Report:
    """Draw a large label-only set and compare its statistics with the targets, gated (docs/synthau.md, 'Labels')."""
    occurrences = draw_occurrences(au_set, n_sequences, frames, seed)
    stats = label_statistics(occurrences, au_set, labels.REFERENCE_FPS)
    return Report(au_set.name, n_sequences, frames, seed, tuple(compare_with_targets(stats)), stats)


def set_report(stats: LabelStats, seed: int = 0) -> Report:
    """A realised set's statistics beside the targets, for information only (never fails)."""
    frames = stats.n_frames // max(stats.n_sequences, 1)
    rows = tuple(compare_with_targets(stats, gate=False))
    return Report(stats.au_set.name, stats.n_sequences, frames, seed, rows, stats, gated=False)
