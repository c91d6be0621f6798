"""Per-AU F1 at a threshold, pooled over frames, with the all-positive floor beside it.

Labels are int arrays with 1 = present, 0 = absent and -1 = unknown (excluded from every count).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UNKNOWN = -1


@dataclass(frozen=True)
class F1Report:
    """Per-AU F1, the all-positive floor 2p/(1+p), the positive rate and the known-label count."""

    columns: tuple[str, ...]
    f1: np.ndarray
    floor: np.ndarray
    positive_rate: np.ndarray
    support: np.ndarray

    @property
    def mean(self) -> float:
        return float(np.mean(self.f1))

    @property
    def mean_floor(self) -> float:
        return float(np.mean(self.floor))

    def to_dict(self) -> dict:
        return {
            "mean_f1": self.mean,
            "mean_floor": self.mean_floor,
            "per_au": {
                c: {"f1": float(f), "floor": float(fl), "positive_rate": float(p), "support": int(s)}
                for c, f, fl, p, s in zip(
                    self.columns, self.f1, self.floor, self.positive_rate, self.support, strict=True
                )
            },
        }

    def table(self) -> str:
        """A plain-text table: one AU a line, then the mean."""
        lines = [f"{'AU':<6}{'F1':>7}{'floor':>8}{'rate':>7}{'frames':>8}"]
        for c, f, fl, p, s in zip(self.columns, self.f1, self.floor, self.positive_rate, self.support, strict=True):
            lines.append(f"{c:<6}{f:>7.3f}{fl:>8.3f}{p:>7.3f}{s:>8d}")
        lines.append(f"{'mean':<6}{self.mean:>7.3f}{self.mean_floor:>8.3f}")
        return "\n".join(lines)


def f1_report(
    probs: np.ndarray, labels: np.ndarray, columns: list[str] | tuple[str, ...], threshold: float | np.ndarray = 0.5
) -> F1Report:
    """F1 of `probs >= threshold` against `labels`, per AU, over all frames with a known label.

    An AU with no positive label and no positive prediction scores 0, as with sklearn's default.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.shape != labels.shape or probs.ndim != 2:
        raise ValueError(f"probs {probs.shape} and labels {labels.shape} must both be [frames, AUs]")
    if len(columns) != probs.shape[1]:
        raise ValueError(f"{len(columns)} AU columns for {probs.shape[1]} AUs")
    known = labels != UNKNOWN
    truth = (labels == 1) & known
    predicted = (probs >= threshold) & known
    tp = (truth & predicted).sum(0)
    fp = (~truth & predicted).sum(0)
    fn = (truth & ~predicted).sum(0)
    denominator = 2 * tp + fp + fn
    f1 = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)
    support = known.sum(0)
    rate = truth.sum(0) / np.maximum(support, 1)
    floor = 2 * rate / (1 + rate)
    return F1Report(tuple(columns), f1, floor, rate, support)
