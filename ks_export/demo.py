"""`make demo`: the main job end to end on the built-in SynthAU data.

SynthAU `small` is generated in memory (its label statistics printed and a preview written), KS is trained
with the `demo` profile (synth-cpu on a shorter schedule; fold 1, 10% labels) and evaluated densely, exported
to a verified ONNX bundle (with its INT8 variant and a Triton repository), and a held-out test video is
streamed through the bundle by the torch-free runtime. Every artefact lands in runs/demo/.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

log = logging.getLogger("ks_export.demo")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ks_export.demo", description=__doc__)
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--config", default="demo")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from ks_runtime.synth.generate import GENERATOR_VERSION
    from ks_runtime.synth.preview import render_preview
    from ks_runtime.synth.stats import label_statistics, set_report
    from ks_train.commands.synth_stats import format_report
    from ks_train.config import load_config
    from ks_train.trainer import Trainer, load_experiment_data

    cfg = load_config(args.config, args.set)
    started = time.perf_counter()
    print(f"== SynthAU {cfg.data.synth_size} (generator {GENERATOR_VERSION}), generated in memory")
    dataset = load_experiment_data(cfg, progress=True)
    frames = sum(len(s) for s in dataset.sequences)
    print(f"{len(dataset.sequences)} sequences, {frames} frames, {cfg.data.image_size} px network input, "
          f"generated in {time.perf_counter() - started:.0f} s")
    stats = label_statistics([s.labels for s in dataset.sequences], dataset.au_set, fps=25.0)
    print(format_report(set_report(stats), "label statistics of this set (for information; the label process "
                        "itself is gated by `ks-train synth-stats`)", 0.0))
    preview = render_preview(out / "synthau_preview.png", au_set=cfg.data.au_set, size=96, seed=cfg.data.synth_seed)
    print(f"preview: {preview}")

    trainer = Trainer(cfg, out / "ks", device="cpu", dataset=dataset)
    stride = trainer.cfg.model.clip_stride  # resolved: 0 in the profile means the label spacing
    print(f"\n== Training KS ({cfg.name}: {cfg.model.backbone} backbone, n={cfg.model.clip_len} slots {stride} "
          f"frame{'s' if stride > 1 else ''} apart, fold {cfg.data.fold}, {cfg.data.label_ratio:.0%} labels, "
          f"{cfg.train.epochs} epochs, warm-up {cfg.train.warmup_epochs})")
    trained = time.perf_counter()
    history = trainer.fit()
    for record in history:
        accept = record.get("ppl_accept_rate", float("nan"))
        f1 = f"{record['mean_f1']:.3f}" if "mean_f1" in record else "  -  "  # evaluated every eval_every epochs
        print(f"epoch {record['epoch']:>2}: loss {record['loss']:.3f}  L_PL {record.get('L_PL', 0.0):.3f}  "
              f"PPL accepts {accept:.1%}  pseudo-label acc {record.get('pl_acc_accepted', float('nan')):.3f}  "
              f"test F1 {f1}")
    if not any("L_PL" in r for r in history):
        print("error: L_PL never ran; lengthen the schedule or shorten the warm-up", file=sys.stderr)
        return 1
    print(f"trained in {time.perf_counter() - trained:.0f} s")

    report = trainer.evaluate(policy="shift")
    print(f"\n== Dense test on fold {cfg.data.fold}'s test part (policy shift), last epoch")
    print(report.table())
    print(f"\nmean F1 {report.mean:.3f} against the all-positive floor {report.mean_floor:.3f} "
          f"(SynthAU {GENERATOR_VERSION})")

    from ks_export.export import export_bundle, verify_bundle
    from ks_runtime.tools.policy_report import demo_stream

    print(f"\n== Exporting {out / 'ks' / 'last.pt'} to {out / 'bundle'}")
    export = export_bundle(out / "ks" / "last.pt", out / "bundle", int8=True, triton=True, progress=True)
    print(export.text())
    print(verify_bundle(out / "bundle"))

    print()
    demo_stream(out / "bundle", out / "stream")
    print(f"\nwhole demo {time.perf_counter() - started:.0f} s; artefacts in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
