"""The per-sequence label CSV that BP4D's AU_OCC files and the generic layout share: a frame column, then AUs.

    frame,AU01,AU02,...      (frame header "frame", "Frame", "0" or empty; AU columns "AU01", "au1" or "1")
    12,0,1,...               values 0/1; 9, -1 or empty = unknown (read as -1: masked, never dropped)

Every malformed input raises DataError naming the file and the 1-based line.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ks_runtime.core.au import au_column, parse_au_column
from ks_runtime.core.errors import DataError

UNKNOWN = -1
# Header texts accepted for the first (frame number) column; BP4D's files vary.
FRAME_HEADERS = frozenset({"", "frame", "frames", "frame_number", "frame number", "framenumber", "frame_id", "0"})
# Cell text -> label; 9 (BP4D) and -1 / empty (generic) mean unknown.
_VALUES = {"0": 0, "1": 1, "9": UNKNOWN, "-1": UNKNOWN, "": UNKNOWN}


@dataclass
class LabelTable:
    """One parsed label file: AU numbers in file order, frame numbers [T], values int8 [T, C], lines [T]."""

    path: Path
    au_numbers: tuple[int, ...]
    frame_numbers: np.ndarray
    values: np.ndarray
    lines: np.ndarray

    def select(self, au_numbers: Sequence[int]) -> np.ndarray:
        """Labels int8 [T, U] of these AUs in this order; an AU the file lacks names the file."""
        missing = [n for n in au_numbers if n not in self.au_numbers]
        if missing:
            have = ", ".join(au_column(n) for n in self.au_numbers)
            raise DataError(
                f"{self.path}: line 1: no column for {', '.join(au_column(n) for n in missing)} (the header has {have})"
            )
        columns = [self.au_numbers.index(n) for n in au_numbers]
        return np.ascontiguousarray(self.values[:, columns])


def read_label_csv(path: Path | str, required: Sequence[int] = ()) -> LabelTable:
    """Parse one label CSV; `required` AU numbers must all have a column."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path}: line 1: empty file, expected a header row 'frame,AU01,AU02,...'")
            au_numbers, keep = _parse_header(path, header)
            frames, rows, lines = [], [], []
            first_line: dict[int, int] = {}
            for row in reader:
                line = reader.line_num
                if not row or all(not cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise DataError(f"{path}: line {line}: {len(row)} values, but the header has {len(header)} columns")
                frame = _parse_frame(path, line, row[0])
                if frame in first_line:
                    raise DataError(
                        f"{path}: line {line}: frame {frame} listed twice (first on line {first_line[frame]})"
                    )
                first_line[frame] = line
                frames.append(frame)
                rows.append([_parse_value(path, line, header[c], row[c]) for c in keep])
                lines.append(line)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a text CSV file ({exc.reason})") from None
    if not frames:
        raise DataError(f"{path}: no label rows after the header")
    table = LabelTable(
        path,
        au_numbers,
        np.asarray(frames, dtype=np.int64),
        np.asarray(rows, dtype=np.int8).reshape(len(frames), len(au_numbers)),  # [T, C]
        np.asarray(lines, dtype=np.int64),
    )
    if required:
        table.select(required)  # raises on a missing column
    return table


def _parse_header(path: Path, header: list[str]) -> tuple[tuple[int, ...], list[int]]:
    """AU numbers of the header and the cell positions they sit at; empty trailing names are skipped."""
    if header[0].strip().lower() not in FRAME_HEADERS:
        raise DataError(
            f"{path}: line 1: the first column must be the frame number (header 'frame' or empty), got {header[0]!r}"
        )
    numbers, keep = [], []
    for c, name in enumerate(header[1:], start=1):
        if not name.strip():
            continue  # a trailing comma in the header
        try:
            number = parse_au_column(name)
        except ValueError:
            number = 0
        if number <= 0:
            raise DataError(
                f"{path}: line 1: column {c + 1} {name!r} is not an AU column (expected e.g. 'AU01' or '1')"
            )
        if number in numbers:
            raise DataError(f"{path}: line 1: AU {number} has two columns")
        numbers.append(number)
        keep.append(c)
    if not numbers:
        raise DataError(f"{path}: line 1: no AU columns in the header (expected 'frame,AU01,AU02,...')")
    return tuple(numbers), keep


def _parse_frame(path: Path, line: int, cell: str) -> int:
    text = cell.strip()
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{path}: line {line}: frame number {cell!r} is not a number") from None
    if not value.is_integer() or value < 0:
        raise DataError(f"{path}: line {line}: frame number {cell!r} is not a non-negative integer")
    return int(value)


def _parse_value(path: Path, line: int, column: str, cell: str) -> int:
    text = cell.strip()
    value = _VALUES.get(text)
    if value is not None:
        return value
    try:
        number = float(text)
    except ValueError:
        raise DataError(f"{path}: line {line}: column {column.strip()!r}: {cell!r} is not a number") from None
    if number in (0.0, 1.0):
        return int(number)
    if number in (9.0, -1.0):
        return UNKNOWN
    raise DataError(
        f"{path}: line {line}: column {column.strip()!r}: value {cell!r} is not 0, 1 or unknown (9, -1 or empty)"
    )
