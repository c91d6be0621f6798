"""ks-serve's WebSocket streams: results equal the Detector's on the same frames, streams share encoder batches,
a client faster than the engine loses its oldest frames alone, bad frames and limits are answered and the stream
goes on, and a client that leaves mid-clip leaves nothing behind in the scheduler."""

from __future__ import annotations

import asyncio
import struct
import threading

import numpy as np
import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from ks_runtime.core.preprocess import Preprocess, to_network_input
from ks_runtime.core.results import Face
from ks_runtime.detector import Detector
from ks_runtime.faces.base import FaceStage
from ks_runtime.faces.registry import create_face_stage
from ks_runtime.io.sources import SourceFrame
from ks_runtime.io.table import read_results_csv
from ks_runtime.serve.protocol import PNG_SIGNATURE, Limits
from ks_runtime.serve.service import StreamService
from ks_runtime.serve.session import OUTBOX_SIZE, Session
from ks_runtime.stream import StreamScheduler
from tests.runtime.conftest import FakeEngine
from tests.serve.conftest import png, probs, receive, results, serve, synth_frames, until, wait_for


def stream_clip(ws, frames) -> list[dict]:
    """Send every frame, then stop: every message up to the `stopped` that follows the clip's last result."""
    for frame in frames:
        ws.send_bytes(png(frame))
    ws.send_json({"stop": True})
    return until(ws, "stopped")


def test_stream_results_equal_the_detector_on_the_same_frames(bundle, frames, tmp_path):
    app, service = serve(bundle, policy="center")
    aus = service.detector.au_columns
    with TestClient(app) as client:
        with client.websocket_connect("/ws") as ws:
            hello = receive(ws)
            messages = stream_clip(ws, frames)
        csv = client.get(f"/api/sessions/{hello['session']}/csv", params={"columns": "ks"})
    assert hello["type"] == "hello" and hello["aus"] == list(aus) and hello["policy"] == "center"
    got, stopped = results(messages), messages[-1]
    expected = Detector(bundle, policy="center").detect(frames, csv=tmp_path / "ks.csv")
    assert [r["index"] for r in got] == list(range(len(frames)))  # every frame, in frame order
    np.testing.assert_allclose(probs(got, aus), expected[[f"{au}_p" for au in aus]].to_numpy(), atol=1e-5)
    assert stopped["scored"] == len(frames) and stopped["dropped"] == 0 and stopped["refused"] == 0
    # The session's CSV is ks-run's, row for row (timestamps aside: the server's count from the first arrival).
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines()[0] == (tmp_path / "ks.csv").read_text().splitlines()[0]
    mine, theirs = read_results_csv(__import__("io").StringIO(csv.text)), read_results_csv(tmp_path / "ks.csv")
    same = [c for c in theirs.columns if c != "timestamp" and not c.endswith("_p")]
    assert mine[same].equals(theirs[same])
    np.testing.assert_allclose(mine.filter(like="_p"), theirs.filter(like="_p"), atol=2e-6)


def test_two_streams_are_scored_apart_but_share_encoder_batches(bundle):
    first, second = synth_frames(10, seed=3)[0], synth_frames(10, seed=4)[0]
    app, service = serve(bundle, delay=0.0, policy="last", max_wait_ms=200.0)
    aus = service.detector.au_columns
    with TestClient(app) as client:
        with client.websocket_connect("/ws") as a, client.websocket_connect("/ws") as b:
            receive(a), receive(b)
            for frame_a, frame_b in zip(first, second, strict=True):
                a.send_bytes(png(frame_a))
                b.send_bytes(png(frame_b))
            a.send_json({"stop": True})
            b.send_json({"stop": True})
            got_a, got_b = results(until(a, "stopped")), results(until(b, "stopped"))
    reference = Detector(bundle, policy="last")
    for got, frames in ((got_a, first), (got_b, second)):
        assert [r["index"] for r in got] == list(range(len(frames)))
        expected = reference.detect(frames)[[f"{au}_p" for au in aus]].to_numpy()
        np.testing.assert_allclose(probs(got, aus), expected, atol=1e-5)
    assert service.scheduler.encoder_batches < len(first) + len(second)
    # Which stream each encoded frame came from, by its network input: some batch held frames of both.
    preprocess = service.detector.manifest.preprocess
    inputs_a, inputs_b = to_network_input(first, preprocess), to_network_input(second, preprocess)

    def owner(row):
        near = {
            name: np.abs(inputs - row).max(axis=(1, 2, 3)).min() < 1e-4
            for name, inputs in (("a", inputs_a), ("b", inputs_b))
        }
        assert sum(near.values()) == 1
        return next(name for name, match in near.items() if match)

    owners = [{owner(row) for row in batch} for batch in service.detector.engine.inputs]
    assert {"a", "b"} in owners, owners


def test_a_client_faster_than_the_engine_loses_its_oldest_frames_and_no_one_else_does(bundle):
    burst, steady = synth_frames(12, seed=3)[0], synth_frames(4, seed=4)[0]
    app, service = serve(bundle, delay=0.2, policy="last", batch_size=2, max_wait_ms=0.0, queue_size=2)
    aus = service.detector.au_columns
    with TestClient(app) as client:
        with client.websocket_connect("/ws") as fast, client.websocket_connect("/ws") as slow:
            receive(fast), receive(slow)
            for frame in burst:  # all at once: the engine takes 0.2 s a batch
                fast.send_bytes(png(frame))
            fast.send_json({"stop": True})
            steady_results = []
            for frame in steady:  # one at a time, each after the last one's result
                slow.send_bytes(png(frame))
                steady_results += results(until(slow, "result"))
            slow.send_json({"stop": True})
            slow_stopped = until(slow, "stopped")[-1]
            fast_messages = until(fast, "stopped")
    kept = [r["index"] for r in results(fast_messages)]
    lost = sorted(set(range(len(burst))) - set(kept))
    assert kept == sorted(kept) and lost, kept
    assert kept[-2:] == [10, 11]  # the newest frames survive: the oldest went
    assert fast_messages[-1]["dropped"] == len(lost)
    assert slow_stopped["dropped"] == 0 and [r["index"] for r in steady_results] == [0, 1, 2, 3]
    expected = Detector(bundle, policy="last").detect(steady)[[f"{au}_p" for au in aus]].to_numpy()
    np.testing.assert_allclose(probs(steady_results, aus), expected, atol=1e-5)


def test_a_bad_frame_is_answered_and_the_stream_goes_on(bundle, frames):
    app, service = serve(bundle, policy="last")
    broken_png = PNG_SIGNATURE + b"\x00\x00\x00\rIHDR" + struct.pack(">II", 32, 32) + b"\x08\x02 not a picture"
    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        receive(ws)
        ws.send_bytes(png(frames[0]))
        ws.send_bytes(broken_png)
        ws.send_bytes(b"hello, I am no image")
        ws.send_text("not json")
        ws.send_bytes(png(frames[1]))
        ws.send_json({"stop": True})
        messages = until(ws, "stopped")
    errors = {m.get("index", "text"): m for m in messages if m["type"] == "error"}
    assert errors[1]["reason"] == "undecodable" and "frame 1" in errors[1]["message"]
    assert errors[2]["reason"] == "format" and "not a JPEG, PNG or WebP" in errors[2]["message"]
    assert errors["text"]["reason"] == "message" and "JSON" in errors["text"]["message"]
    got = results(messages)
    assert [r["index"] for r in got] == [0, 3] and all(r["success"] for r in got)


def big_noise(side: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)


def test_limits_refuse_with_the_limit_and_its_value(bundle, frames):
    limits = Limits(max_streams=1, max_frame_bytes=4096, max_side=64, max_fps=3)
    app, service = serve(bundle, limits=limits, policy="last")
    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        receive(ws)
        ws.send_bytes(png(big_noise(60)))  # 60 px of noise: over 4096 bytes
        ws.send_bytes(png(np.zeros((100, 100, 3), np.uint8)))  # a few hundred bytes, but 100 px
        for frame in frames[:4]:  # three a second at most
            ws.send_bytes(png(frame))
        ws.send_json({"start": {"fps": 30}})
        with client.websocket_connect("/ws") as second:  # one stream at most
            refusal = receive(second)
            with pytest.raises(WebSocketDisconnect) as closed:
                receive(second)
        ws.send_json({"stop": True})
        messages = until(ws, "stopped")
    errors = [m for m in messages if m["type"] == "error"]
    assert [(e["limit"], e["value"], e.get("index")) for e in errors] == [
        ("max_frame_bytes", 4096, 0),
        ("max_side", 64, 1),
        ("max_fps", 3, 5),
        ("max_fps", 3, None),
    ]
    assert "max_frame_bytes=4096" in errors[0]["message"] and "100x100" in errors[1]["message"]
    assert [r["index"] for r in results(messages)] == [2, 3, 4]
    assert refusal["limit"] == "max_streams" and refusal["value"] == 1 and closed.value.code == 1013
    assert messages[-1]["refused"] == 4


def test_a_client_that_leaves_mid_clip_leaves_nothing_in_the_scheduler(bundle, frames):
    app, service = serve(bundle, policy="center")  # center: frames wait for the next one when the client goes
    with TestClient(app) as client:
        with client.websocket_connect("/ws") as ws:
            session = receive(ws)["session"]
            for frame in frames[:5]:
                ws.send_bytes(png(frame))
            wait_for(lambda: service.session(session).pushed == 5)
            assert session in service.scheduler._open  # mid-clip: the last frame waits for its look-ahead
        wait_for(lambda: session not in service._active)
        scheduler = service.scheduler
        assert session not in scheduler._open and session not in scheduler._outbox
        assert session not in scheduler._streams_started and session not in scheduler._waiting_by_source
        assert scheduler.pending == 0 and service.streams == 0
        assert service.session(session).delivered == service.session(session).pushed == 5
        assert service.session(session).stage is None  # kept for its CSV, without its face stage
        csv = client.get(f"/api/sessions/{session}/csv")  # kept after the client left: every frame it sent
        assert csv.status_code == 200 and len(csv.text.splitlines()) == 1 + 5
        assert "ks_serve_active_streams 0.0" in client.get("/metrics").text


def test_the_scheduler_forgets_a_source_only_once_it_is_done():
    scheduler = StreamScheduler(FakeEngine(), Preprocess(size=16))
    crop = np.zeros((16, 16, 3), np.uint8)
    scheduler.push("client", SourceFrame(crop, 0.0, 0), Face(crop, 1.0))
    with pytest.raises(RuntimeError, match="client: still has open streams"):
        scheduler.forget("client")
    scheduler.end("client")
    assert len(scheduler.flush()) == 1
    scheduler.forget("client")
    assert "client" not in scheduler._streams_started and "client" not in scheduler._waiting_by_source


def test_a_client_that_does_not_read_loses_its_oldest_messages_and_holds_no_one_up():
    loop = asyncio.new_event_loop()
    try:
        session = Session(create_face_stage("aligned", Preprocess(size=16)), 2, threading.Event(), loop, Limits())
        for number in range(OUTBOX_SIZE + 3):  # what the worker posts never waits for the client
            session.offer({"type": "result", "index": number})
        assert session.outbox.qsize() == OUTBOX_SIZE and session.unsent == 3
        assert session.outbox.get_nowait()["index"] == 3  # the oldest went
    finally:
        loop.close()
    session.post([{"type": "result", "index": -1}])  # onto a closed loop: dropped, no error


@pytest.fixture()
def by_hand(bundle):
    """A service whose worker the test plays, step by step (not started), and a client's session on an event loop
    that the test runs when it reads the session's messages."""
    service = StreamService(Detector(bundle, policy="last", queue_size=64))
    loop = asyncio.new_event_loop()
    session = service.open(loop)
    service._apply_commands()
    yield service, session, loop
    loop.close()


def work(service: StreamService) -> None:
    """The worker's round, until every frame taken is scored and delivered."""
    service._take()
    for _ in range(100):
        service._deliver(service._step())
        if not service.scheduler.pending:
            return
    raise AssertionError("the scheduler never emptied")


def sent(session: Session, loop) -> list[tuple]:
    """What the worker posted the client so far: (type, index) per message."""
    loop.run_until_complete(asyncio.sleep(0))  # the posts are callbacks on the client's loop
    messages = []
    while not session.outbox.empty():
        message = session.outbox.get_nowait()
        messages.append((message["type"], message.get("index")))
    return messages


def test_every_stop_ends_its_clip_even_when_the_worker_takes_them_late(by_hand, frames):
    """Two stops before the worker looks: each ends its clip before the frame it came before, and each gets its
    `stopped` after that clip's last result (one stop once replaced the other)."""
    service, session, loop = by_hand
    service.submit(session, png(frames[0]))
    service.submit(session, png(frames[1]))
    service.command(session, '{"stop": true}')  # before frame 2
    service.submit(session, png(frames[2]))
    service.command(session, '{"stop": true}')  # before frame 3
    assert list(session.stops) == [2, 3]
    work(service)
    assert not session.stops and not session.end_targets
    assert sent(session, loop) == [("result", 0), ("result", 1), ("stopped", None), ("result", 2), ("stopped", None)]
    assert service.scheduler._streams_started[session.key] == 2  # two clips


def test_a_stop_the_loop_asks_for_while_the_worker_holds_the_lock_waits_for_it(by_hand):
    """The handoff's mechanism: the loop appends a stop under the session's lock, and the worker takes stops under
    it, so neither sees the other half done. (The lost update itself, the worker writing back over a stop the
    loop set between its read and its write, needs a thread switch between two bytecodes: no test can force it.)"""
    service, session, _ = by_hand
    with session.lock:  # as the worker does in _due_stops
        asking = threading.Thread(target=service.command, args=(session, '{"stop": true}'))
        asking.start()
        asking.join(0.2)
        assert asking.is_alive() and not session.stops
    asking.join(5)
    assert list(session.stops) == [0]


class TwoFacesOneRefused(FaceStage):
    """Two faces a frame, the second with a crop the scheduler refuses (once the first is queued)."""

    name = "two-faces-one-refused"

    def faces(self, image, index):
        side = self.preprocess.size
        good = Face(np.zeros((side, side, 3), np.uint8), 1.0, face_id=0)
        bad = Face(np.zeros((side + 1, side + 1, 3), np.uint8), 1.0, face_id=1)
        return [good, bad]


def test_a_face_refused_after_another_was_queued_still_counts_the_queued_one(by_hand, frames):
    service, session, loop = by_hand
    session.stage, session.tap = TwoFacesOneRefused(service.detector.manifest.preprocess), None
    service.submit(session, png(frames[0]))
    service.command(session, '{"stop": true}')
    work(service)
    assert session.pushed == session.delivered == 1
    # the frame's error, then the face that was queued, and only then the clip's end
    assert sent(session, loop) == [("error", 0), ("result", 0), ("stopped", None)]
