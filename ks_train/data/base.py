"""The one interface every dataset adapter returns: sequences of frames with per-frame AU labels.

Frames are RGB uint8 [H, W, 3]. Labels are int8 [T, U] in the AU set's order: 1 present, 0 absent,
-1 unknown (masked, never dropped). A sequence holds either its frames in memory (SynthAU) or the paths
of its image files (everything read from disk), behind the same `load` call.
"""

from __future__ import annotations

from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ks_runtime.core.au import AUSet
from ks_runtime.core.errors import ConfigError, DataError

N_FOLDS = 3


@dataclass
class VideoSequence:
    """One video of one subject: frame images (paths or arrays), their numbers, and labels [T, U]."""

    subject: str
    name: str
    labels: np.ndarray
    frame_numbers: np.ndarray
    frame_paths: list[Path] | None = None
    frames: np.ndarray | None = None
    _shape: tuple[int, ...] | None = field(default=None, init=False, repr=False, compare=False)  # first frame's

    def __post_init__(self) -> None:
        if (self.frame_paths is None) == (self.frames is None):
            raise ValueError(f"sequence {self.key}: give exactly one of frame_paths and frames")
        n = len(self.frame_paths) if self.frame_paths is not None else len(self.frames)
        if len(self.labels) != n or len(self.frame_numbers) != n:
            raise DataError(f"sequence {self.key}: {n} frames but {len(self.labels)} label rows")
        if n == 0:
            raise DataError(f"sequence {self.key}: no frames")

    @property
    def key(self) -> str:
        return f"{self.subject}/{self.name}"

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, indices: SequenceABC[int] | np.ndarray) -> np.ndarray:
        """Frames at these positions (not frame numbers) as uint8 [k, H, W, 3] RGB."""
        indices = np.asarray(indices, dtype=np.int64)
        if self.frames is not None:
            return self.frames[indices]
        return np.stack([self._read(int(i)) for i in indices])

    def _read(self, i: int) -> np.ndarray:
        """Frame i from disk, of the size of the sequence's first frame: one of another size would stop a clip or
        an evaluation later in np.stack, naming nothing."""
        image = read_rgb(self.frame_paths[i])
        if self._shape is None:
            self._shape = image.shape if i == 0 else read_rgb(self.frame_paths[0]).shape
        if image.shape != self._shape:
            (h, w), (first_h, first_w) = image.shape[:2], self._shape[:2]
            raise DataError(
                f"sequence {self.key}: frame {self.frame_numbers[i]} ({self.frame_paths[i]}) is {w}x{h} pixels, but "
                f"its first frame ({self.frame_paths[0]}) is {first_w}x{first_h}: a sequence's frames need one size"
            )
        return image


def read_rgb(path: Path) -> np.ndarray:
    """Read one image file as RGB uint8 [H, W, 3]; a missing or undecodable file names itself."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        if not Path(path).exists():
            raise DataError(f"{path}: frame image missing")
        raise DataError(f"{path}: cannot decode image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


@dataclass
class AUDataset:
    """All sequences of a dataset plus its 3 subject-exclusive parts (fold f tests on part f)."""

    name: str
    au_set: AUSet
    sequences: list[VideoSequence]
    parts: list[list[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.sequences:
            raise DataError(f"dataset {self.name}: no sequences found")

    @property
    def subjects(self) -> list[str]:
        return sorted({s.subject for s in self.sequences})

    def split(self, fold: int) -> tuple[list[VideoSequence], list[VideoSequence]]:
        """(train, test) sequences of fold 1..3: test on part `fold`, train on the other parts."""
        if not self.parts:
            raise DataError(f"dataset {self.name} has no folds (fewer than {N_FOLDS} subjects?)")
        if not 1 <= fold <= len(self.parts):
            raise ConfigError(
                f"data.fold={fold}: dataset {self.name} has {len(self.parts)} folds (1..{len(self.parts)})"
            )
        test_subjects = set(self.parts[fold - 1])
        train = [s for s in self.sequences if s.subject not in test_subjects]
        test = [s for s in self.sequences if s.subject in test_subjects]
        if not train or not test:
            raise DataError(f"dataset {self.name}: fold {fold} leaves an empty train or test set")
        return train, test
