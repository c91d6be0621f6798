"""Item 3, INT8 on this CPU: every INT8 scheme of ks_export.quantize against FP32, and the load-time check's cost.

Each scheme (u8s7, the shipped one, and the alternatives it was chosen over) quantises the encoder of the model
`make demo` trained, calibrated as `ks-export --int8` does; then its speed against FP32 (encoder, batch 1 and 8,
interleaved), its F1 cost on the SynthAU test fold (dense, shared policy, same head) and its largest probability
error are measured on this CPU. Every row names the CPU and the flags that pick onnxruntime's int8 kernels: the
same scheme on a CPU without VNNI can give other numbers, which is what a VNNI-independent scheme rules out.
The last row is what OrtEngine(precision="int8") adds to opening paper-r50's bundle: the check on this CPU.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pytest

from benchmarks.harness import DEMO_MODEL, R50_MODEL, ROOT, Row, Target, interleaved
from benchmarks.models import demo_test_set
from ks_runtime.core.metrics import f1_report
from ks_runtime.core.preprocess import to_network_input
from ks_runtime.engine.cpu import cpu_info
from ks_runtime.engine.int8_check import load_check_frames
from ks_runtime.engine.ort import OrtEngine
from ks_runtime.engine.ort_graphs import BundleGraphs

INT8_F1_DROP = Target("<=", 0.5, " points")  # as bench_engines.py's row 3c
F1_POLICY = "shift"
SCHEME_KEYS = {"u8s7": "3d", "u8s8": "3e", "s8s8": "3f", "u8u8": "3g", "u8s7-tensor": "3h"}
CPU = cpu_info()


def machine_note() -> str:
    vnni = {True: "VNNI", False: "no VNNI", None: "VNNI unknown"}[CPU.vnni]
    return f"{CPU.text()}, {vnni}"


@pytest.fixture(scope="module")
def demo():
    """The demo bundle, its test videos and labels, and calibration frames as ks-export takes them."""
    demo = demo_test_set()
    # deferred: torch (the runtime's benchmarks run without it)
    from ks_export.export import CALIB_SUBJECTS, experiment_sequences
    from ks_export.quantize import DEFAULT_CALIB, calibration_frames

    manifest = demo.manifest
    train = experiment_sequences(demo.cfg, demo.columns, "train", CALIB_SUBJECTS)
    fp32 = BundleGraphs(manifest, roles=("encoder", "head"))
    return SimpleNamespace(
        **vars(demo),
        calib=calibration_frames(train, manifest.preprocess, DEFAULT_CALIB),
        fp32=fp32,
        fp32_probs=np.concatenate([fp32.dense_probabilities(v, F1_POLICY) for v in demo.videos]),
        batch=to_network_input(demo.videos[0][:8], manifest.preprocess),
    )


def graphs_with_encoder(manifest, encoder, options=None) -> BundleGraphs:
    """The bundle's head with `encoder` (a file outside the bundle) in the FP32 encoder's place. The session is
    swapped in after opening: a manifest may name no file outside its bundle (bundle_files.py)."""
    graphs = BundleGraphs(manifest, ("encoder", "head"))
    providers = ["CPUExecutionProvider"]
    graphs.sessions["encoder"] = ort.InferenceSession(
        str(encoder), options or ort.SessionOptions(), providers=providers
    )
    return graphs


def check_frame_errors(demo, int8: BundleGraphs, encoder) -> dict:
    """On the bundle's check frames (policy 'last', as the load-time check): INT8 against FP32, and onnxruntime's
    integer kernels against its float reference of the same QDQ graph (no graph optimisation: Q, DQ and float
    ops): how far two correct executions of one INT8 graph can differ on this CPU."""
    if "check_frames" not in demo.manifest.raw:
        return {}
    frames = load_check_frames(demo.manifest)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    reference = graphs_with_encoder(demo.manifest, encoder, options)
    kernels = int8.dense_probabilities(frames, "last")
    return {
        "frames": int(len(frames)),
        "int8_vs_fp32": float(np.abs(kernels - demo.fp32.dense_probabilities(frames, "last")).max()),
        "kernels_vs_float_reference": float(np.abs(kernels - reference.dense_probabilities(frames, "last")).max()),
    }


def speed(benchmark, fp32: BundleGraphs, int8: BundleGraphs, frames: np.ndarray) -> dict:
    """INT8 over FP32 frames/s of the encoder at batch 1 and 8, all four interleaved; ratios and ms per frame."""
    batches = {b: np.ascontiguousarray(frames[:b]) for b in (1, 8)}
    sides = {}
    for b, x in batches.items():
        sides[f"fp32_b{b}"] = lambda x=x: fp32.encode(x)
        sides[f"int8_b{b}"] = lambda x=x: int8.encode(x)
    samples = interleaved(benchmark, sides, budget_s=20, frames_per_call={k: int(k[-1]) for k in sides})
    out = {}
    for b in batches:
        f, i = samples[f"fp32_b{b}"], samples[f"int8_b{b}"]
        out[f"b{b}"] = {"ratio": i.fps / f.fps, "fp32_ms": f.ms_per_frame, "int8_ms": i.ms_per_frame}
    return out


@pytest.mark.parametrize("scheme", list(SCHEME_KEYS))
def test_int8_scheme_on_this_cpu(benchmark, record, demo, scheme, tmp_path):
    # deferred: torch (the runtime's benchmarks run without it; ks_export imports ks_train)
    from ks_export.quantize import quantize_encoder

    encoder = tmp_path / f"encoder.{scheme}.onnx"
    settings = quantize_encoder(demo.manifest.path("encoder"), encoder, demo.calib, scheme)
    int8 = graphs_with_encoder(demo.manifest, encoder)
    probs = np.concatenate([int8.dense_probabilities(v, F1_POLICY) for v in demo.videos])
    diff = np.abs(probs.astype(np.float64) - demo.fp32_probs)
    fp32_f1 = f1_report(demo.fp32_probs, demo.labels, demo.columns).mean
    int8_f1 = f1_report(probs, demo.labels, demo.columns).mean
    timing = speed(benchmark, demo.fp32, int8, demo.batch)
    where = demo.bundle.relative_to(ROOT) if demo.bundle.is_relative_to(ROOT) else demo.bundle
    independent = "VNNI-independent" if settings["vnni_independent"] else "can saturate without VNNI"
    record(
        Row(
            key=SCHEME_KEYS[scheme],
            item=3,
            name=f"INT8 scheme {scheme} against FP32 on this CPU: F1 cost (points)",
            figure=100 * (fp32_f1 - int8_f1),
            unit=" points",
            target=INT8_F1_DROP,
            model=f"{DEMO_MODEL} ({where})",
            boundary=f"encoder quantised with ks_export.quantize scheme {scheme!r} (weights {settings['weights']}; "
            f"activations {settings['activations']}; {len(demo.calib)} calibration frames), FP32 head; mean F1 at "
            f"0.5 over {len(demo.labels)} test frames, dense, policy {F1_POLICY!r}; speed: encoder alone, batch 1 "
            f"and 8, onnxruntime CPU, interleaved; on {machine_note()}",
            details={
                "cpu": CPU.to_dict(),
                "quantization": settings,
                "fp32_mean_f1": fp32_f1,
                "int8_mean_f1": int8_f1,
                "max_abs_probs": float(diff.max()),
                "p99_abs_probs": float(np.quantile(diff, 0.99)),
                "mean_abs_probs": float(diff.mean()),
                "speed": timing,
                "check_frames": check_frame_errors(demo, int8, encoder),
            },
            note=f"{independent}; {timing['b1']['ratio']:.2f}x / {timing['b8']['ratio']:.2f}x FP32 speed at "
            f"batch 1 / 8; max |dp| {diff.max():.3f}, mean {diff.mean():.4f}",
        )
    )


def test_int8_check_cost(benchmark, record, r50_bundle):
    """What OrtEngine(precision="int8") adds to opening paper-r50's bundle: FP32 and INT8 on the check frames."""
    benchmark.group = "3 INT8 load-time check"
    samples = interleaved(
        benchmark,
        {"fp32": lambda: OrtEngine(r50_bundle), "int8": lambda: OrtEngine(r50_bundle, precision="int8")},
        budget_s=30,
        min_rounds=3,
        max_rounds=10,
    )
    engine = OrtEngine(r50_bundle, precision="int8")
    extra_ms = 1e3 * (samples["int8"].median - samples["fp32"].median)
    record(
        Row(
            key="3i",
            item=3,
            name="INT8 load-time check: time added to opening the engine",
            figure=extra_ms,
            unit=" ms",
            model=R50_MODEL,
            boundary=f"OrtEngine(bundle, precision='int8') against OrtEngine(bundle), construction to return "
            f"(manifest, hashes, sessions; INT8 adds the FP32 and INT8 encoders and the head on "
            f"{engine.int8_check.measured.frames if engine.int8_check.measured else 0} check frames); "
            f"median of interleaved rounds, on {machine_note()}",
            details={"fp32": samples["fp32"].summary(), "int8": samples["int8"].summary(), "cpu": CPU.to_dict()},
            note=f"check {'passed' if engine.int8_check.passed else 'FAILED'} here: {engine.int8_check.text()}",
        )
    )
