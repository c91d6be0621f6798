"""`ks-train calibrate`: SynthAU's difficulty calibration runs (docs/synthau.md, Calibration).

Each run trains the frame-only model (`--method frame`) on 100% of the labels of SynthAU `small`, fold 1,
with one named setting of the generator's difficulty knobs (or of the frame model's augmentation), and appends
its per-epoch test F1, the all-positive floor and the F1 on three training subjects to a JSONL file: the
record behind the calibration table in docs/synthau.md. Never run against KS or any semi-supervised method.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ks_runtime import commandline
from ks_runtime.core.errors import ConfigError
from ks_runtime.synth.generate import GENERATOR_VERSION
from ks_train.config import ExperimentConfig, load_config
from ks_train.trainer import Trainer, load_experiment_data

OFF = [
    "data.synth_nuisance.head_pose_deg=0.0",
    "data.synth_nuisance.jitter_px=0.0",
    "data.synth_nuisance.lighting=0.0",
    "data.synth_nuisance.noise=0.0",
    "data.synth_nuisance.colour_cast=0.0",
    "data.synth_nuisance.blur_prob=0.0",
    "data.synth_nuisance.jpeg_prob=0.0",
    "data.synth_nuisance.occlusion_prob=0.0",
]
# Generator 2.0's strengths, before the calibration (the shape of `small` is the current one)
V20 = [
    "data.synth_quirk_scale=1.0",
    "data.synth_nuisance.head_pose_deg=15.0",
    "data.synth_nuisance.jitter_px=1.0",
    "data.synth_nuisance.lighting=0.25",
    "data.synth_nuisance.noise=3.0",
    "data.synth_nuisance.colour_cast=0.04",
    "data.synth_nuisance.blur_prob=0.05",
    "data.synth_nuisance.jpeg_prob=0.1",
    "data.synth_nuisance.occlusion_prob=0.15",
]
MID = ["data.synth_quirk_scale=0.5", "data.synth_nuisance.head_pose_deg=5.0", "data.synth_nuisance.jitter_px=0.3"]
# name, what it changes (the calibration table's column), and its config overrides, in one place
_DEFINED: list[tuple[str, str, list[str]]] = [
    ("default", "the frozen strengths", []),
    ("easy", "no quirks, no nuisance", ["data.synth_quirk_scale=0.0"] + OFF),
    ("mid", "quirks 0.5, head pose 5 deg, jitter 0.3 px", MID),
    ("v2.0-strengths", "generator 2.0's strengths (quirks 1, pose 15 deg, jitter 1 px, ...)", V20),
    ("rotation-45", "the paper's +-45 deg rotation augmentation", ["train.augment.rotate_deg=45.0"]),
    (
        "no-augmentation",
        "no flip or colour jitter",
        [
            "train.augment.flip_p=0.0",
            "train.augment.brightness=0.0",
            "train.augment.contrast=0.0",
            "train.augment.saturation=0.0",
        ],
    ),
    ("grey", "half the clips turned grey", ["train.augment.grayscale_p=0.5"]),
    ("expressive-1.8", "AUs 1.8 times as large", ["data.synth_expressiveness=1.8"]),
    # the upper bound of what the knobs can buy
    (
        "oracle",
        "no quirks, no nuisance, AUs 4 times as large",
        ["data.synth_quirk_scale=0.0", "data.synth_expressiveness=4.0"] + OFF,
    ),
]
SETTINGS: dict[str, list[str]] = {name: overrides for name, _, overrides in _DEFINED}
DESCRIPTIONS: dict[str, str] = {name: what for name, what, _ in _DEFINED}


def probe_subjects(train_subjects: list[str]) -> set[str]:
    """Three training subjects (first, middle, last) whose F1 shows how much of the gap is generalisation."""
    ordered = sorted(set(train_subjects))
    return {ordered[0], ordered[len(ordered) // 2], ordered[-1]}


def register(sub: argparse._SubParsersAction) -> None:
    p = commandline.add_command(
        sub,
        "calibrate",
        run,
        help="SynthAU difficulty calibration runs (frame-only model, 100%% labels)",
        description=__doc__,
    )
    p.add_argument(
        "settings", nargs="*", metavar="SETTING", help=f"named settings to run, in order: {', '.join(SETTINGS)}"
    )
    p.add_argument(
        "--table",
        action="store_true",
        help="print the runs recorded in --out as the calibration table's Markdown rows, then exit",
    )
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--size", default="small", help="SynthAU size (the calibration is defined on `small`)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="an extra config override applied to every setting (recorded with the run)",
    )
    p.add_argument("--out", default="runs/calibration.jsonl", help="JSONL file the results are appended to")


def table_rows(records: list[dict]) -> list[str]:
    """One Markdown row per recorded run, in the calibration table's columns."""
    rows = []
    for r in records:
        last = r["epochs"][-1]
        curve = " ".join(f"{e['test_f1']:.3f}" for e in r["epochs"])
        rows.append(
            f"| `{r['setting']}` ({r['generator']}) | {DESCRIPTIONS.get(r['setting'], '')} | {curve} | "
            f"{r['best_test_f1']:.3f} | {last['floor']:.3f} | {last['train_subjects_f1']:.3f} | "
            f"`{r['command']}` |"
        )
    return rows


# The schedule and weighting the 2.1 calibration ran with (one pass over the frames an epoch, 40 frames a batch,
# fp32, balanced positives), pinned so that changes to synth-cpu do not move the frozen table.
PINNED = [
    "train.batch_size=8",
    "train.batches_per_epoch=0",
    "train.amp=false",
    'loss.positive_weighting="balanced"',
]


def run(args: argparse.Namespace) -> int:
    if args.table:
        records = [json.loads(line) for line in Path(args.out).read_text().splitlines() if line.strip()]
        print("\n".join(table_rows(records)))
        return 0
    unknown = [name for name in args.settings if name not in SETTINGS]
    if unknown or not args.settings:
        raise ConfigError(
            f"{'unknown setting ' + ', '.join(unknown) if unknown else 'no setting'}; "
            f"known: {', '.join(SETTINGS)} (or --table)"
        )
    base = ['method="frame"', "data.label_ratio=1.0", "data.every_k=0", f"train.epochs={args.epochs}"]
    base += ["train.workers=0", f'data.synth_size="{args.size}"', *PINNED]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.settings:
        record = calibrate_setting(args, name, load_config("synth-cpu", base + SETTINGS[name] + args.overrides), out)
        with open(out, "a") as handle:
            handle.write(json.dumps(record) + "\n")
    return 0


def calibrate_setting(args: argparse.Namespace, name: str, cfg: ExperimentConfig, out: Path) -> dict:
    """Train the frame-only model on one setting, scoring the test part and some training subjects each epoch."""
    started = time.perf_counter()
    trainer = Trainer(
        cfg, out.parent / f"calibration-{name}", device="cpu", dataset=load_experiment_data(cfg), progress=False
    )
    probe_set = probe_subjects([s.subject for s in trainer.train_seqs])
    probe = [s for s in trainer.train_seqs if s.subject in probe_set]
    epochs = []
    for _ in range(cfg.train.epochs):
        trainer.train_epoch()
        trainer.epoch += 1
        test, train = trainer.evaluate(), trainer.evaluate(sequences=probe)
        epochs.append(
            {"epoch": trainer.epoch, "test_f1": test.mean, "floor": test.mean_floor, "train_subjects_f1": train.mean}
        )
        commandline.summary(
            args,
            f"{name} epoch {trainer.epoch}: test F1 {test.mean:.3f} "
            f"(floor {test.mean_floor:.3f}), training subjects {train.mean:.3f}",
        )
    command = f"ks-train calibrate {name} --epochs {args.epochs} --size {args.size}"
    return {
        "setting": name,
        "overrides": SETTINGS[name] + args.overrides,
        "generator": GENERATOR_VERSION,
        "epochs": epochs,
        "best_test_f1": max(e["test_f1"] for e in epochs),
        "seconds": time.perf_counter() - started,
        "size": args.size,
        "command": " ".join([command, *(f"--set {o}" for o in args.overrides)]),
    }
