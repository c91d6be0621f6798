"""Frame folders of every on-disk adapter: images named by an integer frame number, matched to label rows.

A folder holds `<frame>.<ext>` with optional zero padding (`7.jpg`, `0007.jpg`); the label file decides which
frames exist, and a labelled frame without an image is an error (or skipped, with a warning, on request).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np

from ks_runtime.core.errors import ConfigError, DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
MISSING_FRAMES = ("error", "skip")


def check_missing_frames(option: str) -> str:
    if option not in MISSING_FRAMES:
        raise ConfigError(f"missing_frames must be one of {', '.join(MISSING_FRAMES)}, got {option!r}")
    return option


def natural_key(name: str) -> list:
    """Sort key that puts T2 before T10 (BP4D+ has ten tasks)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def index_frames(directory: Path, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> dict[int, Path]:
    """Image files of a folder by frame number; files whose stem is not an integer are ignored, and two files
    for one number (`1.jpg` and `0001.jpg`, or `1.jpg` and `1.png`) are an error naming both."""
    index: dict[int, Path] = {}
    with os.scandir(directory) as entries:
        for entry in entries:
            stem, ext = os.path.splitext(entry.name)
            numbered = stem.isascii() and stem.isdigit()
            if ext.lower() not in extensions or not numbered or not entry.is_file():
                continue
            frame = int(stem)
            if frame in index:
                first, second = sorted([index[frame].name, entry.name])
                raise DataError(f"{directory}: frame {frame} has two images, {first} and {second}")
            index[frame] = Path(directory) / entry.name
    return index


def expected_frame_path(directory: Path, index: dict[int, Path], frame: int, default_ext: str) -> Path:
    """Where the image of `frame` would be, in the padding and extension the folder already uses."""
    if not index:
        return Path(directory) / f"{frame}{default_ext}"
    example = next(iter(index.values()))
    width = len(example.stem) if example.stem.startswith("0") and len(example.stem) > 1 else 0
    return Path(directory) / f"{frame:0{width}d}{example.suffix}"


def attach_frames(
    label_path: Path,
    lines: np.ndarray,
    frame_numbers: np.ndarray,
    directory: Path,
    missing_frames: str = "error",
    default_ext: str = ".jpg",
) -> tuple[np.ndarray, list[Path]]:
    """Image paths of the labelled frames: (bool mask [T] of the rows kept, their paths).

    A labelled frame without an image raises DataError naming the label file, its line and the expected
    image path; with missing_frames="skip" the row is dropped and a warning counts them.
    """
    check_missing_frames(missing_frames)
    directory = Path(directory)
    if not directory.is_dir():
        if missing_frames == "error":
            raise DataError(f"{label_path}: no frame folder {directory} for this label file")
        log.warning(
            "%s: no frame folder %s; skipping all %d labelled frames", label_path, directory, len(frame_numbers)
        )
        return np.zeros(len(frame_numbers), dtype=bool), []
    index = index_frames(directory)
    keep = np.ones(len(frame_numbers), dtype=bool)
    paths: list[Path] = []
    first_missing = None
    for row, frame in enumerate(frame_numbers):
        path = index.get(int(frame))
        if path is None:
            expected = expected_frame_path(directory, index, int(frame), default_ext)
            if missing_frames == "error":
                raise DataError(
                    f"{label_path}: line {lines[row]}: frame {frame} has no image (expected "
                    f"{expected}; zero padding optional, {'/'.join(IMAGE_EXTENSIONS)})"
                )
            keep[row] = False
            first_missing = first_missing or (int(lines[row]), expected)
            continue
        paths.append(path)
    if first_missing is not None:
        log.warning(
            "%s: skipping %d labelled frame(s) without an image (first: line %d, %s)",
            label_path,
            int((~keep).sum()),
            first_missing[0],
            first_missing[1],
        )
    return keep, paths
