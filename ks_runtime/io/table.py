"""The per-frame results as our own CSV (`--format ks`, the Python API's default) and as a pandas table; the
line-by-line file writer every table format shares (`TextSink`). The OpenFace 2 layout is `openface.py`.

CSV layout: `frame,face_id,timestamp,confidence,success,AU01_c,...,AU01_p,...`: every `_c` column (0/1 at the
AU's threshold from the manifest) and then every `_p` column (the probability, our extension), AUs in the
bundle's order; for images, a last column `file`, the image's path (quoted where it holds a comma or a quote).
`frame` counts from 1 as OpenFace does; a frame with several faces has a row per face, by `face_id`;
`timestamp` is the source's, in seconds; a frame without a face has one row, success=0 and empty AU values. Each
batch of rows is one write straight to the file, so a run that stops on bad input, Ctrl-C or a kill leaves a
complete file of what it processed; a write that fails (a full disk) is cut back to the last whole row and the
error names the file.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ks_runtime.core.errors import OutputError
from ks_runtime.core.results import FrameResult

log = logging.getLogger(__name__)

ID_COLUMNS = ("frame", "face_id", "timestamp", "confidence", "success")
FILE_COLUMN = "file"  # an image's path, for image inputs (last, so every other column keeps its place)


def csv_columns(au_columns: Sequence[str], file: bool = False) -> list[str]:
    """The CSV's header: the id columns, then every AU's _c, then every AU's _p (then `file` for images)."""
    return [*ID_COLUMNS, *(f"{c}_c" for c in au_columns), *(f"{c}_p" for c in au_columns)] + [FILE_COLUMN] * file


def quote_field(text: str) -> str:
    """A text field as CSV writes it: quoted, its quotes doubled, when it holds a separator, a quote, a line break
    or an edge space (a path may hold any of them)."""
    if any(ch in text for ch in ',"\r\n') or text != text.strip():
        return '"' + text.replace('"', '""') + '"'
    return text


def file_of(result: FrameResult, files: Sequence[str]) -> str:
    """The image file a result is of (results number the images in the order of `files`)."""
    return files[result.index]


def format_row(result: FrameResult, thresholds: np.ndarray, sep: str = ",") -> str:
    """One CSV line (no newline): empty AU values and success=0 where there is no face."""
    ids = [
        str(result.frame),
        str(result.face_id),
        f"{result.timestamp:.3f}",
        f"{result.confidence:.2f}",
        "1" if result.success else "0",
    ]
    if result.probs is None:
        values = [""] * (2 * len(thresholds))
    else:
        probs = np.asarray(result.probs, np.float64)
        values = [str(int(p >= t)) for p, t in zip(probs, thresholds, strict=True)] + [f"{p:.6f}" for p in probs]
    return sep.join(ids + values)


class TextSink:
    """A text file written a batch of lines at a time, each batch as one write straight to the file (unbuffered),
    so that a run that stops on bad input, Ctrl-C or a kill leaves a complete file of what it processed. A write
    that fails (a full disk) or is interrupted is cut back to the last whole line, and an `OutputError` names the
    file. `header` (when given) is the first line."""

    def __init__(self, path: Path | str, header: str | None = None) -> None:
        self.path = Path(path)
        self.rows = 0
        self._whole = 0  # bytes of whole lines in the file: where a failed write is cut back to
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file: io.RawIOBase | None = open(self.path, "wb", buffering=0)  # noqa: SIM115 (closed in close())
        except OSError as error:
            raise OutputError(f"{self.path}: cannot write: {error.strerror or error}") from None
        if header is not None:
            self._append((header + "\n").encode("utf-8"), "its header")

    def write_lines(self, lines: Iterable[str]) -> None:
        if self._file is None:
            raise ValueError(f"{self.path}: the sink is closed")
        lines = list(lines)
        if lines:
            self._append("".join(line + "\n" for line in lines).encode("utf-8"), f"{len(lines)} more lines")
            self.rows += len(lines)

    def _append(self, data: bytes, what: str) -> None:
        """Write `data` whole, or cut the file back to its last whole line and raise (re-raise an interrupt)."""
        view = memoryview(data)
        try:
            while view:
                view = view[self._file.write(view) or 0 :]
        except BaseException as error:
            self._cut_back()
            if not isinstance(error, OSError):
                raise
            raise OutputError(
                f"{self.path}: cannot write {what}: {error.strerror or error}; the file ends at its last whole "
                f"row ({self.rows} rows)"
            ) from None
        self._whole += len(data)

    def _cut_back(self) -> None:
        try:
            self._file.truncate(self._whole)
            self._file.seek(self._whole)
        except OSError as error:  # truncating frees space, so this is rare; the first error is the one to report
            log.warning("%s: cannot cut back to the last whole row: %s", self.path, error)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> TextSink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class CsvSink(TextSink):
    """Writes results as they come, one row per frame in our own layout, flushed after every write.

    `sep=", "` writes OpenFace 2's own separator, for parsers that expect it; the default has no spaces.
    """

    def __init__(
        self,
        path: Path | str,
        au_columns: Sequence[str],
        thresholds: Sequence[float],
        sep: str = ",",
        files: Sequence[str] | None = None,
    ):
        self.thresholds = np.asarray(thresholds, np.float64)
        if len(self.thresholds) != len(au_columns):
            raise ValueError(f"{len(au_columns)} AU columns but {len(self.thresholds)} thresholds")
        self.sep, self.files = sep, files
        super().__init__(path, sep.join(csv_columns(au_columns, files is not None)))

    def write(self, results: Iterable[FrameResult]) -> None:
        if self.files is None:
            self.write_lines(format_row(r, self.thresholds, self.sep) for r in results)
        else:
            files = self.files
            self.write_lines(
                format_row(r, self.thresholds, self.sep) + self.sep + quote_field(file_of(r, files)) for r in results
            )


def results_table(
    results: Sequence[FrameResult],
    au_columns: Sequence[str],
    thresholds: Sequence[float],
    files: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The CSV's rows as a DataFrame (same columns; NaN where no face; `file` when `files` are given)."""
    u = len(au_columns)
    probs = np.full((len(results), u), np.nan)
    for i, r in enumerate(results):
        if r.probs is not None:
            probs[i] = r.probs
    present = ~np.isnan(probs)
    with np.errstate(invalid="ignore"):
        labels = np.where(present, probs >= np.asarray(thresholds, np.float64), np.nan)
    data: dict[str, object] = {
        "frame": np.array([r.frame for r in results], np.int64),
        "face_id": np.array([r.face_id for r in results], np.int64),
        "timestamp": np.array([r.timestamp for r in results], np.float64),
        "confidence": np.array([r.confidence for r in results], np.float64),
        "success": np.array([int(r.success) for r in results], np.int64),
    }
    for j, c in enumerate(au_columns):
        data[f"{c}_c"] = (
            pd.array(labels[:, j], dtype="Int64") if not present[:, j].all() else labels[:, j].astype(np.int64)
        )
    for j, c in enumerate(au_columns):
        data[f"{c}_p"] = probs[:, j]
    if files is not None:
        data[FILE_COLUMN] = [file_of(r, files) for r in results]
    return pd.DataFrame(data, columns=csv_columns(au_columns, files is not None))


def read_results_csv(path: Path | str) -> pd.DataFrame:
    """Read a runtime CSV, or one with OpenFace 2's ", " separators, with stripped column names."""
    table = pd.read_csv(path, skipinitialspace=True)
    table.columns = [c.strip() for c in table.columns]
    return table
