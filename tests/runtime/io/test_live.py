"""Live sources (ks_runtime/io/sources.py: webcams, the simulated camera) and the back-pressure rule: a
live source faster than the engine drops its oldest frames, counts them and reports them; a file never drops."""

import time

import numpy as np
import pytest

from ks_runtime.cli import input_stem, main
from ks_runtime.detector import Detector
from ks_runtime.engine.base import Engine
from ks_runtime.faces.base import AlignedFaces
from ks_runtime.inputs import open_source
from ks_runtime.io.sources import ArraySource, CameraSource, SimulatedCamera, SourceError, is_camera_spec
from ks_runtime.io.table import read_results_csv
from ks_runtime.stream import Runner, StreamConfig, StreamScheduler
from tests.runtime.conftest import FakeEngine, synth_frames


@pytest.fixture(scope="module")
def frames():
    return synth_frames(40, size=32, seed=2)[0]


class SlowEngine(Engine):
    """A real engine slowed down, as a big model on a small box would be."""

    def __init__(self, inner: Engine, delay: float) -> None:
        self.inner, self.delay = inner, delay

    def encode(self, frames):
        time.sleep(self.delay)
        return self.inner.encode(frames)

    def head(self, sa, students, key_slot):
        return self.inner.head(sa, students, key_slot)

    @property
    def clip_len(self):
        return self.inner.clip_len

    @property
    def clip_stride(self):
        return self.inner.clip_stride

    @property
    def n_aus(self):
        return self.inner.n_aus

    def describe(self):
        return f"slowed {self.inner.describe()}"


def test_the_simulated_camera_delivers_at_its_rate_with_arrival_timestamps(frames):
    camera = SimulatedCamera(frames[:10], fps=100)
    assert camera.live and open_source(camera) is camera
    started = time.perf_counter()
    items = list(camera)
    assert time.perf_counter() - started >= 0.08  # 10 frames at 100 fps
    assert [i.index for i in items] == list(range(10)) and camera.missed == 0
    stamps = np.array([i.timestamp for i in items])
    assert stamps[0] < 0.02 and np.all(np.diff(stamps) > 0) and 0.005 < np.median(np.diff(stamps)) < 0.03


def test_a_slow_reader_of_a_camera_finds_only_the_newest_frames(frames):
    camera = SimulatedCamera(frames[:30], fps=500, buffer=2)
    seen = []
    for item in camera:
        seen.append(item.index)
        time.sleep(0.02)
    assert camera.missed > 0 and len(seen) + camera.missed == 30
    assert seen == sorted(seen) and seen[-1] == 29


def test_a_live_source_faster_than_the_engine_drops_the_oldest_and_counts_them(frames):
    engine = FakeEngine(delay=0.03)  # about 30 batches a second, the camera gives 200 frames a second
    preprocess = _pre()
    streamer = StreamScheduler(engine, preprocess, StreamConfig(batch_size=2, queue_size=4, max_wait_ms=1))
    runner = Runner(streamer)
    camera = SimulatedCamera(frames, fps=200)
    results = [r for batch in runner.run({"cam": (camera, AlignedFaces(preprocess))}) for r in batch]
    dropped = runner.dropped["cam"]
    assert dropped > 0 and len(results) + dropped + camera.missed == len(frames)
    index = [r.index for r in results]
    assert index == sorted(set(index)) and index[-1] == len(frames) - 1  # in order, each names its own frame
    stamps = [r.timestamp for r in results]
    assert stamps == sorted(stamps)
    assert all(r.success and r.probs is not None for r in results)


def test_a_file_source_never_drops_however_slow_the_engine(frames):
    engine = FakeEngine(delay=0.01)
    streamer = StreamScheduler(engine, _pre(), StreamConfig(batch_size=2, queue_size=2, max_wait_ms=1))
    runner = Runner(streamer)
    results = [
        r for batch in runner.run({"file": (ArraySource(frames[:20], fps=25), AlignedFaces(_pre()))}) for r in batch
    ]
    assert runner.dropped == {"file": 0} and [r.index for r in results] == list(range(20))


def test_the_detector_reports_the_frames_a_camera_dropped(bundle, frames, tmp_path):
    detector = Detector(bundle, batch_size=2, queue_size=4)
    detector.engine = SlowEngine(detector.engine, 0.03)
    table = detector.detect(SimulatedCamera(frames, fps=150), csv=tmp_path / "cam.csv")
    summary = detector.summary
    assert summary.dropped > 0 and summary.frames + summary.dropped == len(frames)
    assert f"dropped {summary.dropped}" in summary.text() and summary.to_dict()["dropped"] == summary.dropped
    written = read_results_csv(tmp_path / "cam.csv")
    assert len(written) == len(table) == summary.frames
    numbers = written["frame"].to_numpy()
    assert np.all(np.diff(numbers) >= 1) and np.any(np.diff(numbers) > 1)  # gaps where frames were dropped
    assert np.all(np.diff(table["timestamp"].to_numpy()) > 0)  # arrival times (the CSV rounds them to ms)


def _pre():
    from ks_runtime.core.preprocess import Preprocess

    return Preprocess(size=16)


# --- webcams --------------------------------------------------------------------------------------------------


class FakeCapture:
    """cv2.VideoCapture as a webcam that gives `frames` BGR frames and then fails (unplugged)."""

    frames = 6

    def __init__(self, index):
        self.index, self.read_count, self.opened = index, 0, index == 0

    def isOpened(self):
        return self.opened

    def set(self, prop, value):
        return True

    def get(self, prop):
        return 30.0

    def read(self):
        if self.read_count >= self.frames:
            return False, None
        self.read_count += 1
        time.sleep(0.002)
        return True, np.full((480, 640, 3), self.read_count, np.uint8)

    def release(self):
        self.opened = False


def test_webcam_indices_open_a_camera_source(monkeypatch, tmp_path):
    assert is_camera_spec(0) and is_camera_spec("1") and not is_camera_spec("video.mp4") and not is_camera_spec(True)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "0").mkdir()
    assert not is_camera_spec("0")  # a folder named 0 is a folder
    monkeypatch.setattr("ks_runtime.io.sources.cv2.VideoCapture", FakeCapture)
    camera = open_source(1 - 1)
    assert isinstance(camera, CameraSource) and camera.live and camera.fps == 30.0
    items = []
    with pytest.raises(SourceError, match="webcam 0: frame 6 could not be read"):
        for item in camera:
            items.append(item)
    assert [i.index for i in items] == list(range(6)) and items[0].timestamp == 0.0
    assert items[3].image[0, 0].tolist() == [4, 4, 4] and np.all(np.diff([i.timestamp for i in items]) > 0)
    with pytest.raises(SourceError, match="cannot open webcam 3"):
        CameraSource(3)
    assert len(list(CameraSource(0, max_frames=2))) == 2


def test_no_camera_here_is_a_clear_error():
    with pytest.raises(SourceError, match="webcam 7"):
        open_source(7)


def test_openface_device_flag_reads_the_webcam(bundle, monkeypatch, tmp_path, capsys):
    """`-device 0` as OpenFace: raw camera frames go through the face detector (`auto`); a frame without a face
    still gets its row; the rows read before the camera went away are written, then exit 1."""
    monkeypatch.setattr("ks_runtime.io.sources.cv2.VideoCapture", FakeCapture)
    code = main([str(bundle), "-device", "0", "-out_dir", str(tmp_path), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1 and "webcam 0: frame 6" in captured.err and "dropped" in captured.out
    assert input_stem("0") == "webcam0"
    table = read_results_csv(tmp_path / "webcam0.csv")
    assert table["frame"].tolist() == [1, 2, 3, 4, 5, 6] and not table["success"].any()
