"""The bounded queue between a source and the scheduler, and the thread that fills it.

`FrameQueue` applies the back-pressure rule: a file source never loses a frame (the reader waits), a live source
drops the oldest frame and counts it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ks_runtime.io.sources import Source, SourceFrame


class QueueClosed(Exception):
    """Raised by FrameQueue.get once the source has ended and the queue is empty."""


@dataclass
class Arrival:
    """A frame as it entered the runtime: the source's frame and the clock time it arrived."""

    frame: SourceFrame
    arrival: float


class FrameQueue:
    """A bounded FIFO with the back-pressure rule: when full, a file source's put waits; a live source's put drops
    the oldest frame and counts it in `dropped`. `wake` (optional) is set on every put and close, so one
    consumer can wait on several queues."""

    def __init__(self, maxsize: int, live: bool, wake: threading.Event | None = None) -> None:
        if maxsize < 1:
            raise ValueError(f"queue size must be >= 1, got {maxsize}")
        self.maxsize, self.live, self.wake = maxsize, live, wake
        self.dropped = 0
        self.error: BaseException | None = None
        self._items: deque = deque()
        self._closed = False
        self._stopped = False
        self._cond = threading.Condition()

    def put(self, item: Any) -> bool:
        """Add an item; False if the consumer has stopped (the producer should end)."""
        with self._cond:
            while not self.live and len(self._items) >= self.maxsize and not self._stopped:
                self._cond.wait()
            if self._stopped:
                return False
            if self.live and len(self._items) >= self.maxsize:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify_all()
        if self.wake is not None:
            self.wake.set()
        return True

    def close(self, error: BaseException | None = None) -> None:
        """The producer is done (with the error that ended it, if any)."""
        with self._cond:
            self._closed, self.error = True, error
            self._cond.notify_all()
        if self.wake is not None:
            self.wake.set()

    def stop(self) -> None:
        """The consumer is done: a producer blocked in put returns False."""
        with self._cond:
            self._stopped = True
            self._items.clear()
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Any:
        """The oldest item; queue.Empty-like TimeoutError when none came in time, QueueClosed at the end."""
        with self._cond:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self._items:
                if self._closed:
                    raise QueueClosed
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError
                self._cond.wait(remaining)
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


class SourceReader:
    """Reads a source on its own thread into a FrameQueue, stamping each frame's arrival time."""

    def __init__(self, source: Source, queue: FrameQueue, clock: Callable[[], float] = time.perf_counter) -> None:
        self.source, self.queue, self.clock = source, queue, clock
        self.thread = threading.Thread(target=self._run, name=f"ks-source:{source.name}", daemon=True)

    def start(self) -> SourceReader:
        self.thread.start()
        return self

    def _run(self) -> None:
        error = None
        try:
            for frame in self.source:
                if not self.queue.put(Arrival(frame, self.clock())):
                    break
        except BaseException as exc:  # handed to the consumer, which raises it after flushing what was read
            error = exc
        finally:
            try:
                self.source.close()
            finally:
                self.queue.close(error)

    def stop(self) -> None:
        self.queue.stop()
        self.thread.join(timeout=5.0)
