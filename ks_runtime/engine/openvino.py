"""The OpenVINO engine (`--engine openvino`, the `openvino` extra): the bundle's INT8 encoder compiled by OpenVINO's
CPU plugin, the head in onnxruntime.

Measured beside onnxruntime (docs/benchmarks.md, "OpenVINO beside onnxruntime"), OpenVINO ran the INT8 encoder
1.5-1.8x (demo model, batch 8; no faster at batch 1) to 2.2-3x (paper-r50) faster on one thread, and the FP32
encoder no faster at f32. Its CPU plugin (2026.4) also miscompiles the S_a classifier's Mul -> ReduceSum -> Add on
some graphs: the demo's FP32 encoder is wrong from batch 2, paper-r50's INT8 encoder from batch 13 (garbage further
on). So this engine runs INT8 only (precision "auto" means INT8 here, "fp32" is refused), compiled at inference
precision f32 (OpenVINO's default on AMX or AVX512-BF16 CPUs is bf16) from the bytes the manifest hashed, sends
OpenVINO at most MAX_BATCH frames a call, and before it scores a frame runs the load-time INT8 check (int8_check.py)
at every batch size in CHECK_BATCHES, i.e. every size a call can have. Where OpenVINO fails it, a warning and
onnxruntime's INT8 encoder under its own check, as `--engine ort --precision int8` would run it (then FP32, or an
EngineError with insist_int8). One infer request serves every thread, one call at a time (OpenVinoGraphs.encode).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import openvino as ov

from ks_runtime.core.bundle import (
    ENCODER_INT8,
    FRAMES,
    SA_LOGITS,
    STUDENT_LOGITS,
    Manifest,
    check_io,
    read_manifest,
)
from ks_runtime.core.errors import BundleError, ConfigError
from ks_runtime.engine.base import Engine, EngineError, parse_device
from ks_runtime.engine.consistency import checked_fp32
from ks_runtime.engine.int8_check import check_int8, open_int8
from ks_runtime.engine.ort_graphs import BundleGraphs

log = logging.getLogger(__name__)

MAX_BATCH = 16  # frames a call to OpenVINO: past 12 is where its miscompile turned to garbage, so it is checked
# Every batch size a call can have: the scheduler sends partial batches of any size up to MAX_BATCH, and OpenVINO's
# miscompile depends on the batch size (a size left unchecked may be the wrong one). Checking all 16 added about
# 0.4 s to the demo bundle's ~1.1 s load, once; padding each call up to a checked size (1, 8, 16) instead would cost
# up to 4x the encoder time of a partial batch (2 frames run as 8) on every call, for as long as the engine runs.
CHECK_BATCHES = tuple(range(1, MAX_BATCH + 1))
RUNTIME = f"openvino {ov.__version__.split('-')[0]}"


def compile_encoder(manifest: Manifest, variant: str, threads: int, precision: str) -> ov.CompiledModel:
    """Encoder `variant` from its hash-checked bytes, compiled for the CPU with `threads` threads (0: OpenVINO's
    default) and inference precision `precision` ("f32", or "default": OpenVINO's choice for this CPU)."""
    hint = ov.properties.hint
    config = {hint.performance_mode(): hint.PerformanceMode.LATENCY}
    if threads > 0:
        config[ov.properties.inference_num_threads()] = threads
    if precision != "default":
        config[hint.inference_precision()] = getattr(ov.Type, precision)
    name, core = manifest.file_name(variant), ov.Core()
    try:
        model = core.read_model(manifest.read(name))  # the verified bytes: no second open of the path
        return core.compile_model(model, "CPU", config)
    except RuntimeError as error:  # OpenVINO raises RuntimeError for graphs it cannot read or compile
        text = str(error).strip().splitlines()[0][-300:] if str(error).strip() else "no message"
        raise BundleError(f"{manifest.root / name}: {RUNTIME} cannot compile this graph: {text}") from None


def port_spec(port: ov.ConstOutput) -> tuple[str, list, str]:
    """(name, shape with None for a dynamic dim, numpy dtype name) of a compiled model's input or output."""
    shape = [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
    return port.get_any_name(), shape, np.dtype(port.get_element_type().to_dtype()).name


class OpenVinoGraphs(BundleGraphs):
    """The bundle's head in onnxruntime and encoder `variant` compiled by OpenVINO's CPU plugin, checked against the
    manifest's tensor names, shapes and dtypes; `precision` as compile_encoder."""

    def __init__(
        self, manifest: Manifest, variant: str = ENCODER_INT8, threads: int = 0, precision: str = "f32"
    ) -> None:
        super().__init__(manifest, roles=("head",), threads=threads)
        self.compiled = compile_encoder(manifest, variant, threads, precision)
        inputs = [port_spec(p) for p in self.compiled.inputs]
        outputs = [port_spec(p) for p in self.compiled.outputs]
        check_io(manifest, "encoder", inputs, outputs, where=manifest.path(variant))
        self.files["encoder"] = manifest.path(variant)
        self.precision = self.compiled.get_property(ov.properties.hint.inference_precision()).to_string()
        self.request = self.compiled.create_infer_request()
        # An InferRequest is not thread-safe: two threads in infer() on one request get each other's outputs or
        # "Infer Request is busy" (ks-serve encodes from its live worker and from each POSTed video's thread). A
        # lock, not a request per thread: the LATENCY hint compiles one stream that already uses every core, so
        # concurrent requests would mostly wait for each other there, and a request per thread would allocate
        # buffers for every short-lived thread of ks-serve.
        self.lock = threading.Lock()
        self.outputs = (self.compiled.output(SA_LOGITS), self.compiled.output(STUDENT_LOGITS))

    def encode(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Preprocessed frames [B, 3, S, S] float32 -> S_a logits [B, U], student logits [B, n, U] (copies); safe
        to call from several threads (one infer at a time)."""
        feeds = {FRAMES: np.ascontiguousarray(frames, np.float32)}
        with self.lock:  # the outputs are copied out before another thread's infer may overwrite the request's
            result = self.request.infer(feeds, share_inputs=True)
            return result[self.outputs[0]], result[self.outputs[1]]


class OpenVinoEngine(Engine):
    """The INT8 encoder in OpenVINO and the head in onnxruntime, on the CPU, checked when opened: the bundle's
    encoder -> head against its clip graph (consistency.py), then the INT8 check at CHECK_BATCHES (1..16). Past its
    tolerance: a warning and onnxruntime's INT8 encoder (`runtime` says which ran; `openvino_check` keeps
    OpenVINO's check, `int8_check` the one that decided)."""

    name = "openvino"

    def __init__(
        self,
        bundle: Manifest | Path | str,
        device: str = "cpu",
        threads: int = 0,
        precision: str = "auto",
        insist_int8: bool = False,
    ) -> None:
        if precision not in ("auto", "int8"):
            raise ConfigError(
                f"engine 'openvino' runs the bundle's INT8 encoder only (precision auto or int8), not {precision!r}: "
                f"OpenVINO was no faster than onnxruntime at FP32 and miscompiled the demo's FP32 encoder "
                f"(docs/runtime.md, OpenVINO); use --engine ort"
            )
        if parse_device(device)[0] != "cpu":
            raise EngineError(f"engine 'openvino' runs on the CPU (OpenVINO's CPU plugin), not {device!r}")
        self.manifest = bundle if isinstance(bundle, Manifest) else read_manifest(bundle)
        fp32, self.consistency = checked_fp32(self.manifest, threads)
        int8 = OpenVinoGraphs(self.manifest, ENCODER_INT8, threads) if ENCODER_INT8 in self.manifest.variants else None
        self.openvino_check = self.int8_check = check_int8(self.manifest, fp32, int8, CHECK_BATCHES, RUNTIME)
        if self.openvino_check.passed:
            log.info("%s", self.openvino_check.text())
            self.graphs, self.variant, self.runtime = int8, ENCODER_INT8, f"{RUNTIME} CPU, {int8.precision}"
            return
        log.warning("%s; running onnxruntime's INT8 encoder instead, under its own check", self.openvino_check.text())
        cpu = ["CPUExecutionProvider"]
        self.graphs, self.variant, self.int8_check = open_int8(self.manifest, cpu, threads, insist_int8, fp32=fp32)
        self.runtime = "onnxruntime"

    def encode(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[B, 3, S, S] -> [B, U], [B, n, U], in calls of at most MAX_BATCH frames (the batch sizes checked)."""
        if len(frames) <= MAX_BATCH:
            return self.graphs.encode(frames)
        parts = [self.graphs.encode(frames[i : i + MAX_BATCH]) for i in range(0, len(frames), MAX_BATCH)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def head(self, sa_logits: np.ndarray, student_logits: np.ndarray, key_slot: np.ndarray) -> np.ndarray:
        return self.graphs.head(sa_logits, student_logits, key_slot)

    def describe(self) -> str:
        if self.variant is None:
            return f"{self.name} (encoder fp32 in onnxruntime: the INT8 encoder failed its check on this CPU) on cpu"
        return f"{self.name} (encoder {self.variant} in {self.runtime}; head in onnxruntime) on cpu"
