"""Output paths checked before the first frame is read: a CSV, timeline or overlay that cannot be written would
otherwise be found out after the whole input ran, or blamed on the wrong thing (a codec, an extension). Each
check names the path and the real cause: a file where a folder must be, a folder that takes no new files, an
extension we cannot write. Nothing is created: the writers make their folders when they open.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2

from ks_runtime.core.errors import OutputError

OVERLAY_SUFFIXES = (".mp4", ".avi", ".mkv")  # io/overlay.py's codecs by suffix


def check_media(path: Path, what: str, format_ok: bool, why: str) -> None:
    """A picture or video output: a format we can write (else `why`), then a path that takes the file."""
    if not format_ok:
        raise OutputError(f"{path}: cannot write the {what}: {why}")
    check_file(path, what)


def check_output_paths(
    csv: Path | str | None = None,
    plot: Path | str | None = None,
    overlay: Path | str | None = None,
    crops: Path | str | None = None,
) -> None:
    """Raise an OutputError for the first output of a run that cannot be written (None: not asked for)."""
    if csv is not None:
        check_file(Path(csv), "CSV")
    if plot is not None:
        plot = Path(plot)
        why = f"OpenCV writes no image format with the extension {plot.suffix!r} (use .png)"
        check_media(plot, "timeline image", cv2.haveImageWriter(str(plot)), why)
    if overlay is not None:
        overlay = Path(overlay)
        why = f"the extension {overlay.suffix!r} is not one of {', '.join(OVERLAY_SUFFIXES)}"
        check_media(overlay, "overlay video", overlay.suffix.lower() in OVERLAY_SUFFIXES, why)
    if crops is not None:
        crops = Path(crops)
        if crops.exists() and not crops.is_dir():
            raise OutputError(f"{crops}: cannot save the aligned crops there: it is a file, not a folder")
        check_folder(crops, "aligned crops", crops)


def check_file(path: Path, what: str) -> None:
    """`path` can be written as a file: not a folder, its folder can be made and takes new files, and an existing
    file may be overwritten."""
    if path.is_dir():
        raise OutputError(f"{path}: cannot write the {what}: it is a folder")
    check_folder(path.parent, what, path)
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"{path}: cannot write the {what}: the file is read-only (permission denied)")


def check_folder(folder: Path, what: str, target: Path) -> None:
    """`folder` exists and takes new files, or can be made: its nearest existing ancestor is a folder that does."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{target}: cannot write the {what}: {existing} is a file, not a folder")
    try:
        # A real file, not os.access: that answers yes to root on a read-only disk, and knows no quota.
        with tempfile.TemporaryFile(dir=existing, prefix=".ks-write-check-"):
            pass
    except OSError as error:
        raise OutputError(
            f"{target}: cannot write the {what}: the folder {existing} takes no new files ({error.strerror or error})"
        ) from None
