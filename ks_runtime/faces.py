"""The face stage: a frame in, the aligned face crop the network reads out, or "no face".

Every face stage has one call, `stage(image, index) -> Face`, and a registry name. `aligned` (this version)
takes frames that are already aligned face crops (SynthAU, pre-cropped datasets): it only resizes them to
the network's input size and always succeeds. A detector stage (raw video) registers another name and sets
`success=False` on frames without a face; the engine ends a stream on such a frame and starts a new one at
the next face.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ks_runtime.errors import ConfigError
from ks_runtime.preprocess import Preprocess, resize_square

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Face:
    """One frame's face: the RGB uint8 crop [S, S, 3] at the network's size (None when there is no face),
    the stage's confidence in [0, 1], and the face box in frame pixels (x0, y0, x1, y1) when known."""

    crop: np.ndarray | None
    confidence: float
    box: tuple[float, float, float, float] | None = None

    @property
    def success(self) -> bool:
        return self.crop is not None


NO_FACE = Face(None, 0.0)


class FaceStage:
    """Base of every face stage. Stateful stages (trackers) forget their state in `reset`."""

    name = ""

    def __init__(self, preprocess: Preprocess) -> None:
        self.preprocess = preprocess

    def __call__(self, image: np.ndarray, index: int) -> Face:
        raise NotImplementedError

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

    def __init__(self, preprocess: Preprocess) -> None:
        super().__init__(preprocess)
        self.reset()

    def reset(self) -> None:
        self._shape: tuple[int, ...] | None = None
        self._warned = False

    def __call__(self, image: np.ndarray, index: int) -> Face:
        if self._shape is None:
            self._shape = image.shape
        elif image.shape != self._shape and not self._warned:
            log.warning("frame %d is %dx%d, earlier frames %dx%d: each aligned crop is resized to %d px",
                        index, image.shape[1], image.shape[0], self._shape[1], self._shape[0], self.preprocess.size)
            self._warned = True
        crop = resize_square(image, self.preprocess.size)
        h, w = image.shape[:2]
        return Face(np.ascontiguousarray(crop), 1.0, (0.0, 0.0, float(w), float(h)))


def create_face_stage(name: str, preprocess: Preprocess) -> FaceStage:
    """The face stage registered as `name`."""
    if name not in FACE_STAGES:
        raise ConfigError(f"face stage {name!r} is not available in this version; known: {', '.join(FACE_STAGES)} "
                          f"(frames must be aligned face crops)")
    return FACE_STAGES[name](preprocess)
