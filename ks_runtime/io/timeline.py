"""The AU timeline PNG: one lane per AU, probability over time, ground truth beside it when known."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ks_runtime.core.errors import OutputError
from ks_runtime.io.outputs import check_output_paths

LANE, TRUTH, MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, AXIS = 34, 7, 64, 16, 34, 34
FONT = cv2.FONT_HERSHEY_SIMPLEX
BLUE, GREEN, GREY, DARK, RED = (200, 90, 20), (60, 160, 60), (225, 225, 225), (40, 40, 40), (40, 40, 200)  # BGR


def timeline_png(
    path: Path | str,
    timestamps: np.ndarray,
    probs: np.ndarray,
    au_columns: Sequence[str],
    thresholds: Sequence[float],
    labels: np.ndarray | None = None,
    title: str = "",
    width: int | None = None,
) -> Path:
    """Draw probs [T, U] (NaN where no face) against timestamps [T] as one lane per AU, with the threshold
    dashed; labels [T, U] (1 / 0 / -1) add a green ground-truth strip under each lane. OpenCV only."""
    path = Path(path)
    timestamps = np.asarray(timestamps, np.float64)
    probs = np.asarray(probs, np.float64)
    t_count, u = probs.shape
    if len(timestamps) != t_count or len(au_columns) != u:
        raise ValueError(f"timeline: {len(timestamps)} timestamps, probs {probs.shape}, {len(au_columns)} AUs")
    plot_w = width or int(np.clip(2 * t_count, 600, 2400))
    lane = LANE + (TRUTH + 2 if labels is not None else 0)
    image = np.full((MARGIN_TOP + u * lane + AXIS, MARGIN_LEFT + plot_w + MARGIN_RIGHT, 3), 255, np.uint8)
    t0 = float(timestamps[0]) if t_count else 0.0
    t1 = float(timestamps[-1]) if t_count else 1.0
    xs = (MARGIN_LEFT + (timestamps - t0) / max(t1 - t0, 1e-9) * (plot_w - 1)).round().astype(np.int32)
    text = (title or "AU probabilities") + ("   (green: ground truth)" if labels is not None else "")
    cv2.putText(image, text, (MARGIN_LEFT, 22), FONT, 0.5, DARK, 1, cv2.LINE_AA)
    for j in range(u):
        top = MARGIN_TOP + j * lane
        truth = None if labels is None else np.asarray(labels[:, j]) == 1
        _draw_lane(image, top, plot_w, xs, probs[:, j], au_columns[j], thresholds[j], truth)
    _draw_time_axis(image, MARGIN_TOP + u * lane + 4, plot_w, t0, t1)
    _write_png(image, path)
    return path


def _draw_lane(
    image: np.ndarray,
    top: int,
    plot_w: int,
    xs: np.ndarray,
    probs: np.ndarray,
    name: str,
    threshold: float,
    truth: np.ndarray | None,
) -> None:
    """One AU's lane: its name, the dashed threshold, the probability curve (broken where NaN), the truth strip."""
    bottom = top + LANE - 4
    cv2.rectangle(image, (MARGIN_LEFT, top), (MARGIN_LEFT + plot_w - 1, bottom), GREY, -1)
    cv2.putText(image, name, (6, top + LANE // 2 + 2), FONT, 0.42, DARK, 1, cv2.LINE_AA)
    y_threshold = int(round(bottom - threshold * (bottom - top)))
    for x in range(MARGIN_LEFT, MARGIN_LEFT + plot_w, 8):
        cv2.line(image, (x, y_threshold), (min(x + 3, MARGIN_LEFT + plot_w - 1), y_threshold), RED, 1)
    ys = np.round(bottom - probs * (bottom - top))
    for run in _runs(~np.isnan(ys)):
        points = np.stack([xs[run], ys[run].astype(np.int32)], axis=1).reshape(-1, 1, 2)  # (k, 1, 2) for cv2
        cv2.polylines(image, [points], False, BLUE, 1, cv2.LINE_AA)
    if truth is not None:
        strip = bottom + 2
        for run in _runs(truth):
            x_end = xs[run[-1] + 1] if run[-1] + 1 < len(xs) else MARGIN_LEFT + plot_w - 1
            cv2.rectangle(image, (int(xs[run[0]]), strip), (int(x_end), strip + TRUTH - 1), GREEN, -1)


def _draw_time_axis(image: np.ndarray, axis_y: int, plot_w: int, t0: float, t1: float) -> None:
    span = max(t1 - t0, 1e-9)
    cv2.line(image, (MARGIN_LEFT, axis_y), (MARGIN_LEFT + plot_w - 1, axis_y), DARK, 1)
    for tick in _ticks(t0, t1):
        x = int(round(MARGIN_LEFT + (tick - t0) / span * (plot_w - 1)))
        cv2.line(image, (x, axis_y), (x, axis_y + 4), DARK, 1)
        cv2.putText(image, f"{tick:g}s", (x - 8, axis_y + 18), FONT, 0.38, DARK, 1, cv2.LINE_AA)


def _write_png(image: np.ndarray, path: Path) -> None:
    check_output_paths(plot=path)  # the real cause (a file where a folder must be, the extension) by name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        written = cv2.imwrite(str(path), image)
    except (cv2.error, OSError) as error:
        raise OutputError(f"{path}: cannot write the timeline image: {error}") from None
    if not written:
        raise OutputError(f"{path}: cannot write the timeline image: OpenCV's encoder failed (a full disk?)")


def _runs(mask: np.ndarray) -> list[np.ndarray]:
    """Index arrays of the consecutive True runs of a boolean mask."""
    index = np.flatnonzero(mask)
    if not len(index):
        return []
    return np.split(index, np.flatnonzero(np.diff(index) > 1) + 1)


def _ticks(t0: float, t1: float, target: int = 8) -> list[float]:
    span = max(t1 - t0, 1e-9)
    raw = span / target
    step = min((s * 10 ** math.floor(math.log10(raw)) for s in (1, 2, 5, 10)), key=lambda s: abs(s - raw))
    first = math.ceil(t0 / step) * step
    return [round(first + i * step, 6) for i in range(int((t1 - first) / step) + 1)]
