"""The `dlib` and `dlib-cnn` face stages (optional extra `dlib`: dlib-bin and face_recognition_models): a dlib
face detector and dlib's 68-point landmark model, tracked over frames like `haar` (tracking.py).

`dlib` finds faces with dlib's HOG detector; `dlib-cnn` with dlib's CNN (MMOD) face detector,
mmod_human_face_detector.dat from face_recognition_models, made for harder faces (turned, partly hidden) at many
times the HOG detector's cost (docs/runtime.md scores both). Both measure the same landmarks, in a copy of the
frame turned upright when the tracked head is tilted (the landmark model starts from an upright face).

The landmarks give five points, the eye centres (mean of each eye's six landmarks), the nose tip and the mouth
corners, mapped onto the template's five points by a least-squares similarity: a better alignment than two eyes
from a cascade. The landmarks are measured on every frame (about a millisecond), the detector runs as haar's does.
Each Face carries the 68 landmarks too (the OpenFace CSV's x_0..y_67 and head pose), moved with the track's
smoothing so that they agree with the crop the network reads.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from pathlib import Path

import cv2
import numpy as np

from ks_runtime.core.errors import ConfigError
from ks_runtime.faces.base import register_face_stage
from ks_runtime.faces.roll import eye_line_roll, rotated_copy
from ks_runtime.faces.tracking import Measurement, TrackedFaces, apply, box_width

log = logging.getLogger(__name__)

try:  # optional: `pip install knowledge-spreader[dlib]`
    import dlib
except ImportError:
    dlib = None

INSTALL = "pip install dlib-bin face_recognition_models (the `dlib` extra)"
LANDMARKS_68 = "shape_predictor_68_face_landmarks.dat"
CNN_DETECTOR = "mmod_human_face_detector.dat"
# 68-point (iBUG 300-W) indices, image-left first: the subject's right eye is on the image's left.
LEFT_EYE, RIGHT_EYE, NOSE_TIP, MOUTH_LEFT, MOUTH_RIGHT = slice(36, 42), slice(42, 48), 30, 48, 54
CONFIDENCE = 0.95
# The landmark model holds to about 20 degrees of head tilt (docs/runtime.md: `dlib-noupright` on the roll sets);
# a head the track holds tilted by more than this is measured in a copy turned upright by the track's roll, which
# spans UPRIGHT_REGION face widths.
UPRIGHT_ABOVE_DEG = 10.0
UPRIGHT_REGION = 1.6
# The HOG detector's box relative to the CNN's on the same face: its centre moved by (x, y) CNN box widths, its
# side scaled. Measured by `python -m ks_runtime.tools.face_eval --measure-cnn-box --sequences 6 --frames 300`: the
# median over 357 frames (every 5th of six frontal SynthAU scene videos, no exits) where both found the face; the
# spread over frames is 0.05 (shifts) and 0.10 (scale).
CNN_TO_HOG = np.array([0.039, 0.078, 1.091])


def model_path(filename: str = LANDMARKS_68, stage: str = "dlib") -> Path:
    """A model file shipped by face_recognition_models (found without importing the package, whose __init__
    needs pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"face stage {stage!r} needs the models of face_recognition_models: {INSTALL}")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / filename
    if not path.is_file():
        raise ConfigError(f"{path}: missing; reinstall face_recognition_models")
    return path


def landmark_model_path() -> Path:
    """The 68-point landmark model's file."""
    return model_path(LANDMARKS_68)


def dlib_missing(stage: str = "dlib", files: tuple[str, ...] = (LANDMARKS_68,)) -> str | None:
    """Why face stage `stage`, which reads these model files, cannot run here (None when it can)."""
    if dlib is None:
        return f"face stage {stage!r} needs the dlib package: {INSTALL}"
    try:
        for filename in files:
            model_path(filename, stage)
    except ConfigError as error:
        return str(error)
    return None


@functools.lru_cache(maxsize=1)
def _models() -> tuple:
    """dlib's face detector and 68-point predictor, loaded once (the model file is 100 MB)."""
    return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(landmark_model_path()))


@functools.lru_cache(maxsize=1)
def _cnn_detector():
    """dlib's CNN face detector, loaded once."""
    return dlib.cnn_face_detection_model_v1(str(model_path(CNN_DETECTOR, "dlib-cnn")))


def detected_boxes(found) -> np.ndarray:
    """dlib detections (rectangles, or the CNN's mmod_rectangles that hold one) -> boxes [m, 4] (x0, y0, x1, y1)."""
    rects = [getattr(r, "rect", r) for r in found]
    return np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in rects], np.float64).reshape(-1, 4)


def sized(boxes: np.ndarray, min_size: int, max_size: int | None) -> np.ndarray:
    """The boxes whose side is within min_size..max_size (no upper bound without max_size)."""
    sides = boxes[:, 2] - boxes[:, 0]
    return boxes[(sides >= min_size) & ((sides <= max_size) if max_size else True)]


def moved_boxes(boxes: np.ndarray, shift_scale: np.ndarray) -> np.ndarray:
    """Boxes [m, 4] with their centre moved by (dx, dy) box widths and their sides scaled by s: shift_scale
    (dx, dy, s)."""
    dx, dy, factor = shift_scale
    width = boxes[:, 2] - boxes[:, 0]
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2 + np.stack([dx * width, dy * width], 1)
    half = (boxes[:, 2:] - boxes[:, :2]) / 2 * factor
    return np.concatenate([centre - half, centre + half], 1)


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
    upright_above_deg = UPRIGHT_ABOVE_DEG

    def __init__(self, *args, **kwargs) -> None:
        missing = dlib_missing()
        if missing:
            raise ConfigError(missing)
        self.detector, self.predictor = _models()
        super().__init__(*args, **kwargs)

    def detect(self, grey: np.ndarray, min_size: int, max_size: int | None) -> np.ndarray:
        return sized(detected_boxes(self.detector(np.ascontiguousarray(grey), 0)), min_size, max_size)

    def predict(self, grey: np.ndarray, box: np.ndarray) -> np.ndarray:
        """The landmark model's 68 points [68, 2] for the face in `box` of `grey`."""
        rect = dlib.rectangle(*(int(round(v)) for v in (box[0], box[1], box[2] - 1, box[3] - 1)))
        shape = self.predictor(np.ascontiguousarray(grey), rect)
        return np.array([[p.x, p.y] for p in shape.parts()], np.float64)

    def landmarks(self, grey: np.ndarray, box: np.ndarray) -> np.ndarray:
        """The 68 landmarks [68, 2] of the face in `box` (frame pixels). The model starts from an upright mean
        face: a head tilted by more than upright_above_deg (by the track, or on a new track by a first
        measurement) is measured again in a copy of the frame turned upright, and the points turned back."""
        box = np.asarray(box, np.float64)
        track = self.track_near(box)
        if track is None:
            points = self.predict(grey, box)
            roll = eye_line_roll(five_points(points))
            return points if abs(roll) <= self.upright_above_deg else self.predict_upright(grey, box, roll)
        roll = eye_line_roll(track.points)
        if abs(roll) <= self.upright_above_deg:
            return self.predict(grey, box)
        return self.predict_upright(grey, box, roll)

    def predict_upright(self, grey: np.ndarray, box: np.ndarray, roll: float) -> np.ndarray:
        """The landmarks measured in a copy of the frame turned by `roll` degrees about the box's centre."""
        centre = (box[:2] + box[2:]) / 2
        side = int(np.ceil(UPRIGHT_REGION * box_width(box)))
        copy, matrix = rotated_copy(grey, centre, roll, 1.0, side)
        points = self.predict(copy, box - np.tile(centre, 2) + side / 2.0)
        return apply(cv2.invertAffineTransform(matrix), points)

    def measure(self, grey: np.ndarray, box: np.ndarray) -> Measurement:
        landmarks = self.landmarks(grey, box)
        return Measurement(np.asarray(box, np.float64), five_points(landmarks), CONFIDENCE, landmarks)


@register_face_stage("dlib-cnn")
class DlibCnnFaces(DlibFaces):
    """dlib's CNN (MMOD) face detector in place of the HOG one; the landmarks, tracking and Faces are `dlib`'s."""

    # The CNN's smallest box is about 80 px (87 px once moved by CNN_TO_HOG). Windows around a track are scaled so
    # the face is 96 px, just above that: the CNN's time grows with the pixels it reads, and a window that size is
    # a small part of a 640 x 480 frame.
    min_detect_px = 60
    config_defaults = {"detect_width": 640, "window_face_px": 96}
    box_map = CNN_TO_HOG

    def __init__(self, *args, **kwargs) -> None:
        missing = dlib_missing(self.name, (LANDMARKS_68, CNN_DETECTOR))
        if missing:
            raise ConfigError(missing)
        super().__init__(*args, **kwargs)
        self.detector = _cnn_detector()

    def detect(self, grey: np.ndarray, min_size: int, max_size: int | None) -> np.ndarray:
        # The landmark model was trained from the HOG detector's boxes: the CNN's, moved to where those would be.
        boxes = moved_boxes(detected_boxes(self.detector(np.ascontiguousarray(grey), 0)), self.box_map)
        return sized(boxes, min_size, max_size)
