"""`ks-train`: one entry point; each subcommand lives in its own module under ks_train.commands."""

from __future__ import annotations

import argparse
import sys

from ks_runtime import commandline
from ks_train.commands import (
    calibrate,
    evaluate_cmd,
    fit,
    params,
    synth_generate,
    synth_preview,
    synth_scene,
    synth_stats,
)

PROG = "ks-train"
DESCRIPTION = """Train and evaluate Knowledge-Spreader, and generate SynthAU.

-v: debug logging; -q: warnings only, no progress bar and no summary lines (tables and --json still print).
Exit codes: 0 done, 1 an error (config, data, checkpoint; synth-stats: a gated statistic out of tolerance),
2 bad arguments, 130 interrupted."""
# Each module defines `register(subparsers)`, which adds its parser through commandline.add_command.
COMMAND_MODULES = (synth_stats, synth_preview, synth_generate, synth_scene, params, fit, evaluate_cmd, calibrate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commandline.add_common_flags(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    return commandline.dispatch(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
