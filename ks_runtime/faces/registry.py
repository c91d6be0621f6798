"""Face stages by name, and `auto`, which picks one on the first frame.

- `aligned` (base.py): frames are already aligned face crops (SynthAU, pre-cropped datasets); resized.
- `haar` (haar.py): OpenCV's bundled cascades on raw video, tracked between detections.
- `dlib` (dlib.py, the optional `dlib` extra): dlib's HOG detector and 68 landmarks, tracked the same way; a
  missing dlib package is refused when the stage is created.
- `dlib-cnn` (dlib.py, the same extra): dlib's CNN face detector in place of the HOG one, the same landmarks.
- `auto` (the default): `aligned` when the first frame is a square of at most AUTO_ALIGNED_MAX_PX pixels or of the
  network's size (an aligned crop), `haar` otherwise (raw video, cameras).
Training aligns raw datasets with the same stages (`align_frames`), so train and deploy see the same crops.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import numpy as np

from ks_runtime.core.errors import ConfigError
from ks_runtime.core.preprocess import Preprocess
from ks_runtime.core.results import Face
from ks_runtime.core.template import template_from_alignment
from ks_runtime.faces import dlib as _dlib  # noqa: F401  (registers `dlib`, `dlib-cnn`; dlib itself loads lazily)
from ks_runtime.faces import haar as _haar  # noqa: F401  (registers `haar`)
from ks_runtime.faces.base import FACE_STAGES, FaceStage, register_face_stage

log = logging.getLogger(__name__)

# `auto` takes a square frame up to this side for an aligned crop (AU datasets' crops are 112..256 px); cameras
# and videos are 4:3 or 16:9.
AUTO_ALIGNED_MAX_PX = 256


@register_face_stage("auto")
class AutoFaces(FaceStage):
    """`aligned` or `haar`, chosen on the first frame after a reset: a square frame of at most AUTO_ALIGNED_MAX_PX
    pixels (or of the network's size) is an aligned crop; anything else (raw video, a camera) goes through the
    detector. A stage once built is kept and reset, not rebuilt (building haar's loads its cascades), so choosing
    again after every reset is cheap: unrelated pictures choose one by one."""

    def __init__(self, preprocess: Preprocess, template: np.ndarray | None = None, max_faces: int = 1) -> None:
        super().__init__(preprocess, template, max_faces)
        self.built: dict[str, FaceStage] = {}
        self.chosen: FaceStage | None = None

    def reset(self) -> None:
        for stage in self.built.values():
            stage.reset()
        self.chosen = None

    def __call__(self, image: np.ndarray, index: int) -> Face:
        return self._choose(image)(image, index)

    def faces(self, image: np.ndarray, index: int) -> list[Face]:
        return self._choose(image).faces(image, index)

    @property
    def crowded_frames(self) -> int:
        return sum(stage.crowded_frames for stage in self.built.values())

    def _choose(self, image: np.ndarray) -> FaceStage:
        if self.chosen is None:
            name = auto_face_stage(image.shape, self.preprocess.size)
            log.info("face stage auto: frames of %dx%d -> %s", image.shape[1], image.shape[0], name)
            if name not in self.built:
                self.built[name] = create_face_stage(name, self.preprocess, self.template, self.max_faces)
            self.chosen = self.built[name]
        return self.chosen


def auto_face_stage(shape: tuple[int, ...], size: int) -> str:
    """The stage `auto` picks for frames of `shape` (H, W, ...) and a network input of `size` px."""
    h, w = shape[:2]
    return "aligned" if h == w and (h <= AUTO_ALIGNED_MAX_PX or h == size) else "haar"


def face_stage_names() -> list[str]:
    """Every face stage name this runtime knows (dlib's even when its package is missing)."""
    return sorted(FACE_STAGES)


def create_face_stage(
    name: str, preprocess: Preprocess, template: np.ndarray | Mapping | None = None, max_faces: int = 1
) -> FaceStage:
    """The face stage registered as `name`, aligning onto `template` (fractions [5, 2], or a manifest's
    `alignment` field; default: the SynthAU template), finding up to `max_faces` faces a frame (0: every face) in
    `faces()`."""
    if name not in FACE_STAGES:
        raise ConfigError(f"face stage {name!r} is not known; known: {', '.join(face_stage_names())}")
    if isinstance(template, Mapping):
        template = template_from_alignment(template)
    return FACE_STAGES[name](preprocess, template, max_faces=max_faces)


def align_frames(
    frames: Iterable[np.ndarray], size: int, face: str = "haar", template: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Align a raw video for training (BP4D, DISFA frames) exactly as the runtime does: RGB uint8 frames ->
    crops uint8 [T, size, size, 3] (zeros where no face), success bool [T], confidence float [T]."""
    stage = create_face_stage(face, Preprocess(size=size), template)
    crops, success, confidence = [], [], []
    for index, frame in enumerate(frames):
        found = stage(frame, index)
        crops.append(found.crop if found.success else np.zeros((size, size, 3), np.uint8))
        success.append(found.success)
        confidence.append(found.confidence)
    if not crops:
        return np.zeros((0, size, size, 3), np.uint8), np.zeros(0, bool), np.zeros(0, np.float32)
    return np.stack(crops), np.array(success), np.array(confidence, np.float32)
