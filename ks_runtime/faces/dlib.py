"""The `dlib` face stage (optional extra `dlib`: dlib-bin and face_recognition_models): dlib's HOG face
detector and its 68-point landmark model, tracked over frames like `haar` (tracking.py).

The landmarks give five points, the eye centres (mean of each eye's six landmarks), the nose tip and the mouth
corners, mapped onto the template's five points by a least-squares similarity: a better alignment than two eyes
from a cascade. The landmarks are measured on every frame (about a millisecond), the detector runs as haar's does.
Each Face carries the 68 landmarks too (the OpenFace CSV's x_0..y_67 and head pose), moved with the track's
smoothing so that they agree with the crop the network reads.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import logging
from pathlib import Path

import numpy as np

from ks_runtime.core.errors import ConfigError
from ks_runtime.core.results import Face
from ks_runtime.faces.align import similarity
from ks_runtime.faces.base import register_face_stage
from ks_runtime.faces.tracking import Measurement, TrackedFaces, apply

log = logging.getLogger(__name__)

try:  # optional: `pip install knowledge-spreader[dlib]`
    import dlib
except ImportError:
    dlib = None

INSTALL = "pip install dlib-bin face_recognition_models (the `dlib` extra)"
LANDMARKS_68 = "shape_predictor_68_face_landmarks.dat"
# 68-point (iBUG 300-W) indices, image-left first: the subject's right eye is on the image's left.
LEFT_EYE, RIGHT_EYE, NOSE_TIP, MOUTH_LEFT, MOUTH_RIGHT = slice(36, 42), slice(42, 48), 30, 48, 54
CONFIDENCE = 0.95


def landmark_model_path() -> Path:
    """The 68-point model file shipped by face_recognition_models (found without importing the package, whose
    __init__ needs pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"face stage 'dlib' needs the landmark model of face_recognition_models: {INSTALL}")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / LANDMARKS_68
    if not path.is_file():
        raise ConfigError(f"{path}: missing; reinstall face_recognition_models")
    return path


def dlib_missing() -> str | None:
    """Why the dlib stage cannot run here (None when it can)."""
    if dlib is None:
        return f"face stage 'dlib' needs the dlib package: {INSTALL}"
    try:
        landmark_model_path()
    except ConfigError as error:
        return str(error)
    return None


@functools.lru_cache(maxsize=1)
def _models() -> tuple:
    """dlib's face detector and 68-point predictor, loaded once (the model file is 100 MB)."""
    return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(landmark_model_path()))


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """68 landmarks [68, 2] -> [5, 2]: eye centres (image-left first), nose tip, mouth corners (left first)."""
    return np.stack(
        [
            landmarks[LEFT_EYE].mean(0),
            landmarks[RIGHT_EYE].mean(0),
            landmarks[NOSE_TIP],
            landmarks[MOUTH_LEFT],
            landmarks[MOUTH_RIGHT],
        ]
    )


@register_face_stage("dlib")
class DlibFaces(TrackedFaces):
    """dlib's HOG detector and 68 landmarks, tracked (see the module docstring)."""

    min_detect_px = 80  # the HOG detector's window
    measure_every_frame = True
    config_defaults = {"detect_width": 640, "window_face_px": 110}
    landmark_count = 68

    def __init__(self, *args, **kwargs) -> None:
        missing = dlib_missing()
        if missing:
            raise ConfigError(missing)
        self.detector, self.predictor = _models()
        super().__init__(*args, **kwargs)

    def reset(self) -> None:
        super().reset()
        self._measured: np.ndarray | None = None  # the track's latest 68 landmarks, as measured

    def __call__(self, image: np.ndarray, index: int) -> Face:
        face = super().__call__(image, index)
        if not face.success or self._measured is None:
            return face
        # The track's points are smoothed (and carried by optical flow on a frame without a measurement); the
        # similarity from the measured five points to them moves all 68 the same way, so the landmarks agree with
        # the crop while keeping the shape (the expression) of the latest measurement.
        motion = similarity(five_points(self._measured), face.points)
        return dataclasses.replace(face, landmarks=apply(motion, self._measured))

    def detect(self, grey: np.ndarray, min_size: int, max_size: int | None) -> np.ndarray:
        found = self.detector(np.ascontiguousarray(grey), 0)
        boxes = np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in found], np.float64)
        if not len(boxes):
            return np.zeros((0, 4))
        sides = boxes[:, 2] - boxes[:, 0]
        return boxes[(sides >= min_size) & ((sides <= max_size) if max_size else True)]

    def landmarks(self, grey: np.ndarray, box: np.ndarray) -> np.ndarray:
        """The 68 landmarks [68, 2] of the face in `box` (frame pixels)."""
        rect = dlib.rectangle(*(int(round(v)) for v in (box[0], box[1], box[2] - 1, box[3] - 1)))
        shape = self.predictor(np.ascontiguousarray(grey), rect)
        return np.array([[p.x, p.y] for p in shape.parts()], np.float64)

    def measure(self, grey: np.ndarray, box: np.ndarray) -> Measurement:
        self._measured = self.landmarks(grey, box)
        return Measurement(np.asarray(box, np.float64), five_points(self._measured), CONFIDENCE)
