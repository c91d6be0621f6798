"""Item 3, OpenVINO beside onnxruntime: a bundle's two encoders, FP32 (encoder.onnx) and INT8 (the QDQ u8s7
encoder.int8.onnx), in both runtimes on this CPU.

Issue 18 reported OpenVINO running the same QDQ encoder 1.7x faster than onnxruntime's INT8 at batch 1 on an AVX2 CPU.
Speed: every runtime and encoder at batch 1 and 8 on 1 and 2 threads, all six sides interleaved in one process, on
the demo model and on paper-r50. Agreement, on the demo model: probabilities (encoder -> the onnxruntime head,
dense) against onnxruntime FP32 on the bundle's check frames with the encoder at batch 1 and 8, sa_logits against
onnxruntime's at growing batches, and mean F1 on the SynthAU test fold with encoder batches of 8 (the stream's
default); on paper-r50 (untrained), whether sa_logits change with the batch. OpenVINO compiles each graph twice:
with INFERENCE_PRECISION_HINT f32, and at its default, which is bf16 on CPUs with AVX512-BF16 or AMX.
Results and the decision: docs/benchmarks.md, "OpenVINO beside onnxruntime".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from benchmarks.harness import DEMO_MODEL, R50_MODEL, ROOT, Row, Samples, Target, cores, interleaved, version
from benchmarks.models import demo_test_set
from ks_runtime.core.bundle import ENCODER_INT8, Manifest, read_manifest
from ks_runtime.core.metrics import f1_report
from ks_runtime.core.preprocess import to_network_input
from ks_runtime.engine.cpu import cpu_info
from ks_runtime.engine.int8_check import load_check_frames
from ks_runtime.engine.ort_graphs import BundleGraphs
from ks_runtime.stream import StreamConfig

ov = pytest.importorskip("openvino", reason="openvino is not installed: pip install .[openvino]")
from ks_runtime.engine.openvino import OpenVinoGraphs  # noqa: E402 (after the skip: it imports openvino)

F1_POLICY = "shift"  # as bench_int8_cpu.py
CHECK_POLICY = "last"  # as the load-time INT8 check
STREAM_BATCH = StreamConfig().batch_size
LOGIT_BATCHES = (1, 8, 12, 13, 16, 64)  # where a batch-dependent error shows, and where it turns to garbage
INT8_F1_DROP = Target("<=", 0.5, " points")  # as rows 3c-3h
CPU = cpu_info()


@dataclass(frozen=True)
class Side:
    """One way to run an encoder: `runtime` ort or openvino, the bundle's FP32 or INT8 encoder, and for OpenVINO its
    inference precision hint ("f32", or "default": OpenVINO's own choice)."""

    runtime: str
    encoder: str
    precision: str = ""

    @property
    def label(self) -> str:
        return " ".join(p for p in (self.runtime, self.encoder, self.precision) if p)

    @property
    def variant(self) -> str:
        return ENCODER_INT8 if self.encoder == "int8" else "encoder"


ORT_FP32, ORT_INT8 = Side("ort", "fp32"), Side("ort", "int8")
OV_SIDES = [Side("openvino", e, p) for e in ("fp32", "int8") for p in ("f32", "default")]
SIDES = [ORT_FP32, ORT_INT8, *OV_SIDES]
RUNS = [(1, 1), (8, 1), (1, 2), (8, 2)]  # (batch, threads)
SPEED_KEYS = {
    **{("demo", *run): key for run, key in zip(RUNS, ["3j", "3k", "3l", "3m"], strict=True)},
    **{("paper-r50", *run): key for run, key in zip(RUNS, ["3n", "3o", "3p", "3q"], strict=True)},
}
AGREEMENT_KEYS = dict(zip([ORT_INT8, *OV_SIDES], ["3r", "3s", "3t", "3u", "3v"], strict=True))


def open_side(manifest: Manifest, side: Side, threads: int) -> BundleGraphs:
    """The encoder and head of `side`, on `threads` threads."""
    if side.runtime == "ort":
        encoder = side.variant if side.variant != "encoder" else None
        return BundleGraphs(manifest, ("encoder", "head"), threads=threads, encoder_variant=encoder)
    return OpenVinoGraphs(manifest, side.variant, threads, side.precision)  # the engine's, at any precision


def describe_precision(graphs: BundleGraphs) -> str:
    return getattr(graphs, "precision", "onnxruntime")


def machine_note() -> str:
    return f"{CPU.text()}; onnxruntime {version('onnxruntime')}, openvino {version('openvino')}"


@pytest.fixture(scope="module")
def demo():
    """The demo bundle, its check frames, its test videos and labels, and onnxruntime FP32's probabilities."""
    demo = demo_test_set()
    manifest = demo.manifest
    if ENCODER_INT8 not in manifest.variants or "check_frames" not in manifest.raw:
        pytest.skip(f"{demo.bundle} has no INT8 encoder or check frames: export it with --int8")
    check = load_check_frames(manifest)
    fp32 = open_side(manifest, ORT_FP32, cores())
    demo.check = check
    demo.inputs = to_network_input(check, manifest.preprocess)  # [8, 3, S, S]
    demo.fp32 = fp32
    demo.fp32_check = fp32.dense_probabilities(check, CHECK_POLICY).astype(np.float64)
    demo.tolerance = float(manifest.variants[ENCODER_INT8]["check"]["tolerance"])
    demo.fp32_f1 = mean_f1(demo, fp32)
    return demo


def where(bundle: Path) -> Path:
    """The bundle's path, relative to the repository when inside it."""
    return bundle.relative_to(ROOT) if bundle.is_relative_to(ROOT) else bundle


def time_sides(benchmark, manifest: Manifest, inputs: np.ndarray, batch: int, threads: int) -> dict[str, Samples]:
    """Every side's encoder on `batch` of `inputs`, `threads` threads each, interleaved."""
    graphs = {side: open_side(manifest, side, threads) for side in SIDES}
    frames = np.ascontiguousarray(inputs[:batch])
    samples = interleaved(
        benchmark,
        {side.label: (lambda g=g: g.encode(frames)) for side, g in graphs.items()},
        budget_s=20 if batch == 1 else 30,
        frames_per_call={side.label: batch for side in SIDES},
        min_rounds=5 if batch == 1 else 3,
    )
    benchmark.extra_info["precision"] = {side.label: describe_precision(g) for side, g in graphs.items()}
    return samples


def speed_row(key: str, model: str, batch: int, threads: int, samples: dict[str, Samples], precision: dict) -> Row:
    """OpenVINO's INT8 over onnxruntime's INT8 frames/s, with every side's ms per frame and ratio in the details."""
    ms = {label: s.ms_per_frame for label, s in samples.items()}
    ratios = {  # frames/s of each OpenVINO side over onnxruntime running the same encoder
        side.label: samples[side.label].fps / samples[f"ort {side.encoder}"].fps for side in OV_SIDES
    }
    return Row(
        key=key,
        item=3,
        name=f"OpenVINO INT8 against onnxruntime INT8 speed, encoder, batch {batch}, {threads} thread(s)",
        figure=ratios["openvino int8 f32"],
        unit="x",
        model=model,
        boundary=f"encoder only, preprocessed frames [{batch}, 3, S, S] -> logits; encoder.onnx and encoder.int8.onnx "
        f"in onnxruntime (CPU provider) and in OpenVINO (CPU plugin, LATENCY hint, inference precision f32 and "
        f"OpenVINO's default), {threads} thread(s) each, all six interleaved; frames/s, median; on {machine_note()}",
        details={
            "ms_per_frame": ms,
            "openvino_over_ort_same_encoder": ratios,
            "precision": precision,
            "samples": {label: s.summary() for label, s in samples.items()},
            "cpu": CPU.to_dict(),
        },
        note="ms/frame: " + ", ".join(f"{label} {value:.3g}" for label, value in ms.items()),
    )


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("batch", [1, 8])
def test_openvino_speed(benchmark, record, demo, batch, threads):
    benchmark.group = f"3 OpenVINO vs onnxruntime, demo, B={batch}, {threads} thread(s)"
    samples = time_sides(benchmark, demo.manifest, demo.inputs, batch, threads)
    model = f"{DEMO_MODEL} ({where(demo.bundle)})"
    key = SPEED_KEYS[("demo", batch, threads)]
    record(speed_row(key, model, batch, threads, samples, benchmark.extra_info["precision"]))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("batch", [1, 8])
def test_openvino_speed_r50(benchmark, record, r50_bundle, r50_inputs, batch, threads):
    benchmark.group = f"3 OpenVINO vs onnxruntime, paper-r50, B={batch}, {threads} thread(s)"
    samples = time_sides(benchmark, read_manifest(r50_bundle), r50_inputs, batch, threads)
    key = SPEED_KEYS[("paper-r50", batch, threads)]
    record(speed_row(key, R50_MODEL, batch, threads, samples, benchmark.extra_info["precision"]))


def logit_errors(demo, graphs: BundleGraphs) -> dict[int, float]:
    """max |sa_logits - onnxruntime FP32's| at each of LOGIT_BATCHES, on the check frames repeated to fill them."""
    frames = np.resize(demo.inputs, (max(LOGIT_BATCHES), *demo.inputs.shape[1:]))
    out = {}
    for batch in LOGIT_BATCHES:
        got, want = graphs.encode(frames[:batch])[0], demo.fp32.encode(frames[:batch])[0]
        diff = np.abs(got.astype(np.float64) - want)
        out[batch] = float(diff.max()) if np.isfinite(diff).all() else float("inf")
    return out


def batch_dependence(graphs: BundleGraphs, inputs: np.ndarray, batches=(2, 8, 12, 13, 16)) -> dict[int, float]:
    """max |sa_logits of a batch - the same frames one a call| at each batch size: 0 where results do not depend on
    the batch (how OpenVINO's miscompile shows without a reference)."""
    frames = np.resize(inputs, (max(batches), *inputs.shape[1:]))
    alone = np.concatenate([graphs.encode(frames[i : i + 1])[0] for i in range(len(frames))]).astype(np.float64)
    out = {}
    for batch in batches:
        diff = np.abs(graphs.encode(frames[:batch])[0] - alone[:batch])
        out[batch] = float(diff.max()) if np.isfinite(diff).all() else float("inf")
    return out


def test_openvino_batch_dependence_r50(benchmark, record, r50_bundle, r50_inputs):
    """paper-r50 (untrained, so no F1): does any side's sa_logits change with the batch?"""
    manifest = read_manifest(r50_bundle)
    benchmark.group = "3 OpenVINO batch dependence, paper-r50"
    found = {}
    benchmark.pedantic(
        lambda: found.update({s.label: batch_dependence(open_side(manifest, s, cores()), r50_inputs) for s in SIDES}),
        rounds=1,
    )
    worst = {label: max(errors.values()) for label, errors in found.items()}
    record(
        Row(
            key="3w",
            item=3,
            name="OpenVINO INT8 on paper-r50: sa_logits changed by the batch (max |difference|)",
            figure=worst["openvino int8 f32"],
            unit="",
            model=R50_MODEL,
            boundary="encoder only, aligned SynthAU frames [B, 3, 224, 224]: sa_logits of one call of B frames "
            f"against the same frames one a call, B in 2, 8, 12, 13, 16; every side; on {machine_note()}",
            details={"sa_logits_max_abs_by_batch": found, "cpu": CPU.to_dict()},
            note="worst by side: " + ", ".join(f"{label} {value:.3g}" for label, value in worst.items()),
        )
    )


def check_frame_errors(demo, graphs: BundleGraphs) -> dict[int, dict]:
    """max and mean |p - p_ort_fp32| on the check frames (policy 'last'), the encoder at batch 1 and at the stream's."""
    out = {}
    for batch in (1, STREAM_BATCH):
        diff = np.abs(graphs.dense_probabilities(demo.check, CHECK_POLICY, batch_size=batch) - demo.fp32_check)
        out[batch] = {"max_abs": float(diff.max()), "mean_abs": float(diff.mean())}
    return out


def mean_f1(demo, graphs: BundleGraphs) -> float:
    probs = [graphs.dense_probabilities(v, F1_POLICY, batch_size=STREAM_BATCH) for v in demo.videos]
    return f1_report(np.concatenate(probs), demo.labels, demo.columns).mean


@pytest.mark.parametrize("side", list(AGREEMENT_KEYS), ids=lambda s: s.label.replace(" ", "-"))
def test_openvino_agreement(benchmark, record, demo, side):
    graphs = open_side(demo.manifest, side, cores())
    benchmark.group = "3 OpenVINO agreement"
    f1 = {}
    benchmark.pedantic(lambda: f1.update(value=mean_f1(demo, graphs)), rounds=1)
    checked, logits = check_frame_errors(demo, graphs), logit_errors(demo, graphs)
    worst = max(c["max_abs"] for c in checked.values())
    within = "within" if worst <= demo.tolerance else "BEYOND"
    record(
        Row(
            key=AGREEMENT_KEYS[side],
            item=3,
            name=f"{side.label} against onnxruntime FP32: F1 cost (points)",
            figure=100 * (demo.fp32_f1 - f1["value"]),
            unit=" points",
            target=INT8_F1_DROP,
            model=f"{DEMO_MODEL} ({where(demo.bundle)})",
            boundary=f"mean F1 at 0.5 over {len(demo.labels)} test frames, dense, policy {F1_POLICY!r}, encoder "
            f"batches of {STREAM_BATCH}, the onnxruntime head; check frames: max |p - p_ort_fp32| under policy "
            f"{CHECK_POLICY!r} against the bundle's INT8 tolerance {demo.tolerance:.3f}; on {machine_note()}",
            details={
                "precision": describe_precision(graphs),
                "fp32_mean_f1": demo.fp32_f1,
                "mean_f1": f1["value"],
                "check_frames_by_encoder_batch": checked,
                "tolerance": demo.tolerance,
                "sa_logits_max_abs_by_batch": logits,
                "cpu": CPU.to_dict(),
            },
            note=f"check frames max |dp| {checked[1]['max_abs']:.4f} at batch 1, "
            f"{checked[STREAM_BATCH]['max_abs']:.4f} at {STREAM_BATCH} ({within} {demo.tolerance:.3f}); sa_logits "
            f"max error by batch " + ", ".join(f"{b}: {e:.3g}" for b, e in logits.items()),
        )
    )
