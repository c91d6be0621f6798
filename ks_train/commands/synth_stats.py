"""`ks-train synth-stats`: SynthAU label statistics beside the BP4D / DISFA targets.

Without --size: a large label-only draw, gated (exit 1 when a rate, phi or median run length is out of
tolerance). With --size: the realised set's labels, printed for information and never failing.
"""

from __future__ import annotations

import argparse
import json
import math
import time

from ks_runtime import commandline
from ks_runtime.core.au import get_au_set
from ks_runtime.core.errors import ConfigError
from ks_runtime.synth import stats
from ks_runtime.synth.generate import SIZES, SynthConfig, iter_sequences
from ks_runtime.synth.stats import Report


def register(sub: argparse._SubParsersAction) -> None:
    p = commandline.add_command(
        sub, "synth-stats", run, help="SynthAU label statistics against the targets", description=__doc__
    )
    p.add_argument("--au-set", choices=("bp4d", "disfa"), default="bp4d")
    p.add_argument("--sequences", type=int, default=2000, help="label-only sequences in the gated draw")
    p.add_argument("--frames", type=int, default=500, help="frames per sequence in the gated draw")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", choices=tuple(SIZES), help="measure this realised set instead (information only)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if args.size:
        measured = stats.label_statistics(_realised_occurrences(args), get_au_set(args.au_set))
        report = stats.set_report(measured, seed=args.seed)
        title = f"SynthAU {args.size} set, {args.au_set}, seed {args.seed}: for information, not gated"
    else:
        if args.sequences < 1 or args.frames < 2:
            raise ConfigError(f"--sequences must be >= 1 and --frames >= 2, got {args.sequences} and {args.frames}")
        report = stats.acceptance_report(get_au_set(args.au_set), args.sequences, args.frames, args.seed)
        title = (
            f"SynthAU label process, {args.au_set}: {args.sequences} label-only sequences "
            f"x {args.frames} frames, seed {args.seed}"
        )
    seconds = time.perf_counter() - started
    if args.json:
        print(json.dumps({**report.to_dict(), "seconds": round(seconds, 2)}, indent=1))
    else:
        print(format_report(report, title, seconds))
    return 0 if report.passed or not report.gated else 1


def _realised_occurrences(args: argparse.Namespace) -> list:
    """Occurrence labels [T, U] of every sequence of the realised set, generated without pixels."""
    cfg = SynthConfig(size=args.size, au_set=args.au_set, seed=args.seed)
    return [sequence.labels for sequence in iter_sequences(cfg, render=False)]


def _number(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    if not math.isfinite(value):
        return "nan"
    return f"{value:.{digits}f}" if abs(value) < 10 else f"{value:.1f}"


def format_report(report: Report, title: str, seconds: float) -> str:
    """A readable table: measured beside target and tolerance, PASS/FAIL on gated rows."""
    lines = [title, f"{'statistic':<44}{'measured':>10}{'target':>10}{'tolerance':>11}  result"]
    for row in report.rows:
        if row.tolerance is None:
            tolerance = ""
        elif row.name.startswith("median run") and row.target:
            tolerance = f"+-{round(100 * row.tolerance / row.target)}%"
        else:
            tolerance = f"+-{row.tolerance:.3f}"
        result = {True: "PASS", False: "FAIL", None: "info"}[row.passed if report.gated else None]
        measured, target = _number(row.measured), _number(row.target)
        lines.append(f"{row.name:<44}{measured:>10}{target:>10}{tolerance:>11}  {result}")
    stats = report.stats
    lines.append(f"{stats.n_sequences} sequences, {stats.n_frames} frames, measured in {seconds:.1f} s")
    if report.gated:
        failed = report.failures
        names = ", ".join(row.name for row in failed)
        lines.append(
            f"FAILED: {len(failed)} gated rows out of tolerance: {names}"
            if failed
            else "PASSED: every gated row within tolerance"
        )
    return "\n".join(lines)
