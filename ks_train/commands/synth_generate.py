"""`ks-train synth-generate`: write a SynthAU set to disk in the generic layout, timed."""

from __future__ import annotations

import argparse
import time

from ks_runtime import commandline
from ks_runtime.core.errors import ConfigError
from ks_runtime.synth.generate import SIZES, SynthConfig, iter_sequences, write_dataset


def register(sub: argparse._SubParsersAction) -> None:
    p = commandline.add_command(sub, "synth-generate", run, help="write a SynthAU set to disk", description=__doc__)
    p.add_argument("--size", choices=tuple(SIZES), default="tiny")
    p.add_argument("--au-set", choices=("bp4d", "disfa"), default="bp4d")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", choices=("png", "jpg"), default="png", help="frame image format (png is lossless)")
    p.add_argument("--labels-only", action="store_true", help="time the label process alone; write nothing")
    p.add_argument("--out", help="output folder (required unless --labels-only)")


def run(args: argparse.Namespace) -> int:
    cfg = SynthConfig(size=args.size, au_set=args.au_set, seed=args.seed)
    shape = cfg.shape
    frames = shape.subjects * shape.tasks * shape.frames
    started = time.perf_counter()
    if args.labels_only:
        for _ in iter_sequences(cfg, render=False):
            pass
    else:
        if not args.out:
            raise ConfigError("--out is required to write a set")
        write_dataset(cfg, args.out, image_format=args.format, progress=not commandline.quiet(args))
    seconds = time.perf_counter() - started
    what = "labels" if args.labels_only else f"frames written to {args.out}"
    commandline.summary(
        args,
        f"SynthAU {args.size} ({shape.subjects} subjects x {shape.tasks} tasks x "
        f"{shape.frames} frames, {shape.image_size} px, {frames} frames): {what} in "
        f"{seconds:.1f} s ({frames / seconds:.0f} frames/s)",
    )
    return 0
