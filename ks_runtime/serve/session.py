"""One client's stream: its bounded frame queue, its face stage, its counters and rows, and the messages waiting for
it.

Three threads touch a session, each its own part: the event loop (frames in, refusals, `received`), the worker
(results: rows and counters, under `lock`), and the loop again to send what the worker posted. The worker never
waits on a client: it posts onto the client's event loop, and a client that reads too slowly loses its oldest
messages (counted in `unsent`; its rows stay whole for the CSV).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ks_runtime.core.results import FrameResult
from ks_runtime.faces.base import FaceStage
from ks_runtime.faces.tap import FrameTap
from ks_runtime.io.head_pose import LANDMARKS
from ks_runtime.io.queues import FrameQueue
from ks_runtime.serve.protocol import FrameRate, Limits, Refusal, finite

log = logging.getLogger(__name__)

OUTBOX_SIZE = 4096  # messages waiting for a slow client before its oldest are dropped
MAX_ROWS = 30 * 3600  # rows kept for the CSV: an hour at 30 fps; past it the oldest go
RECENT = 256  # results the live fps and latency percentiles are taken over
FPS_WINDOW_S = 2.0


@dataclass(frozen=True)
class Incoming:
    """A frame as it arrived: its encoded bytes, its number by arrival and its clock time."""

    data: bytes
    index: int
    arrival: float


class Session:
    """A client's stream, keyed in the scheduler by its id. Frames wait in a FrameQueue of `queue_size` that drops
    its oldest frame when the engine falls behind (a live camera's rule); `stage` is the client's own face stage."""

    def __init__(
        self,
        stage: FaceStage,
        queue_size: int,
        wake: threading.Event,
        loop: asyncio.AbstractEventLoop,
        limits: Limits,
        max_rows: int = MAX_ROWS,
    ) -> None:
        self.id = secrets.token_hex(8)
        self.landmarks = stage.landmark_count == LANDMARKS
        # A stage with landmarks keeps each frame until its results, for the landmark and pose columns.
        self.tap = FrameTap(stage) if self.landmarks else None
        self.stage: FaceStage | None = self.tap or stage  # None once the client has gone and been scored
        self.queue = FrameQueue(queue_size, live=True, wake=wake)
        self.loop = loop
        self.rate = FrameRate(limits.max_fps)
        self.outbox: asyncio.Queue[dict] = asyncio.Queue(OUTBOX_SIZE)
        # the event loop's
        self.received = self.refused = self.unsent = 0
        self.started: float | None = None  # the first frame's arrival: timestamps count from it
        self.closed = False
        # shared by the loop and the worker, under `lock`
        self.lock = threading.Lock()
        # Stops asked for, each before frame `received` at the time: the loop appends, the worker pops. One
        # `stop_at` the loop set and the worker read, compared and cleared lost a stop set in between, and a
        # second stop before the worker looked overwrote the first.
        self.stops: deque[int] = deque()
        # the worker's (read by the loop under `lock`)
        self.rows: deque[FrameResult] = deque(maxlen=max_rows)
        self.recent: deque[tuple[float, float]] = deque(maxlen=RECENT)  # (final, latency) of recent results
        self.scored = self.errors = 0
        # the worker's alone
        self.pushed = self.delivered = 0  # results the scheduler owes this stream, and those it gave
        self.end_targets: deque[int] = deque()  # `pushed` at each end: once `delivered` reaches one, its clip is scored
        self.streaming = False  # frames came since the last end: the scheduler may wait for the next one

    @property
    def key(self) -> str:
        """The stream's source key in the scheduler."""
        return self.id

    # --- the event loop ---------------------------------------------------------------------------------
    def offer(self, message: dict) -> None:
        """Queue a message for the client; when too many wait, the oldest goes."""
        if self.outbox.full():
            self.outbox.get_nowait()
            self.unsent += 1
        self.outbox.put_nowait(message)

    def refuse(self, refusal: Refusal, index: int | None = None) -> None:
        self.refused += 1
        self.offer(refusal.to_message(index))

    def stats(self, now: float) -> dict:
        """The live figures: counts so far, fps and latency percentiles over the recent results."""
        with self.lock:
            recent = [item for item in self.recent if item[0] >= now - FPS_WINDOW_S]
            scored, errors = self.scored, self.errors
        finals = np.array([final for final, _ in recent])
        latency = np.array([lat for _, lat in recent]) * 1e3
        span = finals.max() - finals.min() if len(finals) > 1 else 0.0
        return {
            "type": "stats",
            "received": self.received,
            "scored": scored,
            "dropped": self.queue.dropped,
            "refused": self.refused,
            "errors": errors,
            "queued": len(self.queue),
            "unsent": self.unsent,
            "fps": finite((len(finals) - 1) / span) if span > 0 else None,
            "latency_ms": {f"p{p}": finite(np.percentile(latency, p)) if len(latency) else None for p in (50, 99)},
        }

    # --- the worker -------------------------------------------------------------------------------------
    def post(self, messages: Sequence[dict]) -> None:
        """Hand messages to the client's event loop (from the worker thread); a closed loop takes none."""
        if self.closed or not messages:
            return
        try:
            self.loop.call_soon_threadsafe(self._offer_all, messages)
        except RuntimeError:  # the client's event loop has ended: nobody is listening
            log.debug("session %s: its event loop is closed; %d messages dropped", self.id, len(messages))

    def _offer_all(self, messages: Sequence[dict]) -> None:
        for message in messages:
            self.offer(message)

    def record(self, results: Sequence[FrameResult]) -> None:
        """Keep a batch of this stream's final results (rows for the CSV, recent figures)."""
        with self.lock:
            self.rows.extend(results)
            self.scored += len(results)
            self.recent.extend((r.final, r.latency) for r in results)
        self.delivered += len(results)

    def release_stage(self) -> None:
        """Let the face stage go (a tracker holds megabytes of detector buffers): the client has gone and every
        frame it sent is scored."""
        self.stage = self.tap = None

    def snapshot(self) -> list[FrameResult]:
        """The rows so far, in frame order."""
        with self.lock:
            return list(self.rows)
