"""The OpenFace 2 FeatureExtraction CSV (`--format openface`, `ks-run`'s default): OpenFace's column names, order,
separator and number formats for what this runtime measures, and nothing it does not.

Columns, in the order OpenFace 2's CSV recorder writes its groups:
- frame, face_id, timestamp, confidence, success;
- with a face stage that has 68 landmarks (dlib): pose_Tx, pose_Ty, pose_Tz (mm), pose_Rx, pose_Ry, pose_Rz (rad)
  estimated from them (head_pose.py), then x_0..x_67 and y_0..y_67 (frame pixels); a stage without (haar,
  aligned) writes neither group rather than zeros;
- AUxx_r for OpenFace's 17 intensity AUs, then AUxx_c for its 18 presence AUs, each group sorted as OpenFace sorts
  it: `_r` is the model's probability x 5 (OpenFace's 0-5 range; a probability, not an intensity estimate), `_c`
  is 1.0 / 0.0 at the bundle's threshold. An AU the bundle does not predict is left empty (NaN), so a reader that
  selects OpenFace's AU columns finds them all and cannot mistake "not measured" for "absent";
- ks_AUxx_r, ks_AUxx_c: AUs the bundle predicts that OpenFace's lists lack (BP4D's AU24);
- ks_face_x0, ks_face_y0, ks_face_x1, ks_face_y1: the face box in frame pixels (OpenFace writes none);
- for images, file: the image's path (after a bare ",", quoted where it holds a comma or a quote).
Not written: gaze (gaze_*), eye landmarks (eye_lmk_*), 3D landmarks (X_*, Y_*, Z_*) and OpenFace's shape model
parameters (p_*): they need models this runtime does not have.

Fields are separated by ", " as OpenFace writes them; an empty field follows a bare "," so that a reader splitting
on "," (py-feat's read_openface, pandas) gets an empty field, NaN, and not the string " ", which would turn the
whole column into text. A frame without a face has success 0 and every measured field empty (OpenFace writes
zeros there).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ks_runtime.core.au import au_column, parse_au_column
from ks_runtime.core.errors import ConfigError
from ks_runtime.core.results import FrameResult
from ks_runtime.io.head_pose import LANDMARKS
from ks_runtime.io.table import FILE_COLUMN, TextSink, file_of, quote_field

OPENFACE_INTENSITY_AUS = (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 45)
OPENFACE_PRESENCE_AUS = (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 28, 45)
INTENSITY_SCALE = 5.0  # OpenFace's intensities run 0-5
SEPARATOR = ", "
EXTRA_PREFIX = "ks_"  # our columns: py-feat's OpenFace reader selects OpenFace's names only
ID_COLUMNS = ("frame", "face_id", "timestamp", "confidence", "success")
POSE_COLUMNS = ("pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz")
BOX_COLUMNS = ("ks_face_x0", "ks_face_y0", "ks_face_x1", "ks_face_y1")
INTEGER_COLUMNS = ("frame", "face_id", "success")


@dataclass(frozen=True)
class Column:
    """One CSV column: its name and the decimals it is written with (OpenFace's, but 3 for `_r` instead of 2, so
    `_r / 5` gives the probability to 2e-4; 0: an integer)."""

    name: str
    digits: int


class OpenFaceLayout:
    """The columns of one run (which depend on the bundle's AUs and on whether the face stage has 68 landmarks)
    and each result's values in them."""

    def __init__(self, au_columns: Sequence[str], thresholds: Sequence[float], landmarks: bool) -> None:
        numbers = []
        for column in au_columns:
            try:
                numbers.append(parse_au_column(column))
            except ValueError as error:
                raise ConfigError(f"OpenFace CSV: the bundle's AU column {column!r}: {error}") from None
        self.thresholds = np.asarray(thresholds, np.float64)
        if len(self.thresholds) != len(numbers):
            raise ConfigError(f"OpenFace CSV: {len(numbers)} AU columns but {len(self.thresholds)} thresholds")
        self.landmarks = landmarks
        where = {n: j for j, n in enumerate(numbers)}
        # Bundle index of each AU column (-1: OpenFace's AU that the bundle does not predict: left empty).
        self.intensity = np.array([where.get(n, -1) for n in OPENFACE_INTENSITY_AUS], np.int64)
        self.presence = np.array([where.get(n, -1) for n in OPENFACE_PRESENCE_AUS], np.int64)
        self.extra_intensity = np.array([j for j, n in enumerate(numbers) if n not in OPENFACE_INTENSITY_AUS], np.int64)
        self.extra_presence = np.array([j for j, n in enumerate(numbers) if n not in OPENFACE_PRESENCE_AUS], np.int64)
        self.columns = self._columns(numbers)
        self.digits = [c.digits for c in self.columns]

    def _columns(self, numbers: Sequence[int]) -> list[Column]:
        digits = {"frame": 0, "face_id": 0, "timestamp": 3, "confidence": 2, "success": 0}
        columns = [Column(name, digits[name]) for name in ID_COLUMNS]
        if self.landmarks:
            columns += [Column(name, 1 if name.startswith("pose_T") else 3) for name in POSE_COLUMNS]
            columns += [Column(f"{axis}_{i}", 1) for axis in "xy" for i in range(LANDMARKS)]
        columns += [Column(f"{au_column(n)}_r", 3) for n in OPENFACE_INTENSITY_AUS]
        columns += [Column(f"{au_column(n)}_c", 1) for n in OPENFACE_PRESENCE_AUS]
        columns += [Column(f"{EXTRA_PREFIX}{au_column(numbers[j])}_r", 3) for j in self.extra_intensity]
        columns += [Column(f"{EXTRA_PREFIX}{au_column(numbers[j])}_c", 1) for j in self.extra_presence]
        return columns + [Column(name, 1) for name in BOX_COLUMNS]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def values(self, result: FrameResult) -> np.ndarray:
        """The result's row as floats, NaN where there is nothing to write."""
        ids = [result.frame, result.face_id, result.timestamp, result.confidence, float(result.success)]
        parts = [np.array(ids, np.float64)]
        if self.landmarks:
            parts.append(_or_nan(result.pose if result.success else None, len(POSE_COLUMNS)))
            marks = result.landmarks if result.success else None
            parts.append(_or_nan(None if marks is None else np.asarray(marks, np.float64).T.ravel(), 2 * LANDMARKS))
        parts.append(self._au_values(result.probs))
        parts.append(_or_nan(result.box if result.success else None, len(BOX_COLUMNS)))
        return np.concatenate(parts)

    def _au_values(self, probs: np.ndarray | None) -> np.ndarray:
        count = len(self.intensity) + len(self.presence) + len(self.extra_intensity) + len(self.extra_presence)
        if probs is None:
            return np.full(count, np.nan)
        p = np.asarray(probs, np.float64)
        present = (p >= self.thresholds).astype(np.float64)
        # One padding slot at the end, NaN, for the AUs the bundle does not predict (index -1).
        scaled, present = np.append(p * INTENSITY_SCALE, np.nan), np.append(present, np.nan)
        return np.concatenate(
            [scaled[self.intensity], present[self.presence], scaled[self.extra_intensity], present[self.extra_presence]]
        )

    def format_row(self, result: FrameResult) -> str:
        """One CSV line (no newline): ", " between fields, a bare "," before an empty one."""
        line = ""
        for k, (value, digits) in enumerate(zip(self.values(result), self.digits, strict=True)):
            text = "" if np.isnan(value) else (str(int(round(value))) if digits == 0 else f"{value:.{digits}f}")
            line += text if k == 0 else (SEPARATOR + text if text else "," + text)
        return line


def _or_nan(values: Iterable[float] | None, count: int) -> np.ndarray:
    return np.full(count, np.nan) if values is None else np.asarray(values, np.float64).reshape(count)


class OpenFaceSink(TextSink):
    """Writes results as they come, one OpenFace 2 row per frame, flushed after every write; with `files` (images)
    a last column, the image's path."""

    def __init__(self, path: Path | str, layout: OpenFaceLayout, files: Sequence[str] | None = None) -> None:
        self.layout, self.files = layout, files
        super().__init__(path, SEPARATOR.join(layout.names + [FILE_COLUMN] * (files is not None)))

    def write(self, results: Iterable[FrameResult]) -> None:
        if self.files is None:
            self.write_lines(self.layout.format_row(r) for r in results)
        else:
            # A bare "," before the path: a reader that splits on "," and keeps spaces reads the path as it is.
            files = self.files
            self.write_lines(self.layout.format_row(r) + "," + quote_field(file_of(r, files)) for r in results)


def openface_table(
    results: Sequence[FrameResult], layout: OpenFaceLayout, files: Sequence[str] | None = None
) -> pd.DataFrame:
    """The OpenFace CSV's rows as a DataFrame (same columns; NaN where the CSV is empty)."""
    rows = np.stack([layout.values(r) for r in results]) if results else np.zeros((0, len(layout.columns)))
    table = pd.DataFrame(rows, columns=layout.names)
    for name in INTEGER_COLUMNS:
        table[name] = table[name].astype(np.int64)
    if files is not None:
        table[FILE_COLUMN] = [file_of(r, files) for r in results]
    return table
