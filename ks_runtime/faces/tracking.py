"""Following one face over frames: detect now and then, follow it with optical flow in between, smooth.

`TrackedFaces` is the face stage every detector backend shares (haar.py, dlib.py). A backend gives
two calls: `detect(grey, min_size, max_size)` -> face boxes, and `measure(grey, box)` -> the points the crop is
aligned on (eye centres, then nose tip and mouth corners if it finds them) and a confidence. Per frame:
1. no track: detect on the whole frame (downscaled); nothing found -> NO_FACE.
2. a track: move its box and points by the motion of features inside the face from the previous frame
   (pyramidal Lucas-Kanade, then a RANSAC similarity). Every `detect_every` frames, or at once when the flow
   fails, detect again in a window around the track (the whole frame if the window has nothing), measure the
   points and blend them in (`blend`: small residuals, i.e. detector jitter, are averaged; large ones, a real
   move, are followed at once).
3. `max_misses` detections in a row without a face, or a failed flow with no face found, end the track.
The crop: the points mapped onto the template by a similarity (faces.align_matrix), cut by faces.align_crop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from ks_runtime.core.preprocess import Preprocess
from ks_runtime.core.results import NO_FACE, Face
from ks_runtime.faces.align import align_crop, align_matrix
from ks_runtime.faces.base import FaceStage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrackerConfig:
    """Knobs of the tracker (pixels are the frame's unless said otherwise).

    detect_every: frames between detections while the flow holds; detect_width: the whole frame is downscaled
    to this width for a full detection; window: side of the search window around a track, in face widths;
    window_face_px: the window is scaled so the tracked face is this wide; flow_face_px: likewise for the
    optical flow; smoothing: weight of a measurement whose residual is small (1: no smoothing); follow: a
    residual of this many face widths is taken whole; max_misses: failed detections before the track ends.
    """

    detect_every: int = 5
    detect_width: int = 320
    window: float = 1.8
    window_face_px: int = 64
    flow_face_px: int = 96
    smoothing: float = 0.4
    follow: float = 0.25
    max_misses: int = 3
    min_flow_points: int = 8


@dataclass
class Measurement:
    """What a backend measured on one face: its box (x0, y0, x1, y1), points [k, 2] and a confidence."""

    box: np.ndarray
    points: np.ndarray
    confidence: float


@dataclass
class Track:
    """The followed face: smoothed box and points, the last measurement's confidence, frames since the last
    detection, and detections in a row that found nothing."""

    box: np.ndarray
    points: np.ndarray
    confidence: float
    age: int = 0
    misses: int = 0


# ---------------------------------------------------------------------------------------------------------
# Small pure functions


def box_width(box: np.ndarray) -> float:
    return float(box[2] - box[0])


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boxes (x0, y0, x1, y1)."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return float(w * h / union) if union > 0 else 0.0


def scale_box(box: np.ndarray, factor: float) -> np.ndarray:
    """The box grown (or shrunk) about its centre by `factor`."""
    centre, half = (box[:2] + box[2:]) / 2, (box[2:] - box[:2]) / 2 * factor
    return np.concatenate([centre - half, centre + half])


def move_box(box: np.ndarray, motion: np.ndarray) -> np.ndarray:
    """A box carried by a similarity `motion` [2, 3]: its centre moved, its sides scaled (it stays upright)."""
    centre = motion[:, :2] @ ((box[:2] + box[2:]) / 2) + motion[:, 2]
    half = (box[2:] - box[:2]) / 2 * np.sqrt(abs(np.linalg.det(motion[:, :2])))
    return np.concatenate([centre - half, centre + half])


def apply(motion: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points [k, 2] under a 2x3 matrix."""
    return points @ motion[:, :2].T + motion[:, 2]


def blend(track: Track, measured: Measurement, smoothing: float, follow: float) -> None:
    """Move the track towards a measurement: by `smoothing` for a small residual, wholly for one of `follow`
    face widths or more (an adaptive exponential filter: jitter averaged, real moves followed without lag)."""
    width = max(box_width(track.box), 1.0)
    residual = max(np.abs(measured.box - track.box).max(), np.abs(measured.points - track.points).max()) / width
    gain = smoothing + (1.0 - smoothing) * min(1.0, residual / follow)
    track.box = track.box + gain * (measured.box - track.box)
    track.points = track.points + gain * (measured.points - track.points)
    track.confidence = measured.confidence


def clip_region(box: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    """Integer region (x0, y0, x1, y1) of a box inside a frame of `shape`; None if under 8 px a side."""
    h, w = shape[:2]
    x0, y0 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
    x1, y1 = min(w, int(np.ceil(box[2]))), min(h, int(np.ceil(box[3])))
    return (x0, y0, x1, y1) if x1 - x0 >= 8 and y1 - y0 >= 8 else None


def scaled_region(grey: np.ndarray, region: tuple[int, int, int, int], scale: float) -> np.ndarray:
    """The region (x0, y0, x1, y1) of a grey frame, shrunk by `scale` with area averaging."""
    x0, y0, x1, y1 = region
    patch = grey[y0:y1, x0:x1]
    if scale == 1.0:
        return patch
    size = (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale)))
    return cv2.resize(patch, size, interpolation=cv2.INTER_AREA)


def flow_motion(prev: np.ndarray, grey: np.ndarray, box: np.ndarray, config: TrackerConfig) -> np.ndarray | None:
    """The face's similarity motion [2, 3] (frame pixels) from grey frame `prev` to `grey`, from features
    inside `box` followed by pyramidal Lucas-Kanade; None when too few follow or the motion is implausible."""
    region = clip_region(scale_box(box, 1.3), grey.shape)
    if region is None:
        return None
    scale = min(1.0, config.flow_face_px / max(box_width(box), 1.0))
    a, b = scaled_region(prev, region, scale), scaled_region(grey, region, scale)
    # Features on the face only: the background moves otherwise (or not at all) and would pull the estimate.
    inner = (scale_box(box, 0.8) - np.array(region[:2] * 2)) * scale
    mask = np.zeros(a.shape, np.uint8)
    mask[max(0, int(inner[1])) : int(inner[3]), max(0, int(inner[0])) : int(inner[2])] = 255
    found = cv2.goodFeaturesToTrack(a, maxCorners=60, qualityLevel=0.01, minDistance=3, mask=mask)
    if found is None or len(found) < config.min_flow_points:
        return None
    moved, status, _ = cv2.calcOpticalFlowPyrLK(a, b, found, None, winSize=(15, 15), maxLevel=2)
    ok = status.ravel() == 1
    if ok.sum() < config.min_flow_points:
        return None
    small, inliers = cv2.estimateAffinePartial2D(found[ok], moved[ok], method=cv2.RANSAC, ransacReprojThreshold=1.0)
    if small is None or inliers is None or inliers.sum() < config.min_flow_points:
        return None
    # frame -> scaled region: s * (p - origin); motion in frame pixels = to_frame . small . to_region
    origin = np.array(region[:2], np.float64)
    rot = small[:, :2]
    motion = np.hstack([rot, (small[:, 2] / scale + origin - rot @ origin)[:, None]])
    zoom = np.sqrt(abs(np.linalg.det(rot)))
    shift = np.linalg.norm(apply(motion, ((box[:2] + box[2:]) / 2)[None])[0] - (box[:2] + box[2:]) / 2)
    if not 0.8 < zoom < 1.25 or shift > 0.5 * box_width(box):
        return None
    return motion


# ---------------------------------------------------------------------------------------------------------
# The tracked face stage


class TrackedFaces(FaceStage):
    """A detector backend, tracked over frames (module docstring). Subclasses set `min_detect_px` (the smallest
    face their detector finds, in the image it is given) and implement `detect` and `measure`;
    `measure_every_frame` makes the tracker measure the points on every frame, not only on detections."""

    min_detect_px = 24
    measure_every_frame = False
    config_defaults: dict = {}

    def __init__(
        self, preprocess: Preprocess, template: np.ndarray | None = None, config: TrackerConfig | None = None
    ) -> None:
        super().__init__(preprocess, template)
        self.config = config or TrackerConfig(**self.config_defaults)
        self.detections = 0  # detector runs (whole frame or window): what tracking saves
        self.full_detections = 0
        self.reset()

    def reset(self) -> None:
        self.track: Track | None = None
        self._prev: np.ndarray | None = None

    # --- the backend's part ----------------------------------------------------------------------------
    def detect(self, grey: np.ndarray, min_size: int, max_size: int | None) -> np.ndarray:
        """Face boxes [m, 4] (x0, y0, x1, y1) in `grey`'s pixels, sides within min_size..max_size."""
        raise NotImplementedError

    def measure(self, grey: np.ndarray, box: np.ndarray) -> Measurement:
        """The points to align on, and the confidence, for the face in `box` (frame pixels)."""
        raise NotImplementedError

    # --- finding a face ----------------------------------------------------------------------------------
    def detect_full(self, grey: np.ndarray) -> np.ndarray | None:
        """The largest face in the whole frame (downscaled to detect_width), or None."""
        self.detections += 1
        self.full_detections += 1
        scale = min(1.0, self.config.detect_width / grey.shape[1])
        small = scaled_region(grey, (0, 0, grey.shape[1], grey.shape[0]), scale)
        boxes = self.detect(small, self.min_detect_px, None)
        if not len(boxes):
            return None
        best = boxes[np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))]
        return (best + 0.5) / scale - 0.5

    def detect_near(self, grey: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        """The face overlapping `box` most, searched in a window around it at a scale near its size."""
        region = clip_region(scale_box(box, self.config.window), grey.shape)
        if region is None:
            return None
        self.detections += 1
        target = max(self.config.window_face_px, self.min_detect_px * 1.6)
        scale = min(1.0, target / max(box_width(box), 1.0))
        size = box_width(box) * scale
        boxes = self.detect(
            scaled_region(grey, region, scale), max(self.min_detect_px, int(size * 0.65)), int(np.ceil(size * 1.5))
        )
        if not len(boxes):
            return None
        boxes = (boxes + 0.5) / scale - 0.5 + np.array(region[:2] * 2)
        overlaps = [iou(b, box) for b in boxes]
        best = int(np.argmax(overlaps))
        return boxes[best] if overlaps[best] > 0.2 else None

    # --- the stage -----------------------------------------------------------------------------------------
    def __call__(self, image: np.ndarray, index: int) -> Face:
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        prev, self._prev = self._prev, grey
        track = self.track if self.track is not None else self._start(grey)
        if track is None:
            return NO_FACE
        if track.age or track.misses:  # not a track started on this frame: follow the face here
            track = self._follow(track, prev, grey)
            if track is None:
                return NO_FACE
        track.age += 1
        matrix = align_matrix(track.points, self.template, self.preprocess.size)
        crop = align_crop(image, matrix, self.preprocess.size)
        confidence = track.confidence * 0.6**track.misses
        return Face(crop, float(confidence), tuple(float(v) for v in track.box), track.points.copy())

    def _start(self, grey: np.ndarray, box: np.ndarray | None = None) -> Track | None:
        """A new track on the largest face of the frame (or on `box`), or None without a face."""
        box = self.detect_full(grey) if box is None else box
        if box is None:
            return None
        measured = self.measure(grey, box)
        self.track = Track(measured.box, measured.points, measured.confidence)
        return self.track

    def _follow(self, track: Track, prev: np.ndarray | None, grey: np.ndarray) -> Track | None:
        """Carry the track to this frame by optical flow; detect and blend when due; None once it is lost."""
        config = self.config
        motion = flow_motion(prev, grey, track.box, config) if prev is not None and prev.shape == grey.shape else None
        if motion is not None:
            track.box, track.points = move_box(track.box, motion), apply(motion, track.points)
        if track.age < config.detect_every and motion is not None:
            if self.measure_every_frame:
                blend(track, self.measure(grey, track.box), config.smoothing, config.follow)
            return track
        box = self.detect_near(grey, track.box)
        if box is None:
            box = self.detect_full(grey)
            if box is not None and iou(box, track.box) < 0.1:  # the face is elsewhere now (or another one)
                return self._start(grey, box)
        if box is None:
            track.misses += 1
            if motion is None or track.misses > config.max_misses:
                self.track = None
                return None
            return track  # flow only until a detection finds the face again (the next frame tries)
        blend(track, self.measure(grey, box), config.smoothing, config.follow)
        track.age = track.misses = 0
        return track
