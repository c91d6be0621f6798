"""One engine, two callers: ks-serve's live worker and the threads scoring POSTed videos (`Detector.detect`) call the
same engine. Engines known to take concurrent calls are shared as they are; any other engine is wrapped so that
its calls take turns, one whole call at a time (an encoder batch, a head batch, a ring operation).
"""

from __future__ import annotations

import functools
import threading

from ks_runtime.engine.base import Engine

# onnxruntime's sessions take concurrent run() calls (its CPU and CUDA providers; not trusted for ort-trt, whose
# TensorRT provider gave corrupt outputs under concurrent runs before onnxruntime 1.17: microsoft/onnxruntime#19275);
# triton keeps no per-call state (engine/triton.py). Not `trt` (one execution context and one set of staging
# buffers per engine), nor `openvino` (one InferRequest, not thread-safe; a lock of its own there does no harm).
REENTRANT_ENGINES = frozenset({"ort", "triton"})
UNLOCKED_CALLS = frozenset({"describe"})  # /healthz asks from the event loop; it must not wait for a batch


class SerialEngine:
    """`engine` with every call (but `describe`) under one lock. Not an Engine subclass: every attribute, the base
    class's included, must come through __getattr__ from the wrapped engine."""

    def __init__(self, engine: Engine) -> None:
        self.wrapped = engine
        self.lock = threading.RLock()

    def __getattr__(self, name: str) -> object:
        value = getattr(self.wrapped, name)
        if not callable(value) or name in UNLOCKED_CALLS:
            return value

        @functools.wraps(value)
        def in_turn(*args: object, **kwargs: object) -> object:
            with self.lock:
                return value(*args, **kwargs)

        return in_turn


def shareable(engine: Engine) -> Engine:
    """`engine` itself when it takes concurrent calls, else wrapped so that its calls take turns."""
    if isinstance(engine, SerialEngine) or engine.name in REENTRANT_ENGINES:
        return engine
    return SerialEngine(engine)  # type: ignore[return-value]  # it answers every call an Engine does
