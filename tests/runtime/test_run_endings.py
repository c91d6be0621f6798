"""How runs end and what they report (issue 18): a failure part-way keeps the rows made before it, a frame's
channel order is never assumed, a file run's latency is its processing latency, and -q is quiet."""

import logging

import numpy as np
import pytest

from ks_runtime.cli import main
from ks_runtime.core.errors import ConfigError
from ks_runtime.detector import Detector
from ks_runtime.io.sources import ArraySource, Paced, SourceError
from ks_runtime.io.table import read_results_csv
from ks_runtime.tools.policy_report import write_lossless_video
from tests.runtime.conftest import FakeEngine, synth_frames


@pytest.fixture(scope="module")
def frames():
    return synth_frames(20, size=32, seed=11)[0]


@pytest.fixture(scope="module")
def cut_video(frames, tmp_path_factory):
    """A video whose container promises 20 frames and holds about half of them."""
    video = write_lossless_video(frames, tmp_path_factory.mktemp("endings") / "clip", 25.0)
    cut = video.with_name(f"cut{video.suffix}")
    cut.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    return cut


def test_detect_returns_the_rows_made_before_a_failure_with_the_error_attached(bundle, frames, tmp_path, caplog):
    broken = [*frames[:6], frames[6] / 255.0, *frames[7:]]  # frame 6 is float: refused
    detector = Detector(bundle)
    with caplog.at_level(logging.WARNING, logger="ks_runtime.detector"):
        table = detector.detect(broken, csv=tmp_path / "a.csv", plot=tmp_path / "a.png")
    error = table.attrs["error"]
    assert isinstance(error, SourceError) and "frame 6" in str(error)
    assert len(table) == 6 and len(read_results_csv(tmp_path / "a.csv")) == 6 and (tmp_path / "a.png").is_file()
    assert detector.summary.errors == [str(error)] and table.attrs["summary"] is detector.summary
    assert "frame 6" in caplog.text and "returns the 6 rows" in caplog.text
    with pytest.raises(SourceError, match="frame 0"):  # nothing made: nothing to return
        detector.detect([frames[0] / 255.0, *frames[1:]])


def test_a_clean_run_has_no_error_attached(bundle, frames):
    table = Detector(bundle).detect(list(frames))
    assert len(table) == 20 and table.attrs["error"] is None


def test_infer_frame_needs_the_frames_channel_order(bundle, frames):
    detector = Detector(bundle)
    with pytest.raises(TypeError, match="colour"):
        detector.infer_frame(frames[0])  # no default: RGB and BGR frames look alike to the code
    with pytest.raises(ConfigError, match="colour='bgr'"):
        detector.infer_frame(frames[0], colour="bgr")
    rgb = detector.infer_frame(frames[0], colour="RGB")[0].probs
    detector.end_stream()
    bgr = detector.infer_frame(np.ascontiguousarray(frames[0][..., ::-1]), colour="BGR")[0].probs
    detector.end_stream()
    swapped = detector.infer_frame(np.ascontiguousarray(frames[0][..., ::-1]), colour="RGB")[0].probs
    assert np.array_equal(rgb, bgr) and not np.allclose(rgb, swapped, atol=1e-4)


def slow_detector(bundle, delay):
    """The test bundle's detector with a numpy engine that takes `delay` seconds per encoder batch of one frame."""
    detector = Detector(bundle, face="aligned", batch_size=1)
    detector.engine = FakeEngine(n=detector.manifest.clip_len, u=detector.manifest.n_aus, delay=delay)
    return detector


def test_a_file_run_reports_processing_latency_and_a_paced_one_arrival(bundle, frames):
    delay = 0.05
    detector = slow_detector(bundle, delay)
    # Read flat out, the 20 frames fill the 16-frame queue at once: from arrival, the median frame would wait about
    # 10 batches (500 ms); processing it takes one (50 ms). The bound leaves room for a busy machine.
    detector.detect(ArraySource(frames, fps=25))
    summary = detector.summary
    assert summary.latency_from == "processing" and "latency ms, processing: off the queue to result" in summary.text()
    assert delay * 1e3 <= summary.latency_ms[50] < 4 * delay * 1e3
    # Replayed at 10 fps (100 ms a frame, slower than the engine): latency from arrival, and nothing queues.
    detector.detect(Paced(ArraySource(frames, fps=25), fps=10))
    summary = detector.summary
    assert summary.latency_from == "arrival" and "latency ms, arrival to result" in summary.text()
    assert delay * 1e3 <= summary.latency_ms[50] < 4 * delay * 1e3
    assert summary.to_dict()["latency_from"] == "arrival"


@pytest.mark.parametrize(
    "argv",
    [
        ["-q", "BUNDLE", "--input", "INPUT"],
        ["-q", "run", "BUNDLE", "--input", "INPUT"],
        ["run", "-q", "BUNDLE", "--input", "INPUT"],
        ["BUNDLE", "--input", "INPUT", "-q"],
        ["--quiet", "--bundle", "BUNDLE", "-f", "INPUT"],
    ],
)
def test_quiet_prints_nothing_but_warnings(bundle, cut_video, tmp_path, capsys, caplog, argv):
    argv = [str(bundle) if a == "BUNDLE" else str(cut_video) if a == "INPUT" else a for a in argv]
    with caplog.at_level(logging.INFO):
        assert main([*argv, "--csv", str(tmp_path / "q.csv")]) == 0
    assert capsys.readouterr().out == ""
    assert [r.levelno for r in caplog.records if r.name.startswith("ks_runtime")] == [logging.WARNING]
    assert "the container promises 20 frames" in caplog.text
    assert main([*argv, "--csv", str(tmp_path / "q.csv"), "--json"]) == 0  # output asked for still prints
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("{") and '"warnings": [' in out[0]


def test_quiet_still_names_an_error(bundle, tmp_path, capsys):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 100)
    assert main(["-q", str(bundle), "--input", str(junk), "--csv", str(tmp_path / "q.csv")]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and str(junk) in captured.err and "error" in captured.err
