"""ks_runtime/io/openface.py (`--format openface`): the CSV loads under py-feat's `read_openface` contract, restated
below from py-feat's source (feat/utils/io.py and the column lists of feat/utils/__init__.py), and each accessor
the report names (AU intensities and presence, landmarks, head pose) gives numbers, not text."""

import numpy as np
import pandas as pd
import pytest

from ks_runtime.core.errors import ConfigError
from ks_runtime.core.results import FrameResult
from ks_runtime.io.formats import csv_sink, csv_table
from ks_runtime.io.openface import OpenFaceLayout, OpenFaceSink, openface_table
from ks_runtime.io.table import read_results_csv

# --- py-feat's contract ------------------------------------------------------------------------------------------
PYFEAT_AUS = [1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 45]
PYFEAT_AU_COLUMNS = [f"AU{n:02d}_r" for n in PYFEAT_AUS] + sorted(f"AU{n:02d}_c" for n in [*PYFEAT_AUS, 28])
PYFEAT_LANDMARKS = [f"x_{i}" for i in range(68)] + [f"y_{i}" for i in range(68)]
PYFEAT_POSE = ["pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz"]
PYFEAT_GAZE = ["gaze_0_x", "gaze_0_y", "gaze_0_z", "gaze_1_x", "gaze_1_y", "gaze_1_z"]
PYFEAT_ORIGINAL = (
    ["frame", "timestamp", "confidence", "success"]
    + PYFEAT_GAZE
    + PYFEAT_POSE
    + PYFEAT_LANDMARKS
    + [f"{axis}_{i}" for axis in "XYZ" for i in range(68)]
    + ["p_scale", "p_rx", "p_ry", "p_rz", "p_tx", "p_ty"]
    + [f"p_{i}" for i in range(34)]
    + PYFEAT_AU_COLUMNS
)


def read_openface_like_pyfeat(path) -> pd.DataFrame:
    """What py-feat's read_openface does before wrapping the table: split on ",", strip spaces from the names,
    keep OpenFace's original columns, or every column when one of them is missing (its `except: pass`)."""
    table = pd.read_csv(path, sep=",")
    table.columns = table.columns.str.strip(" ")
    try:
        table = table[PYFEAT_ORIGINAL]
    except KeyError:
        pass
    return table


# --- results to write --------------------------------------------------------------------------------------------
BP4D = ("AU01", "AU02", "AU04", "AU06", "AU07", "AU10", "AU12", "AU14", "AU15", "AU17", "AU23", "AU24")
THRESHOLDS = tuple(np.linspace(0.3, 0.7, len(BP4D)))


def make_results(count=8, no_face=(3,), landmarks=True):
    rng = np.random.default_rng(1)
    out = []
    for i in range(count):
        face = i not in no_face
        result = FrameResult(
            "0",
            i,
            i / 25,
            face,
            0.95 if face else 0.0,
            rng.random(len(BP4D)).astype(np.float32) if face else None,
            arrival=float(i),
            box=(100.0 + i, 80.0, 220.0 + i, 200.0) if face else None,
        )
        if face and landmarks:
            result.landmarks = rng.uniform(50, 300, (68, 2)).round(1)
            result.pose = np.array([10.0 + i, -5.0, 600.0, 0.1, -0.2 + 0.01 * i, 0.05])
        out.append(result)
    return out


def write(path, results, landmarks=True):
    with OpenFaceSink(path, OpenFaceLayout(BP4D, THRESHOLDS, landmarks)) as sink:
        sink.write(results[:2])
        sink.write(results[2:])
    return path


def test_the_header_is_openface_2s_columns_in_its_order(tmp_path):
    header = write(tmp_path / "of.csv", make_results()).read_text().splitlines()[0]
    names = header.split(", ")
    assert names[:11] == ["frame", "face_id", "timestamp", "confidence", "success", *PYFEAT_POSE]
    assert names[11:147] == PYFEAT_LANDMARKS
    assert names[147:182] == PYFEAT_AU_COLUMNS  # every OpenFace AU, _r then _c, each sorted
    assert names[182:] == ["ks_AU24_r", "ks_AU24_c", "ks_face_x0", "ks_face_y0", "ks_face_x1", "ks_face_y1"]
    assert not any(name.startswith(("gaze_", "eye_lmk_", "X_", "p_")) for name in names)  # not measured: not written


def test_pyfeats_reader_gets_numbers_in_every_accessor(tmp_path):
    results = make_results()
    table = read_openface_like_pyfeat(write(tmp_path / "of.csv", results))
    for columns in (PYFEAT_AU_COLUMNS, PYFEAT_LANDMARKS, PYFEAT_POSE, ["frame", "timestamp", "confidence", "success"]):
        selected = table[columns]  # what Fex.aus, .landmarks, .poses and .time select
        text = [c for c in columns if not pd.api.types.is_numeric_dtype(selected[c])]
        assert not text, f"read as text: {text}"
    with pytest.raises(KeyError):  # no gaze model: Fex's gaze accessor fails rather than reading invented numbers
        table[PYFEAT_GAZE]
    assert "ks_AU24_c" in table.columns  # kept, because read_openface keeps every column when its list is not met

    faces = [r for r in results if r.success]
    with_face = table[table["success"] == 1]
    probs = np.stack([r.probs for r in faces]).astype(np.float64)
    column = {c: j for j, c in enumerate(BP4D)}
    for au in ("AU01", "AU12", "AU23"):
        j = column[au]
        assert np.allclose(with_face[f"{au}_r"], 5 * probs[:, j], atol=5e-4)
        assert (with_face[f"{au}_c"] == (probs[:, j] >= THRESHOLDS[j])).all()
    assert np.allclose(with_face["ks_AU24_r"], 5 * probs[:, column["AU24"]], atol=5e-4)
    for missing in ("AU05_r", "AU09_c", "AU28_c", "AU45_r"):  # OpenFace AUs this bundle does not predict: empty
        assert table[missing].isna().all()
    landmarks = np.stack([r.landmarks for r in faces])
    assert np.allclose(with_face[[f"x_{i}" for i in range(68)]], landmarks[:, :, 0], atol=0.05)
    assert np.allclose(with_face[[f"y_{i}" for i in range(68)]], landmarks[:, :, 1], atol=0.05)
    assert np.allclose(with_face[PYFEAT_POSE[:3]], np.stack([r.pose[:3] for r in faces]), atol=0.05)
    assert np.allclose(with_face[PYFEAT_POSE[3:]], np.stack([r.pose[3:] for r in faces]), atol=5e-4)


def test_a_frame_without_a_face_has_success_0_and_empty_fields(tmp_path):
    path = write(tmp_path / "of.csv", make_results())
    line = path.read_text().splitlines()[4]  # frame 4: no face
    assert line.startswith("4, 0, 0.120, 0.00, 0,,,")  # a bare "," before each empty field
    table = read_openface_like_pyfeat(path)
    faceless = table[table["success"] == 0]
    assert faceless["frame"].tolist() == [4]
    assert faceless.drop(columns=["frame", "face_id", "timestamp", "confidence", "success"]).isna().all().all()


def test_a_stage_without_landmarks_writes_no_landmark_or_pose_columns(tmp_path):
    path = write(tmp_path / "haar.csv", make_results(landmarks=False), landmarks=False)
    table = read_openface_like_pyfeat(path)
    assert not {*PYFEAT_LANDMARKS, *PYFEAT_POSE} & set(table.columns)  # left out, not zeros
    assert table[PYFEAT_AU_COLUMNS].notna().any().any()


def test_the_table_equals_the_csv_read_back(tmp_path):
    results = make_results()
    for landmarks in (True, False):
        path = tmp_path / f"of_{landmarks}.csv"
        with csv_sink("openface", path, BP4D, THRESHOLDS, landmarks) as sink:
            sink.write(results)
        table = csv_table("openface", results, BP4D, THRESHOLDS, landmarks)
        read = read_results_csv(path)
        assert list(read.columns) == list(table.columns)
        pd.testing.assert_frame_equal(read, table, check_dtype=False, atol=5e-4)
    assert len(openface_table([], OpenFaceLayout(BP4D, THRESHOLDS, True))) == 0


def test_bad_au_columns_and_formats_are_refused_by_name():
    with pytest.raises(ConfigError, match="the bundle's AU column 'smile'"):
        OpenFaceLayout(("AU01", "smile"), (0.5, 0.5), False)
    with pytest.raises(ConfigError, match="2 AU columns but 1 thresholds"):
        OpenFaceLayout(("AU01", "AU02"), (0.5,), False)
    with pytest.raises(ConfigError, match="table format 'csv' is not known; known: openface, ks"):
        csv_table("csv", [], BP4D, THRESHOLDS)
