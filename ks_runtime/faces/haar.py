"""The `haar` face stage: OpenCV's bundled Haar cascades, tracked over frames (tracking.py).

The face cascade (haarcascade_frontalface_default.xml) finds the face box; the eye cascade
(haarcascade_eye.xml), run on the upper part of the box, finds the eye centres, and so the roll angle. Where it
finds no plausible pair, the face cascade is run on copies of the face turned by a few angles to find its roll
(roll.py: every angle for a new face, around its track's roll for a followed one); in the copy that sets it
upright the eye cascade tries again, and failing that the eyes are placed in the upright box at fixed ratios
(EYE_RATIOS), turned back with the face, at a lower confidence: the crop's eye line stays level on a tilted
head. Both cascades ship with opencv-python(-headless) < 5 in `cv2.data.haarcascades`; nothing is downloaded.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from ks_runtime.core.errors import ConfigError
from ks_runtime.faces.base import register_face_stage
from ks_runtime.faces.roll import eye_line_roll, find_roll
from ks_runtime.faces.tracking import Measurement, TrackedFaces, box_width, clip_region, scaled_region

log = logging.getLogger(__name__)

FACE_CASCADE = "haarcascade_frontalface_default.xml"
EYE_CASCADE = "haarcascade_eye.xml"

# Eye centres in a Haar face box, as fractions of the box (x from its left edge over its width, y from its top
# over its height), image-left eye first. Measured by `python -m ks_runtime.tools.face_eval --measure-ratios
# --sequences 6 --frames 300`: the median over 341 frames (every 5th frame of six SynthAU 2.0 scene videos,
# size small, seed 11, no exits) of the true eye centres relative to the whole-frame Haar box; the spread over
# frames is 0.02-0.03 of the box, so placed eyes are off by about 0.08 of the inter-ocular distance.
EYE_RATIOS = np.array([[0.332, 0.414], [0.669, 0.411]])
CONFIDENCE_EYES = 0.95  # the eye cascade found both eyes where they should be
CONFIDENCE_RATIOS = 0.75  # eyes placed by EYE_RATIOS: the box's jitter (and the roll search's error) in the crop
# The eye search: a band of the box (fractions of its height), scaled so the box is EYE_FACE_PX wide.
EYE_BAND = (0.18, 0.62)
EYE_FACE_PX = 120
EYE_TOLERANCE = 0.12  # a found eye counts within this many box widths of where the ratios put it


def cascade_path(name: str) -> Path:
    """The path of one of OpenCV's bundled cascades; ConfigError if this OpenCV has none."""
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    path = Path(folder or "") / name
    if not folder or not path.is_file():
        raise ConfigError(
            f"face stage 'haar': OpenCV {cv2.__version__} has no {name} (cv2.data.haarcascades); "
            f"install opencv-python-headless<5, which ships the Haar cascades"
        )
    return path


def load_cascade(name: str) -> cv2.CascadeClassifier:
    path = cascade_path(name)
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise ConfigError(f"{path}: OpenCV cannot load this cascade")
    return cascade


def eyes_from_box(box: np.ndarray) -> np.ndarray:
    """Eye centres [2, 2] placed in a Haar face box by EYE_RATIOS."""
    x0, y0, x1, y1 = box
    return np.array([x0, y0]) + EYE_RATIOS * np.array([x1 - x0, y1 - y0])


def pick_eyes(candidates: np.ndarray, expected: np.ndarray, width: float) -> np.ndarray | None:
    """The pair of eye detections [2, 2] nearest the expected eyes [2, 2], each within EYE_TOLERANCE face widths
    of its own and the two apart as eyes are; None if there is no such pair."""
    if len(candidates) < 2:
        return None
    distance = np.linalg.norm(candidates[:, None, :] - expected[None], axis=2)  # (m, 2)
    left, right = int(np.argmin(distance[:, 0])), int(np.argmin(distance[:, 1]))
    if left == right or max(distance[left, 0], distance[right, 1]) > EYE_TOLERANCE * width:
        return None
    pair = candidates[[left, right]]
    gap = pair[1] - pair[0]
    if not (0.2 * width < gap[0] < 0.6 * width and abs(gap[1]) < 0.5 * gap[0]):
        return None
    return pair


@register_face_stage("haar")
class HaarFaces(TrackedFaces):
    """OpenCV's Haar face and eye cascades, tracked (see the module docstring and tracking.py)."""

    min_detect_px = 24  # the face cascade's window
    roll_search = True  # without an eye pair, find the roll (roll.py); False: the eyes level in the box

    def __init__(self, *args, **kwargs) -> None:
        self.face_cascade = load_cascade(FACE_CASCADE)
        self.eye_cascade = load_cascade(EYE_CASCADE)
        super().__init__(*args, **kwargs)

    def detect(self, grey: np.ndarray, min_size: int, max_size: int | None) -> np.ndarray:
        found = self.face_cascade.detectMultiScale(
            grey,
            scaleFactor=1.1,
            minNeighbors=4,
            minSize=(min_size, min_size),
            maxSize=(max_size, max_size) if max_size else (0, 0),
        )
        if not len(found):
            return np.zeros((0, 4))
        boxes = np.asarray(found, np.float64)
        return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)

    def find_eyes(self, grey: np.ndarray, box: np.ndarray) -> np.ndarray:
        """Eye cascade detections' centres [m, 2] (frame pixels) in the eye band of the face box."""
        x0, y0, x1, y1 = box
        band = np.array([x0, y0 + EYE_BAND[0] * (y1 - y0), x1, y0 + EYE_BAND[1] * (y1 - y0)])
        region = clip_region(band, grey.shape)
        if region is None:
            return np.zeros((0, 2))
        scale = min(1.0, EYE_FACE_PX / max(box_width(box), 1.0))
        size = box_width(box) * scale
        found = self.eye_cascade.detectMultiScale(
            scaled_region(grey, region, scale),
            scaleFactor=1.1,
            minNeighbors=3,
            minSize=(max(12, int(0.1 * size)),) * 2,
            maxSize=(int(0.4 * size),) * 2,
        )
        if not len(found):
            return np.zeros((0, 2))
        found = np.asarray(found, np.float64)
        centres = found[:, :2] + found[:, 2:] / 2  # the detection's centre in the scaled band
        return (centres + 0.5) / scale - 0.5 + np.array(region[:2])

    def raw_windows(self, grey: np.ndarray, min_size: int, max_size: int) -> np.ndarray:
        """The face cascade's windows [m, 4] (x, y, w, h) before grouping: how many there are around a face says
        how upright it is (roll.py)."""
        found = self.face_cascade.detectMultiScale(
            grey, scaleFactor=1.1, minNeighbors=0, minSize=(min_size, min_size), maxSize=(max_size, max_size)
        )
        return np.asarray(found, np.float64).reshape(-1, 4)

    def eyes_in(self, grey: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        """The eye cascade's pair of eyes [2, 2] in an upright face box, or None."""
        return pick_eyes(self.find_eyes(grey, box), eyes_from_box(box), box_width(box))

    def roll_prior(self, box: np.ndarray) -> float | None:
        """The roll of the track this box continues (carried by the optical flow), or None for a new face."""
        track = self.track_near(box)
        return None if track is None else eye_line_roll(track.points)

    def measure(self, grey: np.ndarray, box: np.ndarray) -> Measurement:
        box = np.asarray(box, np.float64)
        eyes = self.eyes_in(grey, box)
        if eyes is not None:
            return Measurement(box, eyes, CONFIDENCE_EYES)
        upright = (
            find_roll(grey, box, self.raw_windows, self.detect, self.roll_prior(box)) if self.roll_search else None
        )
        if upright is None:  # the eyes at the ratios of the upright box: no roll
            return Measurement(box, eyes_from_box(box), CONFIDENCE_RATIOS)
        # The eye cascade looks for upright eyes: again in the face turned upright, at the scale it needs; else
        # the ratios in the upright box, turned back with the face, so the crop keeps the eye line level.
        eyes_view = upright.rescaled(grey, EYE_FACE_PX)
        eyes = self.eyes_in(eyes_view.copy, eyes_view.box)
        if eyes is not None:
            return Measurement(box, eyes_view.to_frame(eyes), CONFIDENCE_EYES)
        return Measurement(box, upright.to_frame(eyes_from_box(upright.box)), CONFIDENCE_RATIOS)
