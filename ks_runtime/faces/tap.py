"""A face stage that keeps each frame and its Face until the frame's result is final (for the overlay, the aligned
crops and the landmark columns, which are written with results that come out after their frames)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

import numpy as np

from ks_runtime.core.results import Face, FrameResult
from ks_runtime.faces.base import FaceStage


class FrameTap(FaceStage):
    """A face stage that keeps each frame and its Face until `take(index)` collects them with the frame's result
    (the overlay). Frames a live source dropped never reach it; a frame taken evicts any older one left."""

    def __init__(self, stage: FaceStage) -> None:
        super().__init__(stage.preprocess, stage.template)
        self.stage = stage
        self.name = stage.name
        self.landmark_count = getattr(stage, "landmark_count", 0)
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

    def take_batch(self, results: Iterable[FrameResult]) -> KeptFrames:
        """The frames and Faces of a batch of results, taken once so that every output reads the same ones."""
        return KeptFrames({r.index: kept for r in results if (kept := self.take(r.index)) is not None})


class KeptFrames(dict):
    """Frames taken from a FrameTap for one batch of results, by frame index; `take` reads one again, so the
    overlay (which expects a tap) can share them with the other outputs."""

    def take(self, index: int) -> tuple[np.ndarray, Face] | None:
        return self.get(index)
