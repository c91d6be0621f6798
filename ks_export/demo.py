"""`make demo`: the main job end to end on the built-in SynthAU data.

The CPU's capabilities come first, with the plan that fits them in 15 minutes on 2 cores (ks_train/machine.py):
the `demo` profile under bf16 autocast on a CPU with AMX, else the same model in fp32 on a shorter schedule
(`demo-fp32`); KS_DEMO_PLAN=fp32 | bf16 (or --plan) forces one. SynthAU `small` is generated in memory
(its label statistics printed and a preview written), KS is trained (fold 1, 10% labels) and evaluated densely,
exported to a verified ONNX bundle (with its INT8 variant and a Triton repository), and a held-out test video is
streamed through the bundle by the torch-free runtime. Every artefact lands in runs/demo/.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import torch

from ks_export.export import export_bundle, verify_bundle
from ks_runtime.synth.generate import GENERATOR_VERSION
from ks_runtime.synth.preview import render_preview
from ks_runtime.synth.stats import label_statistics, set_report
from ks_runtime.tools.policy_report import demo_stream
from ks_train.commands.synth_stats import format_report
from ks_train.config import ExperimentConfig, load_config
from ks_train.data.base import AUDataset
from ks_train.machine import PLAN_ENV, DemoPlan, machine_lines, plan_demo, read_cpu
from ks_train.trainer import Trainer, load_experiment_data

log = logging.getLogger("ks_export.demo")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ks_export.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--config", default="demo")
    parser.add_argument(
        "--plan",
        default=os.environ.get(PLAN_ENV, "auto"),
        choices=("auto", "bf16", "fp32"),
        help=f"training precision and schedule (default: ${PLAN_ENV}, else auto: by the CPU flags)",
    )
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    return parser.parse_args(argv)


def machine_plan(force: str) -> DemoPlan:
    """Print the CPU, its flags, the torch threads, the precision, the schedule and the expected time."""
    cpu = read_cpu()
    plan = plan_demo(cpu, torch.get_num_threads(), force)
    print("== Machine")
    for line in machine_lines(cpu, plan):
        print(line)
    return plan


def generate(cfg: ExperimentConfig, out: Path) -> AUDataset:
    """SynthAU in memory, its label statistics and a preview picture."""
    started = time.perf_counter()
    print(f"\n== SynthAU {cfg.data.synth_size} (generator {GENERATOR_VERSION}), generated in memory")
    dataset = load_experiment_data(cfg, progress=True)
    frames = sum(len(s) for s in dataset.sequences)
    print(
        f"{len(dataset.sequences)} sequences, {frames} frames, {cfg.data.image_size} px network input, "
        f"generated in {time.perf_counter() - started:.0f} s"
    )
    stats = label_statistics([s.labels for s in dataset.sequences], dataset.au_set, fps=25.0)
    print(
        format_report(
            set_report(stats),
            "label statistics of this set (for information; the label process "
            "itself is gated by `ks-train synth-stats`)",
            0.0,
        )
    )
    preview = render_preview(out / "synthau_preview.png", au_set=cfg.data.au_set, size=96, seed=cfg.data.synth_seed)
    print(f"preview: {preview}")
    return dataset


def train(cfg: ExperimentConfig, out: Path, dataset: AUDataset, plan: DemoPlan) -> Trainer | None:
    """Train KS and print a row per epoch; None when the schedule never reached L_PL."""
    trainer = Trainer(cfg, out / "ks", device="cpu", dataset=dataset)
    stride = trainer.cfg.model.clip_stride  # resolved: 0 in the profile means the label spacing
    precision = {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}[trainer.amp_dtype]
    print(
        f"\n== Training KS ({cfg.name}, schedule {plan.schedule.name}: {cfg.model.backbone} backbone, "
        f"n={cfg.model.clip_len} slots {stride} frame{'s' if stride > 1 else ''} apart, fold {cfg.data.fold}, "
        f"{cfg.data.label_ratio:.0%} labels, {cfg.train.epochs} epochs of {trainer.batches_per_epoch} steps, "
        f"warm-up {cfg.train.warmup_epochs}, {precision})"
    )
    if precision != plan.precision:
        print(f"note: torch trains in {precision}, not the planned {plan.precision}; the expected time is off")
    started = time.perf_counter()
    history = trainer.fit()
    for record in history:
        print(epoch_row(record))
    if not any("L_PL" in r for r in history):
        print("error: L_PL never ran; lengthen the schedule or shorten the warm-up", file=sys.stderr)
        return None
    print(f"trained in {time.perf_counter() - started:.0f} s (expected ~{plan.training_seconds:.0f} s)")
    return trainer


def epoch_row(record: dict) -> str:
    accept = record.get("ppl_accept_rate", float("nan"))
    f1 = f"{record['mean_f1']:.3f}" if "mean_f1" in record else "  -  "  # evaluated every eval_every epochs
    return (
        f"epoch {record['epoch']:>2}: loss {record['loss']:.3f}  L_PL {record.get('L_PL', 0.0):.3f}  "
        f"gate accepts {accept:.1%}  pseudo labels right: accepted {record.get('pl_acc_accepted', float('nan')):.3f}"
        f" all {record.get('pl_acc_all', float('nan')):.3f}  test F1 {f1}"
    )


def dense_test(trainer: Trainer) -> None:
    cfg = trainer.cfg
    report = trainer.evaluate(policy="shift")
    print(f"\n== Dense test on fold {cfg.data.fold}'s test part (policy shift), last epoch")
    print(report.table())
    print(
        f"\nmean F1 {report.mean:.3f} against the all-positive floor {report.mean_floor:.3f} "
        f"(SynthAU {GENERATOR_VERSION})"
    )


def export_and_stream(out: Path) -> None:
    print(f"\n== Exporting {out / 'ks' / 'last.pt'} to {out / 'bundle'}")
    export = export_bundle(out / "ks" / "last.pt", out / "bundle", int8=True, triton=True, progress=True)
    print(export.text())
    print(verify_bundle(out / "bundle"))
    print()
    demo_stream(out / "bundle", out / "stream")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    plan = machine_plan(args.plan)
    # The plan's schedule first, so that --set still overrides it; another --config keeps its own schedule.
    cfg = load_config(args.config, (plan.overrides() if args.config == "demo" else []) + args.set)
    if args.config != "demo" or args.set:
        given = f"--config {args.config}" + "".join(f" --set {s}" for s in args.set)
        print(f"note: the expected time is the plan's schedule's, not that of this run's {given}")
    dataset = generate(cfg, out)
    trainer = train(cfg, out, dataset, plan)
    if trainer is None:
        return 1
    dense_test(trainer)
    export_and_stream(out)
    print(
        f"\nwhole demo {time.perf_counter() - started:.0f} s (expected ~{plan.expected_seconds:.0f} s); "
        f"artefacts in {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
