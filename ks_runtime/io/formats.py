"""The per-frame table formats by name: `openface` (OpenFace 2's FeatureExtraction CSV, openface.py) and `ks` (our
own, with every AU's probability, table.py); a CSV writer and a DataFrame for each."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ks_runtime.core.errors import ConfigError
from ks_runtime.core.results import FrameResult
from ks_runtime.io.openface import OpenFaceLayout, OpenFaceSink, openface_table
from ks_runtime.io.table import CsvSink, TextSink, results_table

CSV_FORMATS = ("openface", "ks")


def check_csv_format(name: str) -> str:
    if name not in CSV_FORMATS:
        raise ConfigError(f"table format {name!r} is not known; known: {', '.join(CSV_FORMATS)}")
    return name


def csv_sink(
    name: str,
    path: Path | str,
    au_columns: Sequence[str],
    thresholds: Sequence[float],
    landmarks: bool = False,
    sep: str = ",",
    files: Sequence[str] | None = None,
) -> TextSink:
    """The CSV writer of format `name`; `landmarks`: the face stage has 68 (openface: the landmark and pose
    columns); `sep`: the ks format's separator (openface always writes OpenFace's ", "); `files`: the images'
    paths, by frame index, for a last `file` column."""
    if check_csv_format(name) == "openface":
        return OpenFaceSink(path, OpenFaceLayout(au_columns, thresholds, landmarks), files)
    return CsvSink(path, au_columns, thresholds, sep=sep, files=files)


def csv_table(
    name: str,
    results: Sequence[FrameResult],
    au_columns: Sequence[str],
    thresholds: Sequence[float],
    landmarks: bool = False,
    files: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The rows the CSV of format `name` holds, as a DataFrame with its columns."""
    if check_csv_format(name) == "openface":
        return openface_table(results, OpenFaceLayout(au_columns, thresholds, landmarks), files)
    return results_table(results, au_columns, thresholds, files)
