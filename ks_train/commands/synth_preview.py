"""`ks-train synth-preview`: one PNG showing every AU of a set at apex beside neutral, a labelled sequence, the
texture cues with and without their texture, the image nuisances, and scene-mode frames with their true face
box and eye centres."""

from __future__ import annotations

import argparse

from ks_runtime import commandline
from ks_runtime.core.au import AU_SETS
from ks_runtime.core.errors import ConfigError
from ks_runtime.synth.preview import render_preview


def register(sub: argparse._SubParsersAction) -> None:
    p = commandline.add_command(sub, "synth-preview", run, help="draw a SynthAU preview PNG", description=__doc__)
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--au-set", default="bp4d", choices=sorted(AU_SETS), help="AU set (default: bp4d)")
    p.add_argument("--size", type=int, default=96, help="face image size in pixels (default: 96)")
    p.add_argument("--seed", type=int, default=0, help="identities and sequence seed (default: 0)")


def run(args: argparse.Namespace) -> int:
    if not 32 <= args.size <= 512:
        raise ConfigError(f"--size {args.size}: use 32 to 512 pixels")
    path = render_preview(args.out, au_set=args.au_set, size=args.size, seed=args.seed)
    commandline.summary(args, f"wrote {path}")
    return 0
