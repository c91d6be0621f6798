"""Items 2 and 3: the same encoder in onnxruntime against PyTorch eager, and the INT8 encoder against FP32.

Speed on paper-r50's encoder (encoder.onnx / encoder.int8.onnx, and KSModel.encode_frames with the same weights),
batch 1 and 8, interleaved in one process; the F1 cost of INT8 on the synth-cpu model `make demo` trained,
evaluated densely on its SynthAU test fold through the shared key-slot policy.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from benchmarks.harness import DEMO_MODEL, R50_MODEL, ROOT, Row, Target, interleaved, quick
from benchmarks.models import checkpoint_of, demo_bundle
from ks_runtime.core.bundle import ENCODER_INT8, read_manifest
from ks_runtime.engine.ort_graphs import BundleGraphs

INT8_SPEED = Target(">=", 2.5, "x")
INT8_F1_DROP = Target("<=", 0.5, " points")
F1_POLICY = "shift"  # the policy training evaluates with (the paper's cycling slot)


@pytest.fixture(scope="module")
def torch_encoder(r50_bundle):
    """KSModel.encode_frames of the checkpoint the bundle was exported from, eval mode, torch's CPU threads."""
    import torch

    # deferred: torch (the runtime's benchmarks run without it)
    from ks_export.graphs import load_ks_checkpoint

    torch.set_num_threads(os.cpu_count() or 1)
    return load_ks_checkpoint(checkpoint_of(r50_bundle)).model


@pytest.mark.parametrize("batch", [1, 8])
def test_ort_vs_torch(benchmark, record, r50_graphs, r50_inputs, torch_encoder, batch):
    import torch

    frames = np.ascontiguousarray(r50_inputs[:batch])
    tensor = torch.from_numpy(frames)

    def eager():
        with torch.inference_mode():
            return torch_encoder.encode_frames(tensor)

    sa_ort, _ = r50_graphs.encode(frames)
    np.testing.assert_allclose(sa_ort, eager()[0].numpy(), atol=1e-3)  # the same encoder on both sides
    benchmark.group = f"2 ORT vs torch eager, B={batch}"
    samples = interleaved(
        benchmark,
        {"ort": lambda: r50_graphs.encode(frames), "torch": eager},
        budget_s=20 if batch == 1 else 30,
        frames_per_call={"ort": batch, "torch": batch},
        min_rounds=5 if batch == 1 else 3,
    )
    ort, eager_s = samples["ort"], samples["torch"]
    record(
        Row(
            key=f"2{'ab'[batch > 1]}",
            item=2,
            name=f"onnxruntime against PyTorch eager, encoder, batch {batch}",
            figure=ort.fps / eager_s.fps,
            unit="x",
            model=R50_MODEL,
            boundary=f"encoder only, preprocessed float32 frames [{batch}, 3, 224, 224] in memory -> S_a and student "
            f"logits: encoder.onnx in onnxruntime (CPU provider) against KSModel.encode_frames in torch "
            f"{torch.__version__} eager (inference_mode, {torch.get_num_threads()} threads); frames/s, median",
            details={"ort": ort.summary(), "torch": eager_s.summary()},
            note=f"onnxruntime {ort.fps:.1f} frames/s, PyTorch eager {eager_s.fps:.1f} frames/s",
        )
    )


@pytest.mark.parametrize("batch", [1, 8])
def test_int8_speed(benchmark, record, r50_bundle, r50_inputs, batch):
    fp32 = BundleGraphs(r50_bundle, roles=("encoder",))
    int8 = BundleGraphs(r50_bundle, roles=("encoder",), encoder_variant=ENCODER_INT8)
    frames = np.ascontiguousarray(r50_inputs[:batch])
    benchmark.group = f"3 INT8 vs FP32 speed, B={batch}"
    samples = interleaved(
        benchmark,
        {"fp32": lambda: fp32.encode(frames), "int8": lambda: int8.encode(frames)},
        budget_s=20 if batch == 1 else 30,
        frames_per_call={"fp32": batch, "int8": batch},
        min_rounds=5 if batch == 1 else 3,
    )
    f, i = samples["fp32"], samples["int8"]
    quantization = fp32.manifest.variants[ENCODER_INT8].get("quantization", {})
    record(
        Row(
            key=f"3{'ab'[batch > 1]}",
            item=3,
            name=f"INT8 against FP32 speed, encoder, batch {batch}",
            figure=i.fps / f.fps,
            unit="x",
            target=INT8_SPEED,
            model=R50_MODEL,
            boundary=f"encoder only, preprocessed frames [{batch}, 3, 224, 224] -> logits: encoder.int8.onnx (QDQ, "
            f"per-channel int8 weights, uint8 activations) against encoder.onnx, onnxruntime CPU; frames/s, "
            f"median",
            details={"fp32": f.summary(), "int8": i.summary(), "quantization": quantization},
            note=f"INT8 {i.ms_per_frame:.1f} ms/frame against FP32 {f.ms_per_frame:.1f}",
        )
    )


INT8_F1_ROW = {
    "key": "3c",
    "item": 3,
    "name": "INT8 against FP32 F1 cost (points of mean F1)",
    "unit": " points",
    "target": INT8_F1_DROP,
}


def test_int8_f1(benchmark, record):
    bundle = demo_bundle()
    benchmark.group = "3 INT8 F1 cost"
    if bundle is None:
        record(
            Row(
                **INT8_F1_ROW,
                figure=None,
                model=DEMO_MODEL,
                status="skipped: run `make demo` first",
                boundary="dense testing on SynthAU's test fold",
            )
        )
        pytest.skip("no runs/demo/bundle: run `make demo` first")
    # deferred: torch (the runtime's benchmarks run without it)
    from ks_export.export import evaluate_variants, experiment_sequences
    from ks_train.config import ExperimentConfig

    manifest = read_manifest(bundle)
    where = bundle.relative_to(ROOT) if bundle.is_relative_to(ROOT) else bundle
    if ENCODER_INT8 not in manifest.variants:
        pytest.fail(f"{bundle} has no INT8 encoder variant ({ENCODER_INT8}); re-run `make demo`")
    cfg = ExperimentConfig.from_dict(manifest.raw["training"]["config"])
    sequences = experiment_sequences(cfg, list(manifest.au_columns), "test")
    if quick():
        sequences = sequences[:2]
    rows = {}

    def evaluate():
        rows.update(
            {r.variant: r for r in evaluate_variants(manifest, sequences, list(manifest.au_columns), F1_POLICY)}
        )

    benchmark.pedantic(evaluate, rounds=1)
    fp32, int8 = rows["fp32"], next(r for v, r in rows.items() if v != "fp32")
    frames = sum(len(s) for s in sequences)
    drop = 100 * (fp32.mean_f1 - int8.mean_f1)
    record(
        Row(
            **INT8_F1_ROW,
            figure=drop,
            model=f"{DEMO_MODEL} ({where}), SynthAU {cfg.data.synth_size} fold {cfg.data.fold}",
            boundary=f"mean F1 over {len(manifest.au_columns)} AUs at 0.5, dense testing of the test part "
            f"({len(sequences)} sequences, {frames} frames{', quick: 2 sequences' if quick() else ''}), "
            f"policy {F1_POLICY!r}; FP32 minus INT8 encoder, same head",
            details={
                "fp32_mean_f1": fp32.mean_f1,
                "int8_mean_f1": int8.mean_f1,
                "frames": frames,
                "per_au_f1": {"fp32": fp32.per_au_f1, "int8": int8.per_au_f1},
                "ms_per_frame": {"fp32": fp32.ms_per_frame, "int8": int8.ms_per_frame},
            },
            note=f"mean F1 FP32 {fp32.mean_f1:.4f}, INT8 {int8.mean_f1:.4f}",
        )
    )
