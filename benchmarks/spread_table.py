"""Tabulate finished training runs by setting: final mean F1 with its standard error, the difference from the
first setting with the difference's standard error (Welch), S_a alone and TT alone, and the last epoch's
pseudo-label accuracies (all, accepted by the gate, a confidence gate accepting the same share).

    .venv/bin/python benchmarks/spread_table.py --branches \\
        --group "frame-only=runs/ceil/base*/frame-0.1-s*" --group "KS=runs/ceil/base*/ks-0.1-s*" ...

A group is NAME=GLOB[,GLOB...] of run folders (each with metrics.jsonl, written by `ks-train fit`). With
--branches, each KS run is also scored by `ks-train eval --fusion sa|tt --no-pseudo` (S_a's and TT's own
probabilities), cached in the run folder as branches.json, so a second call costs nothing.
"""

from __future__ import annotations

import argparse
import glob
import json
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

PL_FIELDS = ("ppl_accept_rate", "pl_acc_all", "pl_acc_accepted", "pl_acc_confidence_same_share")


@dataclass
class RunResult:
    path: Path
    mean_f1: float
    last_epoch: dict
    branches: dict[str, float]


def read_run(path: Path, branches: bool) -> RunResult | None:
    """A finished run's final evaluation (at its config's last epoch), or None for a run still going or cut short."""
    metrics = path / "metrics.jsonl"
    if not metrics.is_file():
        return None
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    evals = [r for r in records if "mean_f1" in r]
    config = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}
    if not evals or evals[-1]["epoch"] != config.get("train", {}).get("epochs"):
        return None
    scored = branch_f1(path) if branches and config.get("method") == "ks" else {}
    return RunResult(path, evals[-1]["mean_f1"], evals[-1], scored)


def branch_f1(path: Path) -> dict[str, float]:
    """{"sa": F1, "tt": F1}: each branch's own dense F1 on the test part, cached in path/branches.json."""
    cache = path / "branches.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    scores = {}
    for fusion in ("sa", "tt"):
        cmd = [sys.executable, "-m", "ks_train.cli", "eval", "--ckpt", str(path / "last.pt"), "--fusion", fusion]
        out = subprocess.run([*cmd, "--no-pseudo", "--json"], check=True, capture_output=True, text=True).stdout
        scores[fusion] = json.loads(out)["mean_f1"]
    cache.write_text(json.dumps(scores) + "\n")
    return scores


def mean_se(values: list[float]) -> tuple[float, float]:
    """The mean and its standard error (nan with fewer than 2 values)."""
    if not values:
        return float("nan"), float("nan")
    if len(values) < 2:
        return values[0], float("nan")
    return statistics.mean(values), statistics.stdev(values) / len(values) ** 0.5


def cell(values: list[float]) -> str:
    mean, se = mean_se(values)
    if mean != mean:
        return "-"
    return f"{mean:.3f}" if se != se else f"{mean:.3f} ± {se:.3f}"


def difference(values: list[float], reference: list[float]) -> str:
    """values' mean minus reference's, with the Welch standard error of the difference."""
    if len(values) < 2 or len(reference) < 2:
        return "-"
    (a, se_a), (b, se_b) = mean_se(values), mean_se(reference)
    return f"{a - b:+.3f} ± {(se_a**2 + se_b**2) ** 0.5:.3f}"


def table(groups: dict[str, list[RunResult]]) -> str:
    rows = [
        "| setting | seeds | mean F1 ± SE | vs first ± SE | S_a alone | TT alone | accepted | PL acc all | "
        "PL acc accepted | PL acc confidence, same share |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    reference = [r.mean_f1 for r in next(iter(groups.values()))]
    for name, runs in groups.items():
        f1 = [r.mean_f1 for r in runs]
        sa = [r.branches["sa"] for r in runs if "sa" in r.branches]
        tt = [r.branches["tt"] for r in runs if "tt" in r.branches]
        pl = [cell([r.last_epoch[k] for r in runs if k in r.last_epoch]) for k in PL_FIELDS]
        rows.append(
            f"| {name} | {len(runs)} | {cell(f1)} | {difference(f1, reference)} | {cell(sa)} | {cell(tt)} | "
            + " | ".join(pl)
            + " |"
        )
    return "\n".join(rows)


def parse_group(spec: str, branches: bool) -> tuple[str, list[RunResult]]:
    name, _, patterns = spec.partition("=")
    if not name or not patterns:
        raise SystemExit(f"--group wants NAME=GLOB[,GLOB...], got {spec!r}")
    paths = sorted({Path(p) for pattern in patterns.split(",") for p in glob.glob(pattern) if Path(p).is_dir()})
    runs = [r for r in (read_run(p, branches) for p in paths) if r is not None]
    if not runs:
        raise SystemExit(f"group {name!r}: no finished run matches {patterns!r}")
    return name, runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", action="append", required=True, help="NAME=GLOB[,GLOB...] of run folders")
    parser.add_argument("--branches", action="store_true", help="score S_a and TT alone (ks-train eval, cached)")
    args = parser.parse_args(argv)
    groups = dict(parse_group(spec, args.branches) for spec in args.group)
    print(table(groups))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
