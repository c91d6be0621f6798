"""`ks-train params`: trainable parameter count of a profile's model, with a per-module breakdown."""

from __future__ import annotations

import argparse
import json

from ks_runtime import commandline
from ks_train.config import PROFILES, load_config
from ks_train.methods import create_method
from ks_train.model.ks import parameter_breakdown


def register(sub: argparse._SubParsersAction) -> None:
    p = commandline.add_command(sub, "params", run, help="count a model's trainable parameters", description=__doc__)
    p.add_argument("--config", default="paper-r50", help=f"a profile ({', '.join(PROFILES)}) or a JSON file")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.set)
    parts = parameter_breakdown(create_method(cfg).build_model())
    if args.json:
        print(
            json.dumps(
                {
                    "config": cfg.name,
                    "method": cfg.method,
                    "n_aus": cfg.model.n_aus,
                    "backbone": cfg.model.backbone,
                    "parameters": parts,
                },
                indent=1,
            )
        )
    else:
        print(f"{cfg.name} ({cfg.method}, {cfg.model.backbone}, U={cfg.model.n_aus}, n={cfg.model.clip_len})")
        for name, count in parts.items():
            print(f"  {name:<18}{count:>13,}")
    return 0
