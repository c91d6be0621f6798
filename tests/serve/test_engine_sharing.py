"""The streams' worker and the POSTed videos' threads share one engine: an engine not known to take concurrent
calls takes them in turn, and onnxruntime's is shared as it is."""

from __future__ import annotations

import threading

import numpy as np

from ks_runtime.detector import Detector
from ks_runtime.engine import OrtEngine
from ks_runtime.serve.serial import SerialEngine
from ks_runtime.serve.service import StreamService
from tests.serve.conftest import RecordingEngine


class GatedEngine(RecordingEngine):
    """An engine of unknown thread-safety whose encode waits at a gate, counting the calls inside at once."""

    name = "gated"

    def __init__(self, inner) -> None:
        super().__init__(inner)
        self.entered, self.gate = threading.Event(), threading.Event()
        self.inside = self.most_inside = self.calls = 0

    def encode(self, frames):
        self.calls += 1
        self.inside += 1
        self.most_inside = max(self.most_inside, self.inside)
        self.entered.set()
        self.gate.wait(5)
        self.inside -= 1
        return super().encode(frames)


def test_an_engine_not_known_to_take_concurrent_calls_takes_them_in_turn(bundle):
    made = Detector(bundle, queue_size=64)
    gated = made.engine = GatedEngine(made.engine)
    service = StreamService(made)
    engine = service.detector.engine  # what the POSTed videos' Detector.detect calls
    assert service.scheduler.engine is engine and isinstance(engine, SerialEngine)
    frames = np.zeros((1, 3, *(2 * (made.manifest.preprocess.size,))), np.float32)
    first = threading.Thread(target=engine.encode, args=(frames,))
    second = threading.Thread(target=engine.encode, args=(frames,))
    first.start()
    assert gated.entered.wait(5)
    second.start()
    second.join(0.3)
    assert second.is_alive() and gated.calls == 1  # the second call waits for the first to end
    gated.gate.set()
    first.join(5)
    second.join(5)
    assert gated.calls == 2 and gated.most_inside == 1
    assert engine.describe() == gated.describe() and engine.name == "gated"


def test_onnxruntime_is_shared_as_it_is(bundle):
    service = StreamService(Detector(bundle, queue_size=64))
    assert isinstance(service.detector.engine, OrtEngine) and service.scheduler.engine is service.detector.engine
