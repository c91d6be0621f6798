"""The runtime's hard edges (issue 19): numbers checked before anything is opened, allocations sized by the input,
fps that must be positive, a frame of another size in a sequence, and every output path checked before the
first frame."""

import logging

import cv2
import numpy as np
import pytest

from ks_runtime import detector as detector_module
from ks_runtime.cli import main
from ks_runtime.core.errors import ConfigError, OutputError
from ks_runtime.detector import Detector
from ks_runtime.inputs import open_source
from ks_runtime.io.table import read_results_csv
from ks_runtime.stream import MAX_BATCH_SIZE, StreamConfig, StreamScheduler
from tests.runtime.conftest import synth_frames


@pytest.fixture(scope="module")
def frames():
    return synth_frames(12, size=32, seed=5)[0]


@pytest.fixture()
def blocker(tmp_path):
    """A regular file where an output's folder would have to be."""
    path = tmp_path / "blocker"
    path.write_text("not a folder")
    return path


# --- numbers -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--batch-size", "100000000"),
        ("--batch-size", "0"),
        ("--fps", "-5"),
        ("--fps", "0"),
        ("--fps", "nan"),
        ("--threads", "-1"),
        ("--max-wait-ms", "-1"),
        ("--max-wait-ms", "inf"),
    ],
)
def test_every_number_is_checked_before_anything_is_opened(flag, value, tmp_path, capsys):
    # The bundle does not exist: a number checked after opening it would fail on the bundle instead.
    with pytest.raises(SystemExit) as stopped:
        main([str(tmp_path / "no-bundle"), "--input", "synthau:tiny:S05:T1", flag, value])
    err = capsys.readouterr().err
    assert stopped.value.code == 2
    assert flag in err and value in err and "allowed" in err
    assert "no-bundle" not in err and not (tmp_path / "processed").exists()


@pytest.mark.parametrize(("flag", "value"), [("--sequences", "-1"), ("--latency-frames", "-3"), ("--batch-size", "0")])
def test_the_reports_numbers_are_checked_too(flag, value, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["report", str(tmp_path / "no-bundle"), flag, value])
    assert stopped.value.code == 2 and flag in capsys.readouterr().err


def test_the_api_refuses_a_batch_past_the_largest(bundle):
    with pytest.raises(ConfigError, match=f"batch_size=100000000 .*1..{MAX_BATCH_SIZE}"):
        StreamConfig(batch_size=100_000_000)


def test_a_batch_is_sized_by_the_source_not_the_flag(bundle, frames, monkeypatch):
    made: list[int] = []

    class Spy(StreamScheduler):
        def __init__(self, engine, preprocess, config, *args, **kwargs):
            super().__init__(engine, preprocess, config, *args, **kwargs)
            made.append(len(self._frames))

    monkeypatch.setattr(detector_module, "StreamScheduler", Spy)
    table = Detector(bundle, batch_size=MAX_BATCH_SIZE).detect(list(frames))
    assert len(table) == len(frames) and made == [len(frames)]


@pytest.mark.parametrize("fps", [0, -5.0, float("nan")])
def test_a_non_positive_fps_is_refused_not_replaced(fps, frames, tmp_path):
    for index, image in enumerate(frames[:3]):
        cv2.imwrite(str(tmp_path / f"f{index}.png"), image)
    for spec in (tmp_path, list(frames)):
        with pytest.raises(ConfigError, match="fps"):
            open_source(spec, fps=fps, sequence=True)


# --- a frame of another size in a sequence -------------------------------------------------------------------
def test_a_frame_of_another_size_in_a_sequence_is_named_once(bundle, frames, tmp_path, caplog):
    folder = tmp_path / "crops"
    folder.mkdir()
    for index, image in enumerate(frames[:6]):
        cv2.imwrite(str(folder / f"frame{index}.png"), image)
    for index in (6, 7):
        cv2.imwrite(str(folder / f"frame{index}.png"), np.zeros((40, 32, 3), np.uint8))  # not square
    detector = Detector(bundle)
    with caplog.at_level(logging.WARNING):
        table = detector.detect(folder, sequence=True)
    assert len(table) == 8
    warnings = [w for w in detector.summary.warnings if "frame6.png" in w]
    assert len(warnings) == 1 and "32x40" in warnings[0] and "32x32" in warnings[0] and "2 frames" in warnings[0]
    assert "frame7.png" not in " ".join(detector.summary.warnings) and "frame6.png" in caplog.text


# --- output paths --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["csv", "plot", "overlay", "save_crops"])
def test_an_output_below_a_file_is_refused_before_the_first_frame(kind, bundle, frames, blocker, tmp_path):
    names = {"csv": "a.csv", "plot": "a.png", "overlay": "a.mp4", "save_crops": "crops"}
    outputs = {k: tmp_path / "out" / name for k, name in names.items()}
    outputs[kind] = blocker / "sub" / names[kind]
    read: list[int] = []
    with pytest.raises(OutputError) as refused:
        Detector(bundle).detect((read.append(i) or f for i, f in enumerate(frames)), **outputs)
    message = str(refused.value)
    assert str(blocker) in message and "not a folder" in message and "File exists" not in message
    assert read == [] and not (tmp_path / "out").exists()  # nothing read, nothing written


@pytest.mark.parametrize(
    ("kind", "name", "says"),
    [("plot", "a.txt", "extension"), ("overlay", "a.webm", "extension"), ("save_crops", "blocker", "not a folder")],
)
def test_an_output_we_cannot_write_is_named_with_its_cause(kind, name, says, bundle, frames, blocker, tmp_path):
    path = blocker if name == "blocker" else tmp_path / name
    with pytest.raises(OutputError, match=says) as refused:
        Detector(bundle).detect(list(frames), **{kind: path})
    assert str(path) in str(refused.value) and "codec" not in str(refused.value)


def test_ks_run_names_an_unwritable_plot_before_the_run(bundle, blocker, tmp_path, capsys):
    code = main(
        [
            str(bundle),
            "--input",
            "synthau:tiny:S05:T1",
            "--csv",
            str(tmp_path / "a.csv"),
            "--plot",
            str(blocker / "a.png"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and str(blocker) in err and "not a folder" in err and ".png?" not in err
    assert not (tmp_path / "a.csv").exists()


def test_a_full_disk_names_the_csv_and_keeps_whole_rows(bundle, frames, tmp_path, monkeypatch):
    from tests.runtime.io.test_write_failures import full_disk_after

    csv = tmp_path / "a.csv"
    monkeypatch.setattr("ks_runtime.io.table.open", full_disk_after(1500), raising=False)
    table = Detector(bundle, batch_size=2).detect(list(frames), csv=csv)
    error = table.attrs["error"]
    assert isinstance(error, OutputError) and str(csv) in str(error) and "No space left" in str(error)
    text = csv.read_text()
    assert text.endswith("\n") and 0 < len(read_results_csv(csv)) < len(frames)
