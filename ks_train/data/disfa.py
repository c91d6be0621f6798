"""DISFA: one video per subject, AU intensities 0-5 per frame, occurrence = intensity >= 2.

    <root>/ActionUnit_Labels/SN001/SN001_au1.txt    lines "frame,intensity"; line t labels frame t (from 0)
    <root>/Images/SN001/0.jpg, 1.jpg, ...          frames extracted from the (left) video, 0-based

DISFA ships videos, not frames: extract them first, e.g.
`ffmpeg -i LeftVideoSN001_comp.avi -start_number 0 Images/SN001/%d.jpg` (zero padding optional, .jpg/.png;
`frames_dir` names another folder). The first column of a label file is checked to count up by one (DISFA's
own files start at 1); the line position, not that number, picks the frame. A missing AU file reads as all
zero, with a warning. The 8 AUs of ks_runtime.core.au.DISFA; standard folds.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ks_runtime.core.au import DISFA
from ks_runtime.core.errors import DataError
from ks_train.data.base import AUDataset, VideoSequence
from ks_train.data.folds import standard_parts
from ks_train.data.layout import attach_frames, check_missing_frames, natural_key

log = logging.getLogger(__name__)

LABEL_DIR = "ActionUnit_Labels"
FRAMES_DIR = "Images"
SEQUENCE_NAME = "video"
OCCURRENCE_LEVEL = 2  # DISFA's usual binarisation: intensity A (1) counts as absent
MAX_INTENSITY = 5
LAYOUT = (
    "<root>/ActionUnit_Labels/<subject>/<subject>_au<k>.txt and frames <root>/{frames}/<subject>/<frame>.jpg (0-based)"
)


def read_disfa(root: Path | str, frames_dir: str = FRAMES_DIR, missing_frames: str = "error") -> AUDataset:
    """Open DISFA at `root`: one sequence per subject, the 8 DISFA AUs, standard 3 folds."""
    root = Path(root)
    check_missing_frames(missing_frames)
    layout = LAYOUT.format(frames=frames_dir)
    if not root.is_dir():
        raise DataError(f"DISFA root {root} does not exist")
    label_root = root / LABEL_DIR
    if not label_root.is_dir():
        raise DataError(f"no {LABEL_DIR} folder under {root}: expected DISFA layout {layout}")
    if not (root / frames_dir).is_dir():
        raise DataError(
            f"no {frames_dir} folder under {root}: expected DISFA layout {layout}; DISFA ships "
            f"videos, extract their frames there first"
        )
    subjects = sorted((p.name for p in label_root.iterdir() if p.is_dir()), key=natural_key)
    if not subjects:
        raise DataError(f"{label_root}: no subject folders: expected DISFA layout {layout}")
    sequences = []
    for subject in subjects:
        first_path, lines, labels = read_subject_labels(label_root / subject, subject)
        keep, paths = attach_frames(
            first_path, lines, np.arange(len(labels)), root / frames_dir / subject, missing_frames, default_ext=".jpg"
        )
        if keep.any():
            sequences.append(
                VideoSequence(
                    subject, SEQUENCE_NAME, labels[keep], np.flatnonzero(keep).astype(np.int64), frame_paths=paths
                )
            )
    if not sequences:
        raise DataError(f"{root}: no DISFA subject has any frame image: expected {layout}")
    parts = standard_parts("disfa", [s.subject for s in sequences])
    return AUDataset("disfa", DISFA, sequences, parts)


def read_subject_labels(folder: Path, subject: str) -> tuple[Path, np.ndarray, np.ndarray]:
    """(the first AU file read, its line numbers [T], occurrence labels int8 [T, 8]) of one subject; a
    missing AU file reads as zeros, and every present file must have the same number of frames."""
    files = {p.name.lower(): p for p in folder.iterdir() if p.is_file()}
    columns: dict[int, np.ndarray] = {}
    first: tuple[Path, np.ndarray] | None = None
    for au in DISFA.numbers:
        path = files.get(f"{subject}_au{au}.txt".lower())
        if path is None:
            log.warning(
                "%s: missing; AU%d of %s read as absent in every frame", folder / f"{subject}_au{au}.txt", au, subject
            )
            continue
        intensity, lines = read_intensity_file(path)
        if first is None:
            first = (path, lines)
        elif len(intensity) != len(first[1]):
            raise DataError(f"{path}: {len(intensity)} frames, but {first[0].name} has {len(first[1])}")
        columns[au] = (intensity >= OCCURRENCE_LEVEL).astype(np.int8)
    if first is None:
        raise DataError(
            f"{folder}: none of the files {subject}_au<k>.txt for AUs {', '.join(str(n) for n in DISFA.numbers)}"
        )
    n = len(first[1])
    labels = np.stack([columns.get(au, np.zeros(n, dtype=np.int8)) for au in DISFA.numbers], axis=1)  # [T, 8]
    return first[0], first[1], labels


def read_intensity_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(intensities [T], 1-based line numbers [T]) of one `frame,intensity` file; the frame column must
    count up by one, since the position of a line, not its number, picks the frame."""
    values, lines, previous, previous_line = [], [], None, 0
    with open(path, encoding="utf-8-sig") as handle:
        for line_number, line in enumerate(handle, start=1):
            text = line.strip()
            if not text:
                continue
            cells = [c.strip() for c in text.split(",")]
            if len(cells) != 2:
                raise DataError(f"{path}: line {line_number}: expected 'frame,intensity', got {text!r}")
            try:
                frame, intensity = int(cells[0]), int(cells[1])
            except ValueError:
                raise DataError(
                    f"{path}: line {line_number}: expected two integers 'frame,intensity', got {text!r}"
                ) from None
            if previous is not None and frame != previous + 1:
                what = (
                    "listed twice"
                    if frame == previous
                    else "out of order"
                    if frame < previous
                    else "skips the frames before it"
                )
                raise DataError(
                    f"{path}: line {line_number}: frame {frame} {what} (line {previous_line} is "
                    f"frame {previous}; frames must count up by one)"
                )
            if not 0 <= intensity <= MAX_INTENSITY:
                raise DataError(f"{path}: line {line_number}: intensity {intensity} outside 0..{MAX_INTENSITY}")
            values.append(intensity)
            lines.append(line_number)
            previous, previous_line = frame, line_number
    if not values:
        raise DataError(f"{path}: no label lines")
    return np.asarray(values, dtype=np.int64), np.asarray(lines, dtype=np.int64)
