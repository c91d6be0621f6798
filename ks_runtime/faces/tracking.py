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
from ks_runtime.faces.align import align_crop, align_matrix, similarity
from ks_runtime.faces.base import FaceStage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrackerConfig:
    """Knobs of the tracker (pixels are the frame's unless said otherwise).

    detect_every: frames between detections while the flow holds; detect_width: the whole frame is downscaled
    to this width for a full detection; window: side of the search window around a track, in face widths;
    window_face_px: the window is scaled so the tracked face is this wide; flow_face_px: likewise for the
    optical flow; smoothing: weight of a measurement whose residual is small (1: no smoothing); follow: a
    residual of this many face widths is taken whole; max_misses: failed detections before the track ends;
    scan_width: the whole frame's width when it is searched for every face (multi-face: small faces in a group
    are lost at detect_width).
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
    scan_width: int = 640


@dataclass
class Measurement:
    """What a backend measured on one face: its box (x0, y0, x1, y1), points [k, 2], a confidence and, from a
    backend that measures them, the 68 landmarks [68, 2]."""

    box: np.ndarray
    points: np.ndarray
    confidence: float
    landmarks: np.ndarray | None = None


@dataclass
class Track:
    """The followed face: smoothed box and points, the last measurement's confidence, frames since the last
    detection, detections in a row that found nothing, its `face_id`, and the latest measured 68 landmarks with
    the points they were measured at (`landmarks_at`), when the backend measures landmarks."""

    box: np.ndarray
    points: np.ndarray
    confidence: float
    age: int = 0
    misses: int = 0
    face_id: int = 0
    landmarks: np.ndarray | None = None
    landmarks_at: np.ndarray | None = None
    fresh: bool = True  # no Face made from it yet

    @classmethod
    def start(cls, measured: Measurement, face_id: int = 0) -> Track:
        track = cls(measured.box, measured.points, measured.confidence, face_id=face_id)
        track.keep_landmarks(measured)
        return track

    def keep_landmarks(self, measured: Measurement) -> None:
        if measured.landmarks is not None:
            self.landmarks, self.landmarks_at = measured.landmarks, measured.points

    def current_landmarks(self) -> np.ndarray | None:
        """The latest measured landmarks, moved with the track's smoothed points: the similarity from the points
        they were measured at to today's moves all 68 alike, so they agree with the crop and keep the shape (the
        expression) of the measurement."""
        if self.landmarks is None:
            return None
        return apply(similarity(self.landmarks_at, self.points), self.landmarks)


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
    track.keep_landmarks(measured)


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
    `measure_every_frame` makes the tracker measure the points on every frame, not only on detections.

    With `max_faces` 1 (the default) it follows the largest face; otherwise every face, up to `max_faces`
    (0: no limit), each its own track with a `face_id` (multi-face, below)."""

    min_detect_px = 24
    measure_every_frame = False
    config_defaults: dict = {}

    def __init__(
        self,
        preprocess: Preprocess,
        template: np.ndarray | None = None,
        config: TrackerConfig | None = None,
        max_faces: int = 1,
    ) -> None:
        super().__init__(preprocess, template, max_faces)
        self.config = config or TrackerConfig(**self.config_defaults)
        self.detections = 0  # detector runs (whole frame or window): what tracking saves
        self.full_detections = 0
        self.crowded_frames = 0  # frames where more faces were found than max_faces let it score (kept over resets)
        self.reset()

    def reset(self) -> None:
        self.tracks: list[Track] = []
        self._prev: np.ndarray | None = None
        self._next_id = 0
        self._since_scan = 0

    @property
    def track(self) -> Track | None:
        """The single-face track (max_faces 1), or the first of several."""
        return self.tracks[0] if self.tracks else None

    def track_near(self, box: np.ndarray) -> Track | None:
        """The track this box continues (overlap 0.3 or more), or None for a new face."""
        return next((t for t in self.tracks if iou(t.box, box) >= 0.3), None)

    # --- the backend's part ----------------------------------------------------------------------------
    def detect(self, grey: np.ndarray, min_size: int, max_size: int | None) -> np.ndarray:
        """Face boxes [m, 4] (x0, y0, x1, y1) in `grey`'s pixels, sides within min_size..max_size."""
        raise NotImplementedError

    def measure(self, grey: np.ndarray, box: np.ndarray) -> Measurement:
        """The points to align on, and the confidence, for the face in `box` (frame pixels)."""
        raise NotImplementedError

    # --- finding faces -----------------------------------------------------------------------------------
    def detect_all(self, grey: np.ndarray, width: int | None = None) -> np.ndarray:
        """Every face box [m, 4] in the whole frame (downscaled to `width`, default detect_width), largest first."""
        self.detections += 1
        self.full_detections += 1
        scale = min(1.0, (width or self.config.detect_width) / grey.shape[1])
        small = scaled_region(grey, (0, 0, grey.shape[1], grey.shape[0]), scale)
        boxes = np.asarray(self.detect(small, self.min_detect_px, None), np.float64).reshape(-1, 4)
        boxes = (boxes + 0.5) / scale - 0.5
        return boxes[np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), kind="stable")]

    def detect_full(self, grey: np.ndarray) -> np.ndarray | None:
        """The largest face in the whole frame (downscaled to detect_width), or None."""
        boxes = self.detect_all(grey)
        if len(boxes) > 1:
            self.crowded_frames += 1
        return boxes[0] if len(boxes) else None

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

    # --- the stage: one face -----------------------------------------------------------------------------
    def __call__(self, image: np.ndarray, index: int) -> Face:
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        prev, self._prev = self._prev, grey
        track = self.track if self.track is not None else self._start(grey)
        if track is not None and (track.age or track.misses):  # not a track started on this frame: follow it
            track = self._follow(track, prev, grey, relocate=True)
        self.tracks = [] if track is None else [track]
        return NO_FACE if track is None else self._face(image, track)

    def _face(self, image: np.ndarray, track: Track) -> Face:
        """The track's Face on this frame: the crop aligned on its points, its box, points and landmarks."""
        track.age += 1
        matrix = align_matrix(track.points, self.template, self.preprocess.size)
        crop = align_crop(image, matrix, self.preprocess.size)
        confidence = track.confidence * 0.6**track.misses
        box = tuple(float(v) for v in track.box)
        starts, track.fresh = track.fresh, False
        points, landmarks = track.points.copy(), track.current_landmarks()
        return Face(crop, float(confidence), box, points, landmarks, track.face_id, starts_track=starts)

    def _start(self, grey: np.ndarray, box: np.ndarray | None = None, face_id: int = 0) -> Track | None:
        """A new track on the largest face of the frame (or on `box`), or None without a face."""
        box = self.detect_full(grey) if box is None else box
        if box is None:
            return None
        return Track.start(self.measure(grey, box), face_id)

    def _follow(self, track: Track, prev: np.ndarray | None, grey: np.ndarray, relocate: bool) -> Track | None:
        """Carry the track to this frame by optical flow; detect and blend when due; None once it is lost. With
        `relocate`, a face found elsewhere in the frame when the track's own is gone starts a new track."""
        config = self.config
        motion = flow_motion(prev, grey, track.box, config) if prev is not None and prev.shape == grey.shape else None
        if motion is not None:
            track.box, track.points = move_box(track.box, motion), apply(motion, track.points)
        if track.age < config.detect_every and motion is not None:
            if self.measure_every_frame:
                blend(track, self.measure(grey, track.box), config.smoothing, config.follow)
            return track
        box = self.detect_near(grey, track.box)
        if box is None and relocate:
            box = self.detect_full(grey)
            if box is not None and iou(box, track.box) < 0.1:  # the face is elsewhere now (or another one)
                return self._start(grey, box, track.face_id)
        if box is None:
            track.misses += 1
            if motion is None or track.misses > config.max_misses:
                return None
            return track  # flow only until a detection finds the face again (the next frame tries)
        blend(track, self.measure(grey, box), config.smoothing, config.follow)
        track.age = track.misses = 0
        return track

    # --- the stage: every face ---------------------------------------------------------------------------
    def faces(self, image: np.ndarray, index: int) -> list[Face]:
        """Every face of the frame, up to max_faces, by face_id. Each track is followed as one face is; the whole
        frame is searched for new faces at the first frame, every detect_every frames and whenever no face is
        tracked. A face that leaves and comes back is a new track with a new face_id (no re-identification)."""
        if self.max_faces == 1:
            return super().faces(image, index)
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        prev, self._prev = self._prev, grey
        followed = [self._follow(t, prev, grey, relocate=False) for t in self.tracks]
        self.tracks = distinct_tracks([t for t in followed if t is not None])
        self._since_scan += 1
        if not self.tracks or self._since_scan >= self.config.detect_every:
            self._scan(grey)
        return [self._face(image, track) for track in self.tracks]

    def _scan(self, grey: np.ndarray) -> None:
        """Start a track on each face in the whole frame that no track follows yet, largest first, while there is
        room under max_faces (a frame with more is counted in crowded_frames)."""
        self._since_scan = 0
        boxes = self.detect_all(grey, max(self.config.detect_width, self.config.scan_width))
        new = [box for box in boxes if self.track_near(box) is None]
        room = len(new) if self.max_faces == 0 else max(0, self.max_faces - len(self.tracks))
        if len(new) > room:
            self.crowded_frames += 1
        for box in new[:room]:
            self.tracks.append(self._start(grey, box, self._next_id))
            self._next_id += 1
        self.tracks.sort(key=lambda t: t.face_id)


def distinct_tracks(tracks: list[Track]) -> list[Track]:
    """The tracks without the ones that drifted onto another's face (overlap over 0.5): the older (lower face_id)
    stays."""
    kept: list[Track] = []
    for track in sorted(tracks, key=lambda t: t.face_id):
        if all(iou(track.box, other.box) <= 0.5 for other in kept):
            kept.append(track)
    return kept
