"""The overlay: each frame with its face box, the points it was aligned on, and a bar per AU (probability, green
at or above the AU's threshold), drawn with OpenCV, written to a video file; below them a note on every frame when
the model's training data needs one (a model trained only on synthetic faces: the bundle's provenance).

Results come out of the scheduler after their frames (look-ahead policies), so a frame keeper around the face
stage (`ks_runtime.faces.tap.FrameTap`) holds each frame until its result is final.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np

from ks_runtime.core.errors import ConfigError, OutputError
from ks_runtime.core.results import Face, FrameResult, KeptFrames
from ks_runtime.io.outputs import check_output_paths

log = logging.getLogger(__name__)

OVERLAY_CODECS = {".mp4": "mp4v", ".avi": "FFV1", ".mkv": "FFV1"}  # FFV1 is lossless; mp4v plays anywhere
OVERLAY_MIN_HEIGHT = 360  # smaller frames (aligned crops) are scaled up so the drawing is legible
PANEL_WIDTH = 220
FACE_COLOUR, POINT_COLOUR, ON, OFF, PANEL = (60, 220, 60), (0, 200, 255), (60, 190, 60), (150, 150, 150), (32, 32, 32)
NOTE_COLOUR, NOTE_SCALE, NOTE_LINE = (80, 170, 255), 0.45, 18  # orange: a caveat, not a measurement


def draw_overlay(
    image: np.ndarray,
    result: FrameResult,
    face: Face | None,
    au_columns: Sequence[str],
    thresholds: Sequence[float],
    others: Sequence[tuple[FrameResult, Face | None]] = (),
) -> np.ndarray:
    """One overlay frame, BGR uint8: the RGB frame (scaled up to OVERLAY_MIN_HEIGHT if smaller) with the face box
    and points, and beside it a panel with one bar per AU and the frame's number, time and confidence. The frame's
    `others` faces get their boxes and points, each box labelled with its face_id; the panel is `result`'s."""
    h, w = image.shape[:2]
    zoom = max(1, math.ceil(OVERLAY_MIN_HEIGHT / h))
    frame = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if zoom > 1:
        frame = cv2.resize(frame, (w * zoom, h * zoom), interpolation=cv2.INTER_NEAREST)
    height, width = frame.shape[:2]
    canvas = np.full((height, width + PANEL_WIDTH, 3), PANEL, np.uint8)
    canvas[:, :width] = frame
    thick = max(1, round(height / 240))
    for shown, shown_face in [(result, face), *others]:
        draw_face(canvas, shown, shown_face, zoom, thick, label=bool(others))
    font, left = cv2.FONT_HERSHEY_SIMPLEX, width + 10
    status = f"conf {result.confidence:.2f}" if result.success else "no face"
    if others:
        status = f"face {result.face_id} of {len(others) + 1}  {status}"
    cv2.putText(
        canvas,
        f"frame {result.frame}  {result.timestamp:.2f}s",
        (left, 18),
        font,
        0.45,
        (230, 230, 230),
        1,
        cv2.LINE_AA,
    )
    cv2.putText(
        canvas, status, (left, 36), font, 0.45, (230, 230, 230) if result.success else (80, 80, 240), 1, cv2.LINE_AA
    )
    draw_bars(canvas, result, au_columns, thresholds, left)
    return canvas


def draw_bars(
    canvas: np.ndarray, result: FrameResult, au_columns: Sequence[str], thresholds: Sequence[float], left: int
) -> None:
    """The panel's bar per AU from x = `left`: the probability, green at or above the AU's threshold (a red tick)."""
    font, height = cv2.FONT_HERSHEY_SIMPLEX, canvas.shape[0]
    u = len(au_columns)
    row = max(10, min(26, (height - 50) // max(u, 1)))
    bar_x, bar_w = left + 44, PANEL_WIDTH - 90
    for j, column in enumerate(au_columns):
        y = 48 + j * row
        cv2.putText(canvas, column, (left, y + row - 4), font, 0.38, (230, 230, 230), 1, cv2.LINE_AA)
        cv2.rectangle(canvas, (bar_x, y + 2), (bar_x + bar_w, y + row - 3), (70, 70, 70), -1)
        if result.probs is not None:
            p = float(result.probs[j])
            cv2.rectangle(
                canvas,
                (bar_x, y + 2),
                (bar_x + int(round(p * bar_w)), y + row - 3),
                ON if p >= thresholds[j] else OFF,
                -1,
            )
            cv2.putText(
                canvas, f"{p:.2f}", (bar_x + bar_w + 4, y + row - 4), font, 0.36, (230, 230, 230), 1, cv2.LINE_AA
            )
        tick = bar_x + int(round(float(thresholds[j]) * bar_w))
        cv2.line(canvas, (tick, y), (tick, y + row - 1), (80, 80, 240), 1)


def draw_face(
    canvas: np.ndarray, result: FrameResult, face: Face | None, zoom: int, thick: int, label: bool = False
) -> None:
    """A face's box and alignment points on the overlay canvas (frame pixels scaled by `zoom`), its box labelled
    with its face_id when the frame has several faces."""
    if result.success and result.box is not None:
        x0, y0, x1, y1 = (int(round((v + 0.5) * zoom - 0.5)) for v in result.box)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), FACE_COLOUR, thick, cv2.LINE_AA)
        if label:
            cv2.putText(canvas, str(result.face_id), (x0 + 2, y0 + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.5, FACE_COLOUR, 1)
    if result.success and face is not None and face.points is not None:
        for k, (x, y) in enumerate((face.points + 0.5) * zoom - 0.5):
            cv2.circle(
                canvas, (int(round(x)), int(round(y))), thick + (2 if k < 2 else 1), POINT_COLOUR, -1, cv2.LINE_AA
            )


def with_note(canvas: np.ndarray, note: str | None) -> np.ndarray:
    """An overlay frame with `note` (the model's provenance) below it, when there is one."""
    return np.vstack([canvas, note_strip(note, canvas.shape[1])]) if note else canvas


def note_strip(note: str, width: int) -> np.ndarray:
    """`note` as a strip `width` pixels wide, BGR, its words wrapped onto as many lines as they need."""
    font, lines = cv2.FONT_HERSHEY_SIMPLEX, [""]
    for word in note.split():
        longer = f"{lines[-1]} {word}".strip()
        if lines[-1] and cv2.getTextSize(longer, font, NOTE_SCALE, 1)[0][0] > width - 20:
            lines.append(word)
        else:
            lines[-1] = longer
    strip = np.full((NOTE_LINE * len(lines) + 8, width, 3), PANEL, np.uint8)
    for k, line in enumerate(lines):
        cv2.putText(strip, line, (10, NOTE_LINE * (k + 1)), font, NOTE_SCALE, NOTE_COLOUR, 1, cv2.LINE_AA)
    return strip


def overlay_frames(
    results: Iterable[FrameResult],
    kept: KeptFrames,
    au_columns: Sequence[str],
    thresholds: Sequence[float],
    note: str | None = None,
) -> Iterable[np.ndarray]:
    """The overlay frame (BGR) of each frame of `results` that was kept, in the results' order, with `note`: one
    frame however many faces it has (its results are consecutive), the panel showing its first face's AUs."""
    for _, group in itertools.groupby(results, key=lambda r: (r.source, r.index)):
        group = list(group)
        frame = kept.frame(group[0].index)
        if frame is not None:
            image, faces = frame
            shown = [(r, faces.get(r.face_id)) for r in group]
            canvas = draw_overlay(image, *shown[0], au_columns, thresholds, others=shown[1:])
            yield with_note(canvas, note)


class OverlaySink:
    """Writes the overlay video (codec by suffix: .mp4 mp4v; .mkv / .avi FFV1, lossless), one frame per result
    in the order results come; the size is the first frame's (later frames of another size are resized)."""

    def __init__(self, path: Path | str, fps: float | None = None) -> None:
        self.path = Path(path)
        self.fourcc = OVERLAY_CODECS.get(self.path.suffix.lower())
        if self.fourcc is None:
            raise ConfigError(
                f"{self.path}: overlay video suffix {self.path.suffix!r} is not one of {', '.join(OVERLAY_CODECS)}"
            )
        self.fps = fps or 30.0
        self.frames = 0
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None

    def write_frame(self, canvas: np.ndarray) -> None:
        """Append one overlay frame (BGR, as draw_overlay makes it)."""
        if self._writer is None:
            check_output_paths(overlay=self.path)  # a folder we cannot write is not the codec's fault
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._size = (canvas.shape[1], canvas.shape[0])
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, self._size)
            if not self._writer.isOpened():
                self._writer = None
                raise OutputError(
                    f"{self.path}: OpenCV cannot write codec {self.fourcc!r} here (try .mkv, .avi or .mp4)"
                )
        if (canvas.shape[1], canvas.shape[0]) != self._size:
            canvas = cv2.resize(canvas, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(canvas)
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
