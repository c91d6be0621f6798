"""ks_runtime/io/ (table.py, timeline.py, summary.py): the OpenFace-compatible CSV (read back by pandas, with and
without OpenFace 2's ", "), the DataFrame, the timeline PNG and the run summary."""

import math

import cv2
import numpy as np
import pandas as pd
import pytest

from ks_runtime.core.errors import OutputError
from ks_runtime.core.results import FrameResult
from ks_runtime.io.summary import RunStats
from ks_runtime.io.table import CsvSink, csv_columns, read_results_csv, results_table
from ks_runtime.io.timeline import timeline_png

COLUMNS = ("AU01", "AU02", "AU12")
THRESHOLDS = (0.5, 0.3, 0.7)


def make_results(count=10, no_face=(4, 5)):
    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        face = i not in no_face
        probs = rng.random(3).astype(np.float32) if face else None
        out.append(
            FrameResult(
                "0",
                i,
                i / 30,
                face,
                1.0 if face else 0.0,
                probs,
                arrival=float(i),
                final=float(i) + 0.001 * (i + 1),
                stream=0 if i < 4 else (-1 if not face else 1),
            )
        )
    return out


EXPECTED = [
    "frame",
    "face_id",
    "timestamp",
    "confidence",
    "success",
    "AU01_c",
    "AU02_c",
    "AU12_c",
    "AU01_p",
    "AU02_p",
    "AU12_p",
]


@pytest.mark.parametrize("sep", [",", ", "])
def test_the_csv_reads_back_with_pandas_plain_and_with_openface_separators(tmp_path, sep):
    results = make_results()
    path = tmp_path / "out.csv"
    with CsvSink(path, COLUMNS, THRESHOLDS, sep=sep) as sink:
        sink.write(results[:3])
        assert len(path.read_text().splitlines()) == 4  # header + rows, flushed before the sink closes
        sink.write(results[3:])
    text = path.read_text()
    assert (", " in text) == (sep == ", ")
    for table in (read_results_csv(path), pd.read_csv(path, sep=r"\s*,\s*", engine="python")):
        assert list(table.columns) == EXPECTED == csv_columns(COLUMNS)
        assert len(table) == 10 and table["frame"].tolist() == list(range(1, 11))  # counted from 1, as OpenFace
        assert np.allclose(table["timestamp"], np.round(np.arange(10) / 30, 3))
        assert table["success"].tolist() == [1, 1, 1, 1, 0, 0, 1, 1, 1, 1] and (table["face_id"] == 0).all()
        faceless = table[table["success"] == 0]
        assert faceless[EXPECTED[5:]].isna().all().all()
        with_face = table[table["success"] == 1]
        probs = with_face[["AU01_p", "AU02_p", "AU12_p"]].to_numpy()
        assert np.allclose(probs, np.stack([r.probs for r in results if r.success]), atol=1e-6)
        assert (with_face[["AU01_c", "AU02_c", "AU12_c"]].to_numpy() == (probs >= THRESHOLDS)).all()


def test_the_plain_csv_has_no_spaces_and_empty_values_where_no_face(tmp_path):
    path = tmp_path / "out.csv"
    with CsvSink(path, COLUMNS, THRESHOLDS) as sink:
        sink.write(make_results())
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(EXPECTED) and " " not in path.read_text()
    assert lines[5] == "5,0,0.133,0.00,0,,,,,,"


def test_the_table_matches_the_csv(tmp_path):
    results = make_results()
    table = results_table(results, COLUMNS, THRESHOLDS)
    path = tmp_path / "out.csv"
    with CsvSink(path, COLUMNS, THRESHOLDS) as sink:
        sink.write(results)
    read = read_results_csv(path)
    assert list(table.columns) == list(read.columns)
    assert np.allclose(table.to_numpy(float), read.to_numpy(float), atol=5e-4, equal_nan=True)  # ms timestamps


def test_the_timeline_png_has_a_lane_per_au_and_a_truth_strip(tmp_path):
    results = make_results(40, no_face=(10, 11))
    probs = np.stack([r.probs if r.probs is not None else np.full(3, np.nan) for r in results])
    stamps = np.array([r.timestamp for r in results])
    plain = cv2.imread(str(timeline_png(tmp_path / "a.png", stamps, probs, COLUMNS, THRESHOLDS, width=400)))
    labels = np.zeros((40, 3), np.int8)
    labels[5:20, 1] = 1
    truth = cv2.imread(str(timeline_png(tmp_path / "b.png", stamps, probs, COLUMNS, THRESHOLDS, labels, width=400)))
    assert plain.shape[1] == truth.shape[1] and truth.shape[0] > plain.shape[0]
    green = (truth[..., 1] > 140) & (truth[..., 0] < 90) & (truth[..., 2] < 90)
    assert green.any() and not ((plain[..., 1] > 140) & (plain[..., 0] < 90) & (plain[..., 2] < 90)).any()
    with pytest.raises(OutputError, match="c.unknown"):
        timeline_png(tmp_path / "c.unknown", stamps, probs, COLUMNS, THRESHOLDS)


def test_the_summary_reports_latency_percentiles_drops_and_f1():
    results = make_results(10, no_face=(4, 5))
    labels = np.ones((10, 3), np.int8)
    stats = RunStats("center", 5, COLUMNS, THRESHOLDS, source_fps=25.0, labels=labels)
    stats.add(results)
    summary = stats.summary(dropped=3)
    latencies = [1e3 * r.latency for r in results if r.success]
    assert summary.frames == 10 and summary.faces == 8 and summary.dropped == 3 and summary.streams == 2
    assert summary.latency_ms[50] == pytest.approx(np.percentile(latencies, 50))
    assert summary.latency_ms[99] == pytest.approx(np.percentile(latencies, 99))
    assert summary.lookahead_frames == 2 and summary.lookahead_ms == pytest.approx(80.0)
    assert summary.f1.support.tolist() == [8, 8, 8]  # the faceless frames are not scored
    text = summary.text()
    assert "dropped 3" in text and "p95" in text and "streamed F1" in text
    assert math.isclose(summary.fps, 10 / summary.seconds)


def test_latency_reservoir_is_exact_below_capacity_and_bounded_above():
    from ks_runtime.io.summary import LatencyReservoir

    small = LatencyReservoir(capacity=1000)
    values = np.random.default_rng(1).exponential(0.02, 500)
    for v in values:
        small.add(v)
    assert np.array_equal(np.sort(small.sample()), np.sort(values))

    big = LatencyReservoir(capacity=2000)
    stream = np.random.default_rng(2).uniform(0.0, 1.0, 50_000)
    for v in stream:
        big.add(v)
    assert big.sample().shape == (2000,) and big.seen == 50_000
    # a uniform sample of a uniform stream: the median lands near 0.5, and late values are represented
    assert abs(np.median(big.sample()) - 0.5) < 0.05
    assert np.isin(big.sample(), stream[40_000:]).sum() > 200


def test_latency_reservoir_rejects_zero_capacity():
    from ks_runtime.io.summary import LatencyReservoir

    with pytest.raises(ValueError, match="capacity"):
        LatencyReservoir(capacity=0)
