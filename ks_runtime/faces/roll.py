"""A face's in-plane roll (head tilt), found by running an upright face detector on rotated copies of the face.

An upright detector (haar's face cascade) answers most strongly when the face in front of it is upright. The
region around a face box is cut out turned by angles ROLL_STEP apart, scaled so the face is ROLL_FACE_PX wide,
and the detector's raw windows (before grouping) around the face are counted in each copy; the roll is the angle
with most, refined by a parabola through it and its two neighbours. A new face is tried at every angle within
ROLL_MAX; a followed one (a prior: the track's roll) from its last roll, climbing towards more windows, which
costs three small detector runs while the head keeps its tilt. Most windows at the last angle tried (the box is
on something upright at no angle here, often a part of the face), or at 0 for a face whose roll is not known or
is near 0, find no roll: the face is taken as upright, as before the search. In the copy turned by the roll the
face is upright; the detector's own (grouped) box there is the one a caller places points in, as on an upright
face, before mapping them back to the frame.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

# The Haar face cascade still answers 15 degrees off upright, so 15-degree steps with the parabola find the roll
# within a few degrees: the crop's roll in face_eval's `haar-noeyes` rows (docs/runtime.md, Faces on raw video).
# Coarser steps or smaller copies cost less and missed the roll more often at 35 degrees of tilt. A head within
# about half a step of upright is left upright: on upright and turned faces the search's own error (now and then
# 15 degrees on a head turned by 30) would tilt crops that were level. A tilt of 35 degrees can also draw windows
# at 0 (an upright part of the face): hence every angle for a new face, not a climb from 0.
ROLL_STEP = 15.0
ROLL_MAX = 60.0
ROLL_FACE_PX = 48  # the face's width in the rotated copies
ROLL_REGION = 1.8  # the copy's side, in face widths
ROLL_SIZES = (0.75, 1.35)  # the windows counted, in face widths: near the face's own size

# A detector on an image, faces between a min and a max side: its ungrouped windows [m, 4] (x, y, w, h), or its
# grouped boxes [m, 4] (x0, y0, x1, y1).
Windows = Callable[[np.ndarray, int, int], np.ndarray]


@dataclass(frozen=True)
class Upright:
    """What a roll search found: the roll (degrees: the slope of the eye line, image-left eye to image-right, y
    down); a copy of the frame turned upright by it (`copy`, and `matrix` [2, 3], frame -> copy), and the face
    box in that copy."""

    roll: float
    copy: np.ndarray
    matrix: np.ndarray
    box: np.ndarray

    def to_frame(self, points: np.ndarray) -> np.ndarray:
        """Points [k, 2] of the upright copy in frame pixels."""
        inverse = cv2.invertAffineTransform(self.matrix)
        return np.asarray(points, np.float64) @ inverse[:, :2].T + inverse[:, 2]

    def rescaled(self, grey: np.ndarray, face_px: float) -> Upright:
        """The same upright copy, cut again from the frame so the face is `face_px` wide (the box kept)."""
        factor = face_px / max(float(self.box[2] - self.box[0]), 1.0)
        side = int(round(self.copy.shape[1] * factor))
        middle = self.copy.shape[1] / 2.0
        centre = self.to_frame(np.array([[middle, middle]]))[0]
        scale = float(np.sqrt(abs(np.linalg.det(self.matrix[:, :2])))) * factor
        copy, matrix = rotated_copy(grey, centre, self.roll, scale, side)
        return Upright(self.roll, copy, matrix, (self.box - middle) * factor + side / 2.0)


def rotated_copy(
    grey: np.ndarray, centre: np.ndarray, angle: float, scale: float, side: int
) -> tuple[np.ndarray, np.ndarray]:
    """A side x side copy of the frame around `centre`, scaled by `scale` and turned counter-clockwise (as seen)
    by `angle` degrees, which sets upright a face whose eye line slopes down by `angle`; and its frame -> copy
    matrix."""
    matrix = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), float(angle), float(scale))
    matrix[:, 2] += side / 2.0 - np.asarray(centre, np.float64)  # the centre lands in the copy's middle
    copy = cv2.warpAffine(grey, matrix, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return copy, matrix


def peak(angles: np.ndarray, scores: np.ndarray) -> float:
    """The angle of the highest score, refined by a parabola through it and its neighbours (evenly spaced
    angles)."""
    k = int(np.argmax(scores))
    if not 0 < k < len(angles) - 1:
        return float(angles[k])
    left, middle, right = scores[k - 1 : k + 2]
    curvature = left - 2 * middle + right
    if curvature >= 0:
        return float(angles[k])
    return float(angles[k] + 0.5 * (left - right) / curvature * (angles[1] - angles[0]))


def central_windows(copy: np.ndarray, raw_windows: Windows) -> np.ndarray:
    """The detector's ungrouped windows [m, 4] (x, y, w, h) in a copy, near the face's size and with their middle
    within a quarter of a face of the copy's middle: the face's own, not a neighbour's."""
    side = copy.shape[1]
    low, high = (int(round(f * ROLL_FACE_PX)) for f in ROLL_SIZES)
    windows = np.asarray(raw_windows(copy, low, high), np.float64).reshape(-1, 4)
    middles = windows[:, :2] + windows[:, 2:] / 2
    return windows[np.linalg.norm(middles - side / 2.0, axis=1) < 0.25 * ROLL_FACE_PX]


def upright_box(copy: np.ndarray, windows: np.ndarray, grouped: Windows) -> np.ndarray:
    """The face's box in an upright copy: the detector's grouped box nearest the middle (what the points are
    placed in on an upright face), else the consensus of its central windows."""
    low, high = (int(round(f * ROLL_FACE_PX)) for f in ROLL_SIZES)
    boxes = np.asarray(grouped(copy, low, high), np.float64).reshape(-1, 4)
    middles = (boxes[:, :2] + boxes[:, 2:]) / 2
    near = np.linalg.norm(middles - copy.shape[1] / 2.0, axis=1) < 0.25 * ROLL_FACE_PX
    if near.any():
        return boxes[near][np.argmin(np.linalg.norm(middles[near] - copy.shape[1] / 2.0, axis=1))]
    x, y, w, h = np.median(windows, 0)
    return np.array([x, y, x + w, y + h])


def eye_line_roll(points: np.ndarray) -> float:
    """The slope of the eye line of points [k, 2] (eyes first, image-left eye first), degrees, y down."""
    gap = np.asarray(points[1], np.float64) - np.asarray(points[0], np.float64)
    return float(np.degrees(np.arctan2(gap[1], gap[0])))


def best_angle(count: Callable[[float], int], prior: float | None) -> float | None:
    """The angle with most windows, no fewer than at either neighbour (module docstring); None for an upright
    face, one not found, or a count still rising at the last angle tried."""
    if prior is None:
        angles = np.arange(-ROLL_MAX, ROLL_MAX + ROLL_STEP / 2, ROLL_STEP)
        counts = [count(float(a)) for a in angles]
        k = int(np.argmax(counts))
        if not counts[k] or k in (0, len(angles) - 1) or angles[k] == 0:
            return None
        return float(angles[k])
    best = float(prior)
    while abs(best) <= ROLL_MAX:
        left, here, right = count(best - ROLL_STEP), count(best), count(best + ROLL_STEP)
        if not (left or here or right):
            return None
        if here >= max(left, right):
            return None if abs(best) < ROLL_STEP / 2 else best
        best += ROLL_STEP if right > left else -ROLL_STEP
    return None


def find_roll(
    grey: np.ndarray, box: np.ndarray, raw_windows: Windows, grouped: Windows, prior: float | None = None
) -> Upright | None:
    """The roll of the face in `box` (frame pixels), and the copy that sets it upright; None when the face is
    upright (or not found: module docstring). `raw_windows` and `grouped`: the detector, before and after
    grouping its windows; `prior`: the roll the face had (its track's), if known."""
    centre = (np.asarray(box[:2], np.float64) + np.asarray(box[2:], np.float64)) / 2.0
    scale = ROLL_FACE_PX / max(float(box[2] - box[0]), 1.0)
    side = int(round(ROLL_FACE_PX * ROLL_REGION))
    counts: dict[float, int] = {}

    def count(angle: float) -> int:
        if angle not in counts:
            counts[angle] = len(central_windows(rotated_copy(grey, centre, angle, scale, side)[0], raw_windows))
        return counts[angle]

    best = best_angle(count, prior)
    if best is None:
        return None
    angles = np.array([best - ROLL_STEP, best, best + ROLL_STEP])
    roll = peak(angles, np.array([count(float(a)) for a in angles]))
    copy, matrix = rotated_copy(grey, centre, roll, scale, side)
    windows = central_windows(copy, raw_windows)
    if not len(windows):  # between two angles that each found it, but not here: the best angle's copy
        roll = best
        copy, matrix = rotated_copy(grey, centre, roll, scale, side)
        windows = central_windows(copy, raw_windows)
    return Upright(roll, copy, matrix, upright_box(copy, windows, grouped))
