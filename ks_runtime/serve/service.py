"""Every client's stream through ONE StreamScheduler, on ONE worker thread, so frames of different clients share
encoder batches.

The event loop hands frames to a session's bounded queue and returns (a full queue drops its oldest frame: the
engine fell behind). The worker takes frames from the queues in turn, one per stream, up to a batch; decodes each
and runs the stream's own face stage; pushes the faces into the scheduler (the session's id is the stream's
source key); steps the scheduler (an encoder batch when one is due: full, its oldest frame waited max_wait_ms, or
every streaming client has a frame waiting); and posts each stream its results. A client that stops or leaves
has its stream ended (scheduler.end): its last frames are scored with the edge frame replicated, and once the
scheduler has given every result it owes, the stream is forgotten.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from ks_runtime.core.errors import KSError
from ks_runtime.core.results import FrameResult
from ks_runtime.detector import Detector
from ks_runtime.io.formats import check_csv_format, csv_sink
from ks_runtime.io.head_pose import add_face_geometry
from ks_runtime.io.queues import QueueClosed
from ks_runtime.io.sources import SourceFrame
from ks_runtime.serve.metrics import ServeMetrics
from ks_runtime.serve.protocol import (
    Limits,
    Refusal,
    check_frame,
    decode_frame,
    parse_command,
    rate_refusal,
    result_message,
)
from ks_runtime.serve.serial import shareable
from ks_runtime.serve.session import Incoming, Session
from ks_runtime.stream import StreamScheduler

log = logging.getLogger(__name__)

KEPT_SESSIONS = 16  # closed sessions whose rows stay for a CSV download
IDLE_WAIT_S = 0.5  # the worker's longest sleep with nothing to do (every frame and command wakes it sooner)


class StreamService:
    """The detector's engine behind many live streams: `open` a session per client, `submit` its frames,
    `command` its text messages, `close` it when the client leaves. `start` runs the worker, `shutdown` stops it.
    `record`: a folder where each decoded frame is saved as PNG, a sub-folder per session."""

    def __init__(
        self,
        detector: Detector,
        limits: Limits | None = None,
        record: Path | str | None = None,
        metrics: ServeMetrics | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        # The POSTed videos' threads call this engine too (video.py, through `detector`): one not known to take
        # concurrent calls takes them in turn.
        detector.engine = shareable(detector.engine)
        self.detector, self.limits = detector, limits or Limits()
        self.record = Path(record) if record is not None else None
        self.metrics, self.clock = metrics or ServeMetrics(), clock
        self.scheduler = StreamScheduler(detector.engine, detector.manifest.preprocess, detector.config, clock)
        self.failure: str | None = None  # the worker's fatal error, for /healthz
        self._wake = threading.Event()
        self._commands: deque[tuple[str, Session]] = deque()
        self._lock = threading.Lock()  # guards _open and _kept (event loops of several test clients)
        self._open: dict[str, Session] = {}
        self._kept: OrderedDict[str, Session] = OrderedDict()
        self._active: dict[str, Session] = {}  # the worker's: streams with frames or results in flight
        self._turn = 0
        self._running = False
        self._thread: threading.Thread | None = None

    # --- life -------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._running = True
            self._thread = threading.Thread(target=self._run, name="ks-serve-worker", daemon=True)
            self._thread.start()

    def shutdown(self) -> None:
        self._running = False
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
            self._thread = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.failure is None

    @property
    def streams(self) -> int:
        with self._lock:
            return len(self._open)

    # --- the event loop's calls ---------------------------------------------------------------------------
    def open(self, loop: asyncio.AbstractEventLoop) -> Session:
        """A new session for a client on `loop`; refused past max_streams, and once the worker has failed (nothing
        would score its frames)."""
        stage = self.detector.face_stage()
        with self._lock:
            # Read under the lock the worker takes after setting `failure` (_fail): a session is either refused
            # here or among those the worker tells of its failure.
            if self.failure is not None:
                self.metrics.refused.labels(reason="server").inc()
                raise Refusal(f"the server failed and scores no stream until it restarts: {self.failure}", "server")
            if len(self._open) >= self.limits.max_streams:
                self.metrics.refused.labels(reason="max_streams").inc()
                raise Refusal(
                    f"too many streams: max_streams={self.limits.max_streams} are open; try again later",
                    "max_streams",
                    self.limits.max_streams,
                )
            session = Session(stage, self.detector.config.queue_size, self._wake, loop, self.limits)
            self._open[session.id] = session
        if self.record is not None:  # once here, not on the worker for every frame
            (self.record / session.id).mkdir(parents=True, exist_ok=True)
        self.metrics.streams.inc()
        self._command("open", session)
        return session

    def submit(self, session: Session, data: bytes) -> None:
        """A frame from the client: numbered, checked against the limits, queued (a full queue drops its oldest)."""
        now = self.clock()
        index = session.received
        session.received += 1
        self.metrics.frames.inc()
        try:
            check_frame(data, index, self.limits)
            if not session.rate.admit(now):
                raise rate_refusal(index, self.limits)
        except Refusal as refusal:
            self.metrics.refused.labels(reason=refusal.reason).inc()
            session.refuse(refusal, index)
            return
        session.started = now if session.started is None else session.started
        dropped = session.queue.dropped
        session.queue.put(Incoming(data, index, now))
        if session.queue.dropped > dropped:
            self.metrics.dropped.inc(session.queue.dropped - dropped)

    def command(self, session: Session, text: str) -> None:
        """A text message from the client: `start` (checks what it declares) or `stop` (ends the clip: its last
        frames are scored and a `stopped` message follows them)."""
        try:
            name = parse_command(text, self.limits)
        except Refusal as refusal:
            self.metrics.refused.labels(reason=refusal.reason).inc()
            session.refuse(refusal)
            return
        if name == "stop":
            with session.lock:  # the worker takes stops under the same lock (_due_stops)
                session.stops.append(session.received)
            self._wake.set()

    def close(self, session: Session) -> None:
        """The client has gone: its queued frames are dropped, its stream ended and, once scored, forgotten."""
        with self._lock:
            if self._open.pop(session.id, None) is None:
                return
            self._kept[session.id] = session
            while len(self._kept) > KEPT_SESSIONS:
                self._kept.popitem(last=False)
        session.closed = True
        session.queue.stop()
        self.metrics.streams.dec()
        self._command("close", session)

    def session(self, session_id: str) -> Session | None:
        """An open session, or one of the last KEPT_SESSIONS closed."""
        with self._lock:
            return self._open.get(session_id) or self._kept.get(session_id)

    def csv(self, session: Session, columns: str = "openface") -> bytes:
        """The session's rows as `ks-run` writes them (`columns`: openface or ks), written by the same sink."""
        check_csv_format(columns)
        manifest = self.detector.manifest
        with tempfile.TemporaryDirectory(prefix="ks-serve-") as folder:
            path = Path(folder) / f"{session.id}.csv"
            sink = csv_sink(columns, path, manifest.au_columns, manifest.thresholds, session.landmarks)
            try:
                sink.write(session.snapshot())
            finally:
                sink.close()
            return path.read_bytes()

    def _command(self, verb: str, session: Session) -> None:
        self._commands.append((verb, session))
        self._wake.set()

    # --- the worker -----------------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while self._running:
                self._wake.clear()  # before looking: a frame that comes meanwhile sets it again
                self._apply_commands()
                got = self._take()
                self._deliver(self._step())
                self._retire()
                if not got:
                    self._idle()
        except Exception as error:  # an engine that fails: every client is told, /healthz says so
            log.exception("ks-serve: the worker stopped")
            self._fail(error)

    def _fail(self, error: Exception) -> None:
        """Tell every open session (those whose `open` the worker has not applied yet too) that nothing will score
        their frames; `open` refuses new ones from now on."""
        self.failure = f"{type(error).__name__}: {error}"
        with self._lock:
            sessions = list(self._open.values())
        for session in sessions:
            session.post([{"type": "error", "reason": "server", "message": f"the server failed: {self.failure}"}])

    def _apply_commands(self) -> None:
        while self._commands:
            verb, session = self._commands.popleft()
            if verb == "open":
                self._active[session.key] = session
            elif verb == "close" and session.key in self._active:
                self._end(session)

    def _take(self) -> int:
        """Frames from the streams' queues, one per stream in turn, up to an encoder batch, into the scheduler."""
        got, limit = 0, self.scheduler.config.batch_size
        order = list(self._active.values())
        start = self._turn % len(order) if order else 0
        waiting = order[start:] + order[:start]  # a different stream first each time: none starves at the limit
        self._turn = start + 1
        while waiting and got < limit:
            for session in list(waiting):
                if got >= limit:
                    break
                item = self._next(session)
                if item is None:
                    waiting.remove(session)
                    continue
                self._admit(session, item)
                got += 1
        return got

    def _next(self, session: Session) -> Incoming | None:
        """The stream's next frame (None: none waits); each stop asked for before it ends a clip first."""
        try:
            item = session.queue.get(timeout=0)
        except (TimeoutError, QueueClosed):
            item = None
        for _ in range(self._due_stops(session, item)):
            self._end(session)
        return item

    @staticmethod
    def _due_stops(session: Session, item: Incoming | None) -> int:
        """Take the stops asked for before `item` (every stop when no frame waits) from the session's list, under
        its lock: the event loop appends to the list meanwhile, and the worker only ever removes what it counted."""
        due = 0
        with session.lock:
            while session.stops and (item is None or item.index >= session.stops[0]):
                session.stops.popleft()
                due += 1
        return due

    def _admit(self, session: Session, item: Incoming) -> None:
        """Decode a frame, find its faces with the stream's own stage and push them; a bad frame is the client's
        error message, and the stream goes on."""
        pending = self.scheduler.pending
        try:
            image = decode_frame(item.data, item.index, self.limits)
            if self.record is not None:
                self._save(session, image, item.index)
            frame = SourceFrame(image, item.arrival - (session.started or item.arrival), item.index)
            faces = session.stage.faces(image, item.index)
            records = self.scheduler.push_faces(session.key, frame, faces, item.arrival)
        except Exception as error:  # one client's odd frame must not stop every client's stream
            # A face refused after others of the frame were queued: those are scored and owed to the client.
            # (Only faces that reach the encoder can precede a refusal, and no step runs here, so `pending` grew by
            # exactly them.)
            self._count_pushed(session, self.scheduler.pending - pending)
            self._frame_error(session, item.index, error)
            return
        self._count_pushed(session, len(records))

    @staticmethod
    def _count_pushed(session: Session, results: int) -> None:
        if results:
            session.pushed += results
            session.streaming = True

    def _frame_error(self, session: Session, index: int, error: Exception) -> None:
        if isinstance(error, Refusal):
            message = error.to_message(index)
        else:
            if not isinstance(error, KSError | cv2.error):
                log.exception("session %s: frame %d", session.id, index)
            message = {"type": "error", "reason": "frame", "index": index, "message": f"frame {index}: {error}"}
        self.metrics.refused.labels(reason=message["reason"]).inc()
        with session.lock:
            session.errors += 1
        session.post([message])

    def _save(self, session: Session, image: np.ndarray, index: int) -> None:
        path = self.record / session.id / f"frame_{index:06d}.png"
        if not cv2.imwrite(str(path), image[..., ::-1]):
            log.warning("%s: cannot write the recorded frame", path)

    def _end(self, session: Session) -> None:
        """End the stream's clip: its last frames are scored with the edge frame replicated."""
        self.scheduler.end(session.key)
        session.streaming = False
        session.end_targets.append(session.pushed)
        session.post(self._with_stops(session, []))

    def _with_stops(self, session: Session, messages: list[dict]) -> list[dict]:
        """The messages of the results just delivered, with a `stopped` after each ended clip's last result."""
        before = session.delivered - len(messages)  # results delivered before these
        out, taken = [], 0
        while session.end_targets and session.end_targets[0] <= session.delivered:
            cut = max(taken, session.end_targets.popleft() - before)
            out += messages[taken:cut]
            out.append({**session.stats(self.clock()), "type": "stopped"})
            taken = cut
        return out + messages[taken:]

    def _step(self) -> list[FrameResult]:
        """One scheduler step (at most one encoder batch), its batch size measured."""
        pending, batches = self.scheduler.pending, self.scheduler.encoder_batches
        results = self.scheduler.step(feeding=self._feeding())
        if self.scheduler.encoder_batches > batches:
            self.metrics.batch_size.observe(pending - self.scheduler.pending)
        return results

    def _feeding(self) -> set[str]:
        """The streams whose next frame an encoder batch may wait for: those streaming, not stopped or gone."""
        return {session.key for session in self._active.values() if session.streaming}

    def _deliver(self, results: list[FrameResult]) -> None:
        """Each stream its final results: kept for its CSV, posted to its client."""
        by_stream: dict[str, list[FrameResult]] = {}
        for result in results:
            by_stream.setdefault(result.source, []).append(result)
        au_columns = self.detector.manifest.au_columns
        for key, batch in by_stream.items():
            session = self._active[key]
            if session.tap is not None:
                add_face_geometry(batch, session.tap.take_batch(batch))
            session.record(batch)
            self.metrics.results.inc(len(batch))
            for result in batch:
                self.metrics.latency.observe(result.latency)
            session.post(self._with_stops(session, [result_message(r, au_columns) for r in batch]))

    def _retire(self) -> None:
        """Forget the streams of clients that have gone, once the scheduler has given all it owed them."""
        for key, session in list(self._active.items()):
            if session.closed and not session.end_targets and session.delivered >= session.pushed:
                try:
                    self.scheduler.forget(key)
                except RuntimeError:  # its last results are collected at the next step
                    continue
                del self._active[key]
                session.release_stage()  # a kept session serves its CSV: the rows, not a detector's buffers

    def _idle(self) -> None:
        """Sleep until a frame or command comes or the oldest waiting frame's bounded wait runs out."""
        if self.scheduler.due(feeding=self._feeding()):
            return
        deadline = self.scheduler.deadline()
        self._wake.wait(IDLE_WAIT_S if deadline is None else min(IDLE_WAIT_S, max(0.0, deadline - self.clock())))
