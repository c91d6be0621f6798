"""ks-serve's fixtures: the runtime's tiny bundle, a server over it, frames as the browser would send them, and a
WebSocket reader that gives up instead of hanging."""

from __future__ import annotations

import json
import time

import anyio
import cv2
import numpy as np
import pytest

from ks_runtime.detector import Detector
from ks_runtime.engine.base import Engine
from ks_runtime.serve.app import create_app
from ks_runtime.serve.protocol import Limits
from ks_runtime.serve.service import StreamService
from tests.runtime.conftest import bundle, checkpoint, synth_frames  # noqa: F401 (fixtures, and the frames)

RECEIVE_TIMEOUT_S = 20.0


class RecordingEngine(Engine):
    """The bundle's engine, with every encoder input kept and an optional delay per batch (an engine slower than
    the clients)."""

    name = "recording"

    def __init__(self, inner: Engine, delay: float = 0.0) -> None:
        self.inner, self.delay, self.manifest = inner, delay, inner.manifest
        self.inputs: list[np.ndarray] = []

    def encode(self, frames):
        self.inputs.append(np.array(frames))  # the scheduler reuses its buffer
        if self.delay:
            time.sleep(self.delay)
        return self.inner.encode(frames)

    def head(self, sa_logits, student_logits, key_slot):
        return self.inner.head(sa_logits, student_logits, key_slot)


def serve(bundle_path, limits: Limits | None = None, delay: float | None = None, token: str | None = None, **detector):
    """(app, service) over a Detector of the bundle (keyword arguments go to it); `delay`: a RecordingEngine."""
    made = Detector(bundle_path, **{"queue_size": 64, **detector})
    if delay is not None:
        made.engine = RecordingEngine(made.engine, delay)
    service = StreamService(made, limits or Limits())
    return create_app(service, token), service


def png(frame: np.ndarray) -> bytes:
    """An RGB frame as PNG bytes (lossless: the server decodes exactly these pixels)."""
    ok, data = cv2.imencode(".png", np.ascontiguousarray(frame[..., ::-1]))
    assert ok
    return data.tobytes()


def receive(ws, timeout: float = RECEIVE_TIMEOUT_S) -> dict:
    """The next message of a TestClient WebSocket, or a failure after `timeout` (its own receive waits forever)."""

    async def next_message():
        with anyio.fail_after(timeout):
            return await ws._send_rx.receive()

    message = ws.portal.call(next_message)
    ws._raise_on_close(message)
    return json.loads(message["text"])


def until(ws, kind: str) -> list[dict]:
    """Every message up to and including the first of type `kind`."""
    messages = []
    while True:
        messages.append(receive(ws))
        if messages[-1]["type"] == kind:
            return messages


def results(messages: list[dict]) -> list[dict]:
    return [m for m in messages if m["type"] == "result"]


def probs(results_: list[dict], aus) -> np.ndarray:
    return np.array([[r["probs"][au] for au in aus] for r in results_])


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def frames():
    return synth_frames(12)[0]
