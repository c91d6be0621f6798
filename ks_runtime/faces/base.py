"""The face stage interface: a frame in, the aligned face crop the network reads out, or "no face".

Every face stage has two calls: `stage(image, index) -> Face` (one face: the largest) and
`stage.faces(image, index) -> [Face, ...]` (every face, up to `max_faces`, each with its `face_id`; [] for none),
and a registry name (`registry.py` lists them). A detector stage maps the face's eyes (or five points) onto the
bundle's alignment template with a similarity transform and cuts the crop (`align.py`); on a frame without a face
it returns NO_FACE, and the scheduler ends the face's stream there and starts a new one at the next face.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from ks_runtime.core.errors import ConfigError
from ks_runtime.core.preprocess import Preprocess, resize_square
from ks_runtime.core.results import Face
from ks_runtime.core.template import default_template

log = logging.getLogger(__name__)


class FaceStage:
    """Base of every face stage. Stateful stages (trackers) forget their state in `reset`.

    `template` [5, 2] is where the aligned crop's five points sit, as fractions of the crop side (TEMPLATE_POINTS
    order); the bundle's manifest carries it (`template_from_alignment`).
    """

    name = ""
    # How many facial landmarks each Face carries (68 for dlib's iBUG 300-W points, 0 for none): the writers need
    # it before the first frame, to decide their columns.
    landmark_count = 0
    # Frames where the stage found more faces than max_faces let it score: a run says so, never drops them silently.
    crowded_frames = 0

    def __init__(self, preprocess: Preprocess, template: np.ndarray | None = None, max_faces: int = 1) -> None:
        if max_faces < 0:
            raise ConfigError(f"max_faces={max_faces}: the most faces a frame, 0 for no limit")
        self.preprocess = preprocess
        self.template = default_template() if template is None else np.asarray(template, np.float64)
        self.max_faces = max_faces

    def __call__(self, image: np.ndarray, index: int) -> Face:
        raise NotImplementedError

    def faces(self, image: np.ndarray, index: int) -> list[Face]:
        """Every face of the frame, by face_id ([] for none). A stage that finds one face a frame (aligned
        crops) gives that one."""
        face = self(image, index)
        return [face] if face.success else []

    def reset(self) -> None:
        """Start over, e.g. at a new source."""


FACE_STAGES: dict[str, type[FaceStage]] = {}


def register_face_stage(name: str) -> Callable[[type[FaceStage]], type[FaceStage]]:
    def decorate(cls: type[FaceStage]) -> type[FaceStage]:
        cls.name = name
        FACE_STAGES[name] = cls
        return cls

    return decorate


@register_face_stage("aligned")
class AlignedFaces(FaceStage):
    """Frames are aligned face crops already: resize to the network's size; success 1, confidence 1.

    A crop that changes size mid-stream is resized like any other, and the change is logged once.
    """

    def __init__(self, preprocess: Preprocess, template: np.ndarray | None = None, max_faces: int = 1) -> None:
        super().__init__(preprocess, template, max_faces)
        self.reset()

    def reset(self) -> None:
        self._shape: tuple[int, ...] | None = None
        self._warned = False

    def __call__(self, image: np.ndarray, index: int) -> Face:
        if self._shape is None:
            self._shape = image.shape
        elif image.shape != self._shape and not self._warned:
            log.warning(
                "frame %d is %dx%d, earlier frames %dx%d: each aligned crop is resized to %d px",
                index,
                image.shape[1],
                image.shape[0],
                self._shape[1],
                self._shape[0],
                self.preprocess.size,
            )
            self._warned = True
        crop = resize_square(image, self.preprocess.size)
        h, w = image.shape[:2]
        return Face(np.ascontiguousarray(crop), 1.0, (0.0, 0.0, float(w), float(h)))


# ----------------------------------------------------------------------------------------------------------
# The alignment template and the crop
