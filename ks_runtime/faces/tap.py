"""A face stage that keeps each frame and its faces until the frame's results are final (for the overlay, the
aligned crops and the landmark columns, which are written with results that come out after their frames)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

import numpy as np

from ks_runtime.core.results import Face, FrameResult, KeptFrames
from ks_runtime.faces.base import FaceStage


class FrameTap(FaceStage):
    """A face stage that keeps each frame and its faces until `take(index)` collects them with the frame's results.
    Frames a live source dropped never reach it; a frame taken evicts any older one left."""

    def __init__(self, stage: FaceStage) -> None:
        super().__init__(stage.preprocess, stage.template, stage.max_faces)
        self.stage = stage
        self.name = stage.name
        self.landmark_count = getattr(stage, "landmark_count", 0)
        self._kept: OrderedDict[int, tuple[np.ndarray, dict[int, Face]]] = OrderedDict()

    def __call__(self, image: np.ndarray, index: int) -> Face:
        face = self.stage(image, index)
        self._kept[index] = (image, {face.face_id: face})
        return face

    def faces(self, image: np.ndarray, index: int) -> list[Face]:
        faces = self.stage.faces(image, index)
        self._kept[index] = (image, {face.face_id: face for face in faces})
        return faces

    def reset(self) -> None:
        self.stage.reset()
        self._kept.clear()

    @property
    def crowded_frames(self) -> int:
        return self.stage.crowded_frames

    def take(self, index: int) -> tuple[np.ndarray, dict[int, Face]] | None:
        """The frame `index` and its faces by face_id (None if it never came through here)."""
        while self._kept and next(iter(self._kept)) < index:
            self._kept.popitem(last=False)
        return self._kept.pop(index, None)

    def take_batch(self, results: Iterable[FrameResult]) -> KeptFrames:
        """The frames and faces of a batch of results, taken once so that every output reads the same ones."""
        kept = KeptFrames()
        for result in results:
            if result.index not in kept.frames and (frame := self.take(result.index)) is not None:
                kept.frames[result.index] = frame
        return kept
