"""Everything to run when a GPU is lent, in one command, printing tables for docs/gpu.md.

    .venv/bin/python benchmarks/gpu_session.py [--quick] [--out gpu_session.md]

In order (the CUDA kernels' parity and speed come first): (1) the CUDA kernels' parity tests
(pytest -m gpu tests/cpp_ext/test_cuda_ops.py) and then every other GPU-marked test; (2) the kernels' speed
against the same work in PyTorch (CUDA events); (3) one GPU training step through ks_train's Trainer (AMP as
configured); (4) the encoder's inference in PyTorch, eager against CUDA-graph replay, for the synth-cpu and
paper-r50 backbones at batch 1/8/32; (5) a tiny bundle exported with --trt and streamed densely through the
engines ort (CPU), ort (CUDA), ort-trt and trt. Each part reports its own failure and the rest go on. The
GPU feature table at the end says "run on <GPU>, <date>" for what ran and passed, and why not otherwise.
First run on an NVIDIA H200 on 2026-11-26 by benchmarks/gpu_lease.sh; its results are in
benchmarks/results/gpu-h200-2026-11-26/.
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
import tempfile
import time
import traceback
from functools import partial
from pathlib import Path

import numpy as np

from ks_export.export import export_bundle
from ks_runtime.core.bundle import read_manifest
from ks_runtime.core.preprocess import IMAGENET_MEAN, IMAGENET_STD
from ks_runtime.engine import create_engine, gpu_probe
from ks_runtime.engine.ort_graphs import BundleGraphs
from ks_runtime.synth.generate import SynthConfig, generate_sequence
from ks_train.config import load_config
from ks_train.methods import create_method
from ks_train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FEATURES = {  # docs/gpu.md's GPU feature table: key -> what it is
    "kernels": "CUDA kernels pack_frames / gather_clips / warp_crop: parity with the CPU ops",
    "kernel_speed": "CUDA kernels: speed against the same work in PyTorch",
    "gpu_tests": "every other `gpu`-marked test (TensorRT engine, ort CUDA/TensorRT providers, --trt export)",
    "train_step": "training on a GPU (Trainer, AMP)",
    "encoder_eager_graph": "PyTorch encoder inference, eager and CUDA-graph replay",
    "trt_export": "`ks-export --trt`: TensorRT engines built with the Python API, Triton tensorrt_plan",
    "ort_cuda": "engine `ort` on cuda (CUDA provider, IOBinding, FP16 encoder)",
    "ort_trt": "engine `ort-trt` (onnxruntime's TensorRT provider, engine cache)",
    "trt": "engine `trt` (native TensorRT, device rings, kernels into engine buffers)",
}


class Session:
    """Collects each part's table and each feature's status."""

    def __init__(self, gpu_name: str) -> None:
        self.gpu, self.date = gpu_name, datetime.date.today().isoformat()
        self.status = dict.fromkeys(FEATURES, "written, not run")
        self.sections: list[str] = []

    def ran(self, key: str, ok: bool, note: str = "") -> None:
        where = f"run on {self.gpu}, {self.date}"
        self.status[key] = f"{where}{': ' + note if note else ''}" if ok else f"FAILED on {self.gpu}: {note}"

    def section(self, title: str, body: str) -> None:
        text = f"### {title}\n\n{body}\n"
        self.sections.append(text)
        print(text, flush=True)

    def feature_table(self) -> str:
        rows = ["| GPU feature | status |", "|---|---|"]
        rows += [f"| {FEATURES[k]} | {self.status[k]} |" for k in FEATURES]
        return "\n".join(rows)


def part(session: Session, key: str, title: str):
    """Run a part; an exception marks its feature failed with the error, and the session goes on."""

    def wrap(fn):
        def run(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            except Exception as error:  # a part's failure is reported, not fatal
                session.ran(key, False, f"{type(error).__name__}: {str(error).splitlines()[0][:200]}")
                session.section(f"{title}: FAILED", f"```\n{traceback.format_exc()[-3000:]}\n```")
            finally:
                print(f"[{title}: {time.perf_counter() - started:.0f} s]", flush=True)

        return run

    return wrap


def pytest_summary(args: list[str], timeout: int = 900) -> tuple[bool, str]:
    """Run pytest in a subprocess; (passed, its closing line)."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    tail = lines[-1] if lines else result.stderr[-300:]
    skipped = [line for line in lines if line.startswith("SKIPPED")]
    return result.returncode == 0, tail + ("\n" + "\n".join(skipped[:20]) if skipped else "")


def cuda_ms(fn, iters: int = 50, warmup: int = 5) -> float:
    """Median-free mean ms per call of `fn` on the current stream, timed with CUDA events."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def torch_pack(frames, mean, std):
    """pack_frames as PyTorch ops: NHWC uint8 -> NCHW, scale, normalise, half."""
    return ((frames.permute(0, 3, 1, 2).float() / 255 - mean) / std).half()


# --- (1) tests ---------------------------------------------------------------------------------------------------


def run_tests(session: Session) -> None:
    ok, tail = pytest_summary(["-m", "gpu", "tests/cpp_ext/test_cuda_ops.py"])
    session.ran("kernels", ok and "passed" in tail and "skipped" not in tail.split("\n")[0], tail.split("\n")[0])
    session.section("CUDA kernel parity (pytest -m gpu tests/cpp_ext/test_cuda_ops.py)", f"```\n{tail}\n```")
    ok, tail = pytest_summary(["-m", "gpu", "tests/runtime", "tests/export"], timeout=1800)
    closing = tail.split("\n")[0]
    if ok and "passed" not in closing:  # every test skipped: nothing was judged, the reasons are listed
        session.status["gpu_tests"] = f"not run: {closing} (reasons below)"
    else:
        session.ran("gpu_tests", ok, closing)
    session.section("Other GPU-marked tests (pytest -m gpu tests/runtime tests/export)", f"```\n{tail}\n```")


# --- (2) kernel speed ----------------------------------------------------------------------------------------------


def kernel_speed(session: Session, quick: bool) -> None:
    import torch

    import cpp_ext.cuda as kcuda  # deferred: cpp_ext's CUDA library (built only where nvcc was found)

    stream = torch.cuda.current_stream().cuda_stream
    mean = torch.tensor(IMAGENET_MEAN, device="cuda").view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device="cuda").view(1, 3, 1, 1)
    rows = ["| op | batch | ks kernel ms | PyTorch ms | ks GB/s |", "|---|---:|---:|---:|---:|"]
    for b in (1, 8, 32) if not quick else (8,):
        frames = torch.randint(0, 256, (b, 224, 224, 3), dtype=torch.uint8, device="cuda")
        out = torch.empty((b, 3, 224, 224), dtype=torch.float16, device="cuda")
        ks = cuda_ms(partial(kcuda.pack_frames, frames, IMAGENET_MEAN, IMAGENET_STD, out=out, stream=stream))
        ref = cuda_ms(partial(torch_pack, frames, mean, std))
        gbps = (frames.numel() + out.numel() * 2) / (ks * 1e-3) / 1e9
        rows.append(f"| pack_frames 224 px -> fp16 | {b} | {ks:.3f} | {ref:.3f} | {gbps:.0f} |")
    ring = torch.randn((64, 5, 12), device="cuda")
    for b in (8, 64, 256) if not quick else (64,):
        # The ring holds frames 1000..1063; a 5-frame clip can end no earlier than 1004.
        ends = np.random.default_rng(0).integers(1004, 1064, b)
        out = torch.empty((b, 5, 5, 12), device="cuda")
        index = torch.as_tensor((ends[:, None] - 4 + np.arange(5)) % 64, device="cuda")
        ks = cuda_ms(partial(kcuda.gather_clips, ring, 1000, 64, ends, 5, stream_start=0, out=out, stream=stream))
        ref = cuda_ms(partial(ring.__getitem__, index))
        gbps = 2 * out.numel() * 4 / (ks * 1e-3) / 1e9
        rows.append(f"| gather_clips n=5, U=12 | {b} | {ks:.3f} | {ref:.3f} | {gbps:.1f} |")
    session.section(
        f"CUDA kernels on {session.gpu} (ms per call, CUDA events; for gather the ks kernel copies "
        "the clip ends from the host each call, PyTorch indexes with a device-resident index)",
        "\n".join(rows),
    )
    session.ran("kernel_speed", True)


# --- (3) a training step -------------------------------------------------------------------------------------------


def train_step(session: Session, work: Path) -> Path:
    overrides = [
        "data.synth_size=tiny",
        "data.image_size=64",
        "train.epochs=1",
        "train.batches_per_epoch=8",
        "train.workers=0",
        "model.backbone=tiny",
    ]
    trainer = Trainer(load_config("synth-cpu", overrides), work / "run", device="cuda", progress=False)
    started = time.perf_counter()
    history = trainer.fit()
    seconds = time.perf_counter() - started
    record = history[-1]
    session.section(
        "GPU training step (synth-cpu, tiny SynthAU at 64 px, 8 batches)",
        f"| AMP | loss | s/batch (epoch incl. warm-up) | fit incl. eval |\n|---|---:|---:|---:|\n"
        f"| {trainer.amp_dtype} | {record['loss']:.3f} | {record['seconds'] / 8:.3f} | {seconds:.1f} s |",
    )
    session.ran("train_step", bool(np.isfinite(record["loss"])), f"loss {record['loss']:.3f}")
    return work / "run" / "last.pt"


# --- (4) encoder eager vs CUDA graph -------------------------------------------------------------------------------


def encoder_timings(session: Session, quick: bool) -> None:
    import torch

    rows = [
        "| profile | backbone | size | batch | eager ms | graph ms | graph frames/s | speed-up |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for profile in ("synth-cpu", "paper-r50"):
        cfg = load_config(profile, [])
        model = create_method(cfg).build_model().cuda().eval()
        size = cfg.data.image_size
        for b in (1, 8, 32) if not quick else (8,):
            x = torch.randn((b, 3, size, size), device="cuda")
            with torch.no_grad():
                eager = cuda_ms(partial(model.encode_frames, x), iters=30)
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(3):
                        model.encode_frames(x)
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    static = model.encode_frames(x)
                replay = cuda_ms(graph.replay, iters=30)
                np.testing.assert_allclose(
                    static[0].float().cpu().numpy(), model.encode_frames(x)[0].float().cpu().numpy(), atol=1e-3
                )
            rows.append(
                f"| {profile} | {cfg.model.backbone} | {size} | {b} | {eager:.2f} | {replay:.2f} | "
                f"{b / replay * 1e3:.0f} | {eager / replay:.2f}x |"
            )
        del model
        torch.cuda.empty_cache()
    session.section(f"Encoder inference in PyTorch on {session.gpu} (fp32, CUDA events, 30 calls)", "\n".join(rows))
    session.ran("encoder_eager_graph", True)


# --- (5) export --trt and the engines --------------------------------------------------------------------------------


def engines(session: Session, checkpoint: Path, work: Path) -> None:
    bundle = work / "bundle"
    report = export_bundle(checkpoint, bundle, int8=True, triton=True, calib=64, evaluate=False, trt=True)
    built = read_manifest(bundle).raw["tensorrt"]["engines"]
    session.section("ks-export --trt", f"```\n{report.tensorrt}\n```")
    missing_trt = gpu_probe.missing("tensorrt")
    if missing_trt is not None:  # nothing to judge: the export wrote the trtexec recipe instead
        session.status["trt_export"] = f"not run: {missing_trt}"
    else:
        session.ran(
            "trt_export",
            bool(built),
            f"{len(built)} engines" if built else str(read_manifest(bundle).raw["tensorrt"]["status"]),
        )
    frames = generate_sequence(SynthConfig(size="tiny", image_size=64, frames=600, seed=5), 0, 0).frames
    want = BundleGraphs(bundle, roles=("encoder", "head")).dense_probabilities(frames, "last")
    rows = [
        "| engine | device | frames/s (dense, 600 frames, 64 px) | max abs vs ort CPU fp32 |",
        "|---|---|---:|---:|",
    ]
    for key, name in (("ort_cpu", "ort"), ("ort_cuda", "ort"), ("ort_trt", "ort-trt"), ("trt", "trt")):
        device = "cpu" if key == "ort_cpu" else "cuda:0"
        needs = {
            "ort_cuda": ("onnxruntime-gpu",),
            "ort_trt": ("onnxruntime-trt", "tensorrt"),
            "trt": ("tensorrt", "cuda-python", "cuda-kernels"),
        }.get(key, ())
        reason = gpu_probe.missing(*needs) if needs else None
        if reason is not None:
            rows.append(f"| {name} | {device} | skipped: {reason} | |")
            continue
        try:
            engine = create_engine(bundle, name, device)
            dense = engine.dense_probabilities if key == "trt" else engine.graphs.dense_probabilities
            run = partial(dense, frames, "last")
            run()
            started = time.perf_counter()
            got = run()
            fps = len(frames) / (time.perf_counter() - started)
            worst = float(np.abs(got - want).max())
            rows.append(f"| {name} | {device} | {fps:.0f} | {worst:.1e} |")
            if key in session.status:
                session.ran(key, worst < 2e-2, f"{fps:.0f} frames/s, max abs {worst:.1e}")
        except Exception as error:  # one engine failing must not hide the others
            rows.append(f"| {name} | {device} | FAILED: {type(error).__name__}: {str(error)[:120]} | |")
            if key in session.status:
                session.ran(key, False, f"{type(error).__name__}: {str(error)[:120]}")
    session.section(f"Engines on {session.gpu}", "\n".join(rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one batch size per timing")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown here")
    args = parser.parse_args(argv)

    print(gpu_probe.report(), flush=True)
    devices = gpu_probe.cuda_devices()
    if not devices:
        print(f"no GPU here ({gpu_probe.cuda_device_reason()}): nothing to run", file=sys.stderr)
        return 2
    session = Session(f"{devices[0].name} ({devices[0].sm})")
    with tempfile.TemporaryDirectory(prefix="ks-gpu-session-") as tmp:
        work = Path(tmp)
        part(session, "kernels", "tests")(run_tests)(session)
        part(session, "kernel_speed", "kernel speed")(kernel_speed)(session, args.quick)
        checkpoint = part(session, "train_step", "training step")(train_step)(session, work)
        part(session, "encoder_eager_graph", "encoder timings")(encoder_timings)(session, args.quick)
        if checkpoint is not None:
            part(session, "trt_export", "engines")(engines)(session, checkpoint, work)
    table = session.feature_table()
    print(f"### GPU features\n\n{table}\n")
    if args.out:
        args.out.write_text("\n".join([*session.sections, "### GPU features\n", table, ""]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
