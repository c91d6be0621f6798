"""What the stages hand on: a frame's Face (the aligned crop, or none) and a frame's result (its probabilities).

Both live in the core because the face stages, the scheduler and the writers all pass them along.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Face:
    """One frame's face: the RGB uint8 crop [S, S, 3] at the network's size (None when there is no face),
    the stage's confidence in [0, 1], the face box in frame pixels (x0, y0, x1, y1) when known, the
    points the crop was aligned on, float [k, 2] in frame pixels: the eye centres (image-left first), then the
    nose tip and mouth corners when the stage finds them (None for `aligned`), and the 68 facial landmarks
    [68, 2] in frame pixels, iBUG 300-W order, from a stage that measures them (dlib; None otherwise), and
    `face_id`: which of the frame's faces it is, the same for one face followed over frames (0 with one face);
    `starts_track`: the first frame of a newly found face, so that a stream never runs on from another face that
    had the same face_id (a one-face tracker that lost its face and found another)."""

    crop: np.ndarray | None
    confidence: float
    box: tuple[float, float, float, float] | None = None
    points: np.ndarray | None = None
    landmarks: np.ndarray | None = None
    face_id: int = 0
    starts_track: bool = False

    @property
    def eyes(self) -> np.ndarray | None:
        """The eye centres [2, 2] (image-left, image-right) in frame pixels, when the stage found them."""
        return None if self.points is None else self.points[:2]

    @property
    def success(self) -> bool:
        return self.crop is not None


NO_FACE = Face(None, 0.0)


@dataclass
class FrameResult:
    """One frame's output. `probs` [U] is None where no face was found; `arrival` is when the source
    yielded the frame and `final` when its result became final (clock seconds); `stream` numbers the
    source's face streams (a run of frames with a face), -1 for a frame without one; `box` is the face's
    box in frame pixels when the face stage knows it (for overlays); `landmarks` [68, 2] (frame pixels) and
    `pose` [6] (pose_Tx, pose_Ty, pose_Tz in mm, pose_Rx, pose_Ry, pose_Rz in radians) are set by the writers
    that need them (`io/head_pose.py`), from a face stage with 68 landmarks. A frame with several faces has a
    result per face, by `face_id`; a frame without a face has one result, face_id 0."""

    source: str
    index: int
    timestamp: float
    success: bool
    confidence: float
    probs: np.ndarray | None
    arrival: float
    final: float = math.nan
    stream: int = -1
    box: tuple[float, float, float, float] | None = None
    landmarks: np.ndarray | None = None
    pose: np.ndarray | None = None
    face_id: int = 0

    @property
    def frame(self) -> int:
        """The CSV's frame number: 1-based, as OpenFace counts."""
        return self.index + 1

    @property
    def latency(self) -> float:
        """Seconds from the frame's arrival to its final result."""
        return self.final - self.arrival

    @property
    def done(self) -> bool:
        return not math.isnan(self.final)


class KeptFrames:
    """Frames taken from a FrameTap for one batch of results: `frames[index] = (image, {face_id: Face})`."""

    def __init__(self, frames: dict[int, tuple[np.ndarray, dict[int, Face]]] | None = None) -> None:
        self.frames = frames or {}

    def face(self, result: FrameResult) -> tuple[np.ndarray, Face] | None:
        """The frame of `result` and its face (None: the frame was not kept, or had no such face)."""
        frame = self.frames.get(result.index)
        if frame is None or result.face_id not in frame[1]:
            return None
        return frame[0], frame[1][result.face_id]

    def frame(self, index: int) -> tuple[np.ndarray, dict[int, Face]] | None:
        return self.frames.get(index)
