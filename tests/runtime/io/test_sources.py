"""ks_runtime/io/sources.py and queues.py: each source's frames and timestamps, bad input named by file and frame, and
the back-pressure rule (a file source never drops; a fast live source drops the oldest and counts it)."""

import threading
import time

import cv2
import numpy as np
import pytest

from ks_runtime.faces.base import AlignedFaces
from ks_runtime.inputs import open_source
from ks_runtime.io.queues import FrameQueue, QueueClosed
from ks_runtime.io.sources import ArraySource, ImageFolderSource, Paced, SourceError, VideoSource
from ks_runtime.stream import Runner, StreamConfig, StreamScheduler
from tests.runtime.conftest import FakeEngine, synth_frames


def write_video(path, frames, fps=25.0, fourcc="FFV1"):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, frames.shape[2:0:-1])
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.fixture(scope="module")
def frames():
    return synth_frames(40, size=32)[0]


# --- sources --------------------------------------------------------------------------------------------------
def test_a_lossless_video_reads_back_bit_exact_with_container_timestamps(tmp_path, frames):
    source = open_source(write_video(tmp_path / "v.mkv", frames))
    assert isinstance(source, VideoSource) and source.length == 40 and source.fps == 25 and not source.live
    items = list(source)
    assert [i.index for i in items] == list(range(40))
    assert all(np.array_equal(i.image, f) for i, f in zip(items, frames, strict=True))
    assert np.allclose([i.timestamp for i in items], np.arange(40) / 25)


def test_a_truncated_video_yields_what_it_can_then_warns_with_the_counts(tmp_path, frames):
    path = write_video(tmp_path / "v.avi", frames)
    data = path.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    source = VideoSource(cut)
    got = list(source)
    assert 0 < len(got) < 40
    assert all(np.array_equal(i.image, f) for i, f in zip(got, frames, strict=False))
    [warning] = source.warnings
    assert str(cut) in warning and f"promises 40 frames, {len(got)} decoded: frame {len(got)} cannot" in warning


def test_a_header_that_promises_more_frames_than_the_file_holds_is_a_warning(tmp_path, frames):
    source = VideoSource(write_video(tmp_path / "v.mkv", frames))
    source.length = 60  # what a container with a wrong frame count says
    assert len(list(source)) == 40
    assert source.warnings == (
        f"{source.path}: the container promises 60 frames, 40 decoded: frame 40 cannot be decoded (the video is "
        "truncated or corrupt); the run ends there, with every frame before it",
    )
    source.length = 40
    assert len(list(source)) == 40 and source.warnings == ()  # a new pass forgets the last one's warning


def test_a_video_with_no_decodable_frame_is_an_error_naming_the_file(tmp_path, frames):
    data = write_video(tmp_path / "v.mkv", frames).read_bytes()
    cut = tmp_path / "header.mkv"
    for size in range(64, len(data), 64):  # the shortest prefix OpenCV opens: a header without a whole frame
        cut.write_bytes(data[:size])
        capture = cv2.VideoCapture(str(cut))
        opened = capture.isOpened()
        capture.release()
        if opened:
            break
    with pytest.raises(SourceError, match=f"{cut}: no frame of the 40 its container lists can be decoded"):
        list(VideoSource(cut))


def test_a_video_whose_count_is_only_an_estimate_is_not_even_a_warning(tmp_path, frames, monkeypatch):
    path = write_video(tmp_path / "v.mkv", frames)
    source = VideoSource(path)
    source.length = 41  # a container estimate one frame over what it holds
    assert len(list(source)) == 40 and source.warnings == ()


def test_an_image_folder_is_read_in_natural_order_with_gray_and_16_bit_frames(tmp_path, frames):
    for i, frame in enumerate(frames[:12]):
        bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        if i == 3:
            bgr = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        if i == 5:
            bgr = bgr.astype(np.uint16) * 257
        cv2.imwrite(str(tmp_path / f"frame{i}.png"), bgr)
    source = open_source(tmp_path, fps=10, sequence=True)  # a video's frames only when asked
    assert isinstance(source, ImageFolderSource) and source.length == 12 and not source.independent
    pictures = open_source(tmp_path)
    assert pictures.independent and pictures.files == source.files and {i.timestamp for i in pictures} == {0.0}
    items = list(source)
    assert np.allclose([i.timestamp for i in items], np.arange(12) / 10)
    assert np.array_equal(items[10].image, frames[10])  # frame10 after frame9, not after frame1
    assert items[3].image.shape == (32, 32, 3) and np.ptp(items[3].image, axis=2).max() == 0  # gray replicated
    assert np.array_equal(items[5].image, frames[5])  # 16-bit brought back to the same 8-bit pixels


def test_an_unreadable_image_names_its_file_and_frame(tmp_path, frames):
    for i in range(4):
        cv2.imwrite(str(tmp_path / f"{i:03d}.png"), frames[i])
    (tmp_path / "002.png").write_bytes(b"not a png")
    got = []
    with pytest.raises(SourceError, match=r"002\.png: frame 2"):
        for item in ImageFolderSource(tmp_path):
            got.append(item)
    assert len(got) == 2


def test_array_sources_convert_colour_and_refuse_float_frames(frames):
    bgr = [cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in frames[:3]]
    items = list(ArraySource(bgr, colour="BGR", fps=5))
    assert np.array_equal(items[1].image, frames[1]) and items[2].timestamp == pytest.approx(0.4)
    stamped = list(ArraySource([(frames[0], 7.5)]))
    assert stamped[0].timestamp == 7.5
    with pytest.raises(SourceError, match="frame 1.*dtype float32"):
        list(ArraySource([frames[0], frames[1].astype(np.float32)], name="cam"))


def test_paced_replays_at_the_frame_rate(frames):
    started = time.perf_counter()
    items = list(Paced(ArraySource(frames[:6], fps=100)))
    assert len(items) == 6 and time.perf_counter() - started >= 0.05


# --- back-pressure ------------------------------------------------------------------------------------------
def test_a_file_queue_never_drops_a_full_queue_makes_the_producer_wait():
    queue = FrameQueue(2, live=False)
    done = threading.Event()

    def produce():
        for i in range(6):
            queue.put(i)
        queue.close()
        done.set()

    threading.Thread(target=produce, daemon=True).start()
    time.sleep(0.05)
    assert not done.is_set() and len(queue) == 2  # blocked on the full queue
    got = []
    while True:
        try:
            got.append(queue.get(timeout=1.0))
        except QueueClosed:
            break
    assert got == list(range(6)) and queue.dropped == 0


def test_a_live_queue_drops_the_oldest_and_counts_them():
    queue = FrameQueue(3, live=True)
    for i in range(10):
        assert queue.put(i)
    queue.close()
    assert queue.dropped == 7
    assert [queue.get(0) for _ in range(3)] == [7, 8, 9]
    with pytest.raises(QueueClosed):
        queue.get(0)
    with pytest.raises(TimeoutError):
        FrameQueue(1, live=False).get(timeout=0.01)


def run_source(source, delay):
    from ks_runtime.core.preprocess import Preprocess

    engine, pre = FakeEngine(delay=delay), Preprocess(size=16)
    runner = Runner(StreamScheduler(engine, pre, StreamConfig("last", batch_size=2, queue_size=4)))
    results = [r for batch in runner.run({"cam": (source, AlignedFaces(pre))}) for r in batch]
    return results, runner.dropped["cam"]


def test_a_fast_live_source_drops_oldest_frames_and_a_file_source_none():
    frames = synth_frames(60, size=16)[0]
    results, dropped = run_source(ArraySource(frames, fps=25, live=True), delay=0.01)
    assert dropped > 0 and len(results) + dropped == 60
    indices = [r.index for r in results]
    assert indices == sorted(indices) and indices[-1] == 59  # the newest frames survive
    results, dropped = run_source(ArraySource(frames, fps=25), delay=0.01)
    assert dropped == 0 and [r.index for r in results] == list(range(60))
