"""`ks-train`: one entry point; each subcommand lives in its own module under ks_train.commands."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ks_runtime.core.errors import KSError

# Each module defines `register(subparsers)`, which adds its parser and sets `run=` as a default.
COMMAND_MODULES = (
    "synth_stats",
    "synth_preview",
    "synth_generate",
    "synth_scene",
    "params",
    "fit",
    "evaluate_cmd",
    "calibrate",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ks-train", description="Train and evaluate Knowledge-Spreader.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"ks_train.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.run(args) or 0)
    except KSError as error:
        print(f"ks-train {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"ks-train {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
