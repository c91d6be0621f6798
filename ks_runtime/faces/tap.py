"""A face stage that keeps each frame and its Face until the frame's result is final (for overlays)."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ks_runtime.core.results import Face
from ks_runtime.faces.base import FaceStage


class FrameTap(FaceStage):
    """A face stage that keeps each frame and its Face until `take(index)` collects them with the frame's result
    (the overlay). Frames a live source dropped never reach it; a frame taken evicts any older one left."""

    def __init__(self, stage: FaceStage) -> None:
        super().__init__(stage.preprocess, stage.template)
        self.stage = stage
        self.name = stage.name
        self._kept: OrderedDict[int, tuple[np.ndarray, Face]] = OrderedDict()

    def __call__(self, image: np.ndarray, index: int) -> Face:
        face = self.stage(image, index)
        self._kept[index] = (image, face)
        return face

    def reset(self) -> None:
        self.stage.reset()
        self._kept.clear()

    def take(self, index: int) -> tuple[np.ndarray, Face] | None:
        """The frame `index` and its Face (None if it never came through here)."""
        while self._kept and next(iter(self._kept)) < index:
            self._kept.popitem(last=False)
        return self._kept.pop(index, None)
