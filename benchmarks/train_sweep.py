"""Train every (method, label ratio, seed) of a grid side by side and tabulate the final mean F1.

    .venv/bin/python benchmarks/train_sweep.py --config demo --methods ks frame --labels 0.1 \\
        --seeds 0 1 2 3 --jobs 4 --threads 1 [--device cuda] [--deadline 900] --out runs/sweep

Each run is `ks-train fit ... --set train.seed=S --out OUT/<method>-<labels>-s<S>`, its log beside it. Runs
start in the grid's order, `--jobs` at a time, each with `--threads` OpenMP threads. At `--deadline` seconds
the runs still going are stopped, and the table marks them unfinished with the last epoch they evaluated.
The table (also OUT/summary.md and OUT/summary.json) gives the final epoch's mean F1 per seed, the mean and
the sample standard deviation: single runs differ by 2-3 points with fixed data, so compare means.

    .venv/bin/python benchmarks/train_sweep.py --tabulate REF/summary.json[:METHOD] OTHER/summary.json ...

puts finished sweeps side by side: each group's mean and sd, and its difference from the first group with the
difference's standard error (Welch), so "ahead by more than noise" is a number, not a judgement.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Run:
    method: str
    labels: float
    seed: int
    out: Path
    process: subprocess.Popen | None = None
    started: float = 0.0
    seconds: float = 0.0
    stopped: bool = False
    evals: list[dict] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.method}-{self.labels:g}-s{self.seed}"

    def command(self, args: argparse.Namespace) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "ks_train.cli",
            "fit",
            "--config",
            args.config,
            "--method",
            self.method,
            "--labels",
            f"{self.labels:g}",
            "--device",
            args.device,
            "--no-progress",
            "--set",
            f"train.seed={self.seed}",
            "--out",
            str(self.out),
        ]
        for item in args.set:
            cmd += ["--set", item]
        return cmd

    def read_evals(self) -> None:
        metrics = self.out / "metrics.jsonl"
        if metrics.is_file():
            records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
            self.evals = [r for r in records if "mean_f1" in r]


def launch(run: Run, args: argparse.Namespace) -> None:
    run.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONUNBUFFERED": "1"}
    log = (run.out.parent / f"{run.name}.log").open("w")
    run.process = subprocess.Popen(run.command(args), stdout=log, stderr=subprocess.STDOUT, env=env)
    run.started = time.perf_counter()


def summarise(runs: list[Run], args: argparse.Namespace) -> tuple[str, dict]:
    rows = [
        "| method | labels | seeds | per seed (final mean F1) | mean | sd | minutes a run |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    data: dict = {
        "config": args.config,
        "device": args.device,
        "jobs": args.jobs,
        "threads": args.threads,
        "set": args.set,
        "runs": [],
    }
    for method in args.methods:
        for labels in args.labels:
            group = [r for r in runs if r.method == method and r.labels == labels]
            cells, finals, minutes = [], [], []
            for r in group:
                r.read_evals()
                done = r.process is not None and r.process.returncode == 0 and not r.stopped and r.evals
                last = r.evals[-1] if r.evals else None
                if done:
                    finals.append(last["mean_f1"])
                    minutes.append(r.seconds / 60)
                    cells.append(f"{last['mean_f1']:.3f}")
                elif last is not None:
                    cells.append(f"({last['mean_f1']:.3f} at epoch {last['epoch']}, unfinished)")
                else:
                    cells.append("unfinished" if r.stopped or r.process is None else f"failed ({r.name}.log)")
                data["runs"].append(
                    {
                        "name": r.name,
                        "method": method,
                        "labels": labels,
                        "seed": r.seed,
                        "finished": bool(done),
                        "seconds": round(r.seconds, 1),
                        "evals": [{"epoch": e["epoch"], "mean_f1": e["mean_f1"]} for e in r.evals],
                    }
                )
            mean = f"{statistics.mean(finals):.3f}" if finals else "-"
            sd = f"{statistics.stdev(finals):.3f}" if len(finals) > 1 else "-"
            wall = f"{statistics.mean(minutes):.1f}" if minutes else "-"
            rows.append(
                f"| {method} | {labels:g} | {len(finals)}/{len(group)} | {' / '.join(cells)} | {mean} | {sd} | {wall} |"
            )
    return "\n".join(rows), data


def tabulate(paths: list[Path]) -> str:
    """Groups (file, method, labels) of finished runs; each against the first group."""
    groups = []
    for spec in paths:
        path, _, only = str(spec).partition(":")  # FILE:METHOD takes one method's runs from a sweep
        data = json.loads(Path(path).read_text())
        variant = " ".join(data.get("set") or []) or "defaults"
        keys = dict.fromkeys((r["method"], r["labels"]) for r in data["runs"] if r["method"] == (only or r["method"]))
        for method, labels in keys:
            finals = [
                r["evals"][-1]["mean_f1"]
                for r in data["runs"]
                if r["method"] == method and r["labels"] == labels and r["finished"] and r["evals"]
            ]
            groups.append((f"{method}, {variant}", labels, finals))
    rows = [
        "| run | labels | seeds | mean F1 | sd | vs first | standard error |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    _, _, ref = groups[0]
    for name, labels, finals in groups:
        if len(finals) < 2:  # no spread to judge by: a sweep cut short by its deadline
            mean = f"{statistics.mean(finals):.3f}" if finals else "-"
            rows.append(f"| {name} | {labels:g} | {len(finals)} | {mean} | - | - | - |")
            continue
        mean, sd = statistics.mean(finals), statistics.stdev(finals)
        if len(ref) < 2:
            rows.append(f"| {name} | {labels:g} | {len(finals)} | {mean:.3f} | {sd:.3f} | - | - |")
            continue
        diff = mean - statistics.mean(ref)
        se = (sd**2 / len(finals) + statistics.stdev(ref) ** 2 / len(ref)) ** 0.5
        rows.append(f"| {name} | {labels:g} | {len(finals)} | {mean:.3f} | {sd:.3f} | {diff:+.3f} | {se:.3f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "--tabulate":
        if len(argv) < 2:
            raise SystemExit("--tabulate needs summary.json files")
        print(tabulate([Path(a) for a in argv[1:]]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="demo")
    parser.add_argument("--methods", nargs="+", default=["ks", "frame"], choices=("ks", "frame"))
    parser.add_argument("--labels", nargs="+", type=float, default=[0.1])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time")
    parser.add_argument("--threads", type=int, default=1, help="OpenMP threads a run")
    parser.add_argument("--deadline", type=float, default=None, help="seconds; stop what is still running")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tabulate", nargs="+", type=Path, help="(first argument) tabulate summary.json files")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.threads < 1:
        parser.error("--jobs and --threads must be at least 1")

    args.out.mkdir(parents=True, exist_ok=True)
    # Seeds innermost-last: the first wave covers every method and ratio before any extra seed.
    runs = [Run(m, r, s, args.out / f"{m}-{r:g}-s{s}") for s in args.seeds for r in args.labels for m in args.methods]
    waiting, running = list(runs), []
    began = time.perf_counter()
    while waiting or running:
        late = args.deadline is not None and time.perf_counter() - began > args.deadline
        while waiting and len(running) < args.jobs and not late:
            run = waiting.pop(0)
            launch(run, args)
            running.append(run)
            print(f"started {run.name}", flush=True)
        if late:
            waiting.clear()
            for run in running:
                run.process.terminate()
                run.stopped = True
        for run in list(running):
            if run.process.poll() is not None:
                run.seconds = time.perf_counter() - run.started
                running.remove(run)
                print(
                    f"{'stopped' if run.stopped else 'finished'} {run.name} "
                    f"(exit {run.process.returncode}, {run.seconds / 60:.1f} min)",
                    flush=True,
                )
        time.sleep(2)
    table, data = summarise(runs, args)
    data["wall_seconds"] = round(time.perf_counter() - began, 1)
    (args.out / "summary.md").write_text(table + "\n")
    (args.out / "summary.json").write_text(json.dumps(data, indent=2) + "\n")
    print(table)
    return 0 if all(r["finished"] for r in data["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
