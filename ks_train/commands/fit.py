"""`ks-train fit`: train KS or the frame-only baseline on a dataset's fold."""

from __future__ import annotations

import argparse
import json
import logging

from ks_runtime import commandline
from ks_train.config import METHODS, PROFILES, load_config
from ks_train.model.backbones import load_backbone_weights
from ks_train.trainer import LOADER_TIMEOUT, Trainer

log = logging.getLogger("ks_train.fit")


def register(sub: argparse._SubParsersAction) -> None:
    p = commandline.add_command(sub, "fit", run, help="train a model", description=__doc__)
    p.add_argument("--config", default="synth-cpu", help=f"a profile ({', '.join(PROFILES)}) or a JSON file")
    p.add_argument("--method", choices=METHODS, help="ks (default) or the frame-only baseline")
    p.add_argument("--data", help="dataset root (default: SynthAU generated in memory)")
    p.add_argument("--dataset", choices=("synth", "bp4d", "disfa", "bp4dplus", "generic"))
    labels = p.add_mutually_exclusive_group()
    labels.add_argument("--labels", type=float, metavar="RATIO", help="fraction of training labels kept")
    labels.add_argument("--every", type=int, metavar="K", help="keep the label of every K-th frame")
    p.add_argument("--fold", type=int, choices=(1, 2, 3))
    p.add_argument("--epochs", type=int)
    p.add_argument("--init", metavar="PATH", help="local backbone weights to start from (weights_only load)")
    p.add_argument("--resume", metavar="DIR", help="continue the run whose last.pt is in DIR")
    p.add_argument("--until-epoch", type=int, help="stop after this epoch (the schedule stays the config's)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override any config field, e.g. --set train.batch_size=16 (repeatable)",
    )
    p.add_argument(
        "--loader-timeout",
        type=float,
        default=LOADER_TIMEOUT,
        metavar="SECONDS",
        help=f"stop with an error when a DataLoader worker sends no batch for this long (default {LOADER_TIMEOUT:g}; "
        "0 waits forever)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", required=True, help="run folder: checkpoints, metrics.jsonl, config.json")


def overrides_from_args(args: argparse.Namespace) -> list[str]:
    overrides = list(args.set)
    quoted = json.dumps  # paths and names as JSON strings, so quotes and backslashes survive
    if args.method:
        overrides.append(f"method={quoted(args.method)}")
    if args.data:
        overrides.append(f"data.root={quoted(args.data)}")
        overrides.append(f"data.dataset={quoted(args.dataset or 'generic')}")
    elif args.dataset:
        overrides.append(f"data.dataset={quoted(args.dataset)}")
    if args.labels is not None:
        overrides += [f"data.label_ratio={args.labels}", "data.every_k=0"]
    if args.every is not None:
        overrides.append(f"data.every_k={args.every}")
    if args.fold:
        overrides.append(f"data.fold={args.fold}")
    if args.epochs is not None:  # --epochs 0 goes on to the range check rather than being dropped
        overrides.append(f"train.epochs={args.epochs}")
    return overrides


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, overrides_from_args(args))
    trainer = Trainer(
        cfg,
        args.out,
        device=args.device,
        progress=not (args.no_progress or commandline.quiet(args)),
        loader_timeout=args.loader_timeout,
    )
    if args.init:
        report = load_backbone_weights(trainer.model.backbone, args.init)
        log.info(
            "--init %s: %d tensors loaded, missing %s, unexpected %s",
            args.init,
            report.loaded,
            report.missing,
            report.unexpected,
        )
    if args.resume:
        trainer.resume(args.resume)
    history = trainer.fit(until_epoch=args.until_epoch)
    if history and "mean_f1" in history[-1]:
        last = history[-1]
        commandline.summary(
            args,
            f"epoch {last['epoch']}: mean F1 {last['mean_f1']:.3f} (all-positive floor "
            f"{last['floor']:.3f}); best {trainer.best_f1:.3f}; checkpoints in {args.out}",
        )
    return 0
