"""A corpus of short SynthAU videos through `ks-run`: one input after another (--workers 1), N local worker processes
(--workers N) and N actors of a local Ray cluster (--ray auto): wall time side by side, and every run's CSVs equal.

    .venv/bin/python -m benchmarks.corpus_run [--bundle runs/demo/bundle] [--videos 8] [--frames 150] [--rounds 2]

Each run is a fresh `ks-run` process writing into an empty folder (nothing skipped), so its time includes starting
Python, opening the bundle in each worker and, for Ray, starting and stopping the local cluster. The sides are
interleaved (1 N R R N 1 ...) so that the machine's background load falls on each alike; the table prints each
round's seconds and the machine, with its load average before and after.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import ROOT, cores, cpu_model, load_average
from ks_runtime.core.bundle import read_manifest
from ks_runtime.synth.generate import SynthConfig, generate_sequence
from ks_runtime.tools.policy_report import write_lossless_video

FPS = 25.0


def write_corpus(folder: Path, videos: int, frames: int, size: int) -> list[Path]:
    """`videos` SynthAU sequences (tiny set's subjects, seeds 0..) as lossless videos of `frames` frames."""
    return [
        write_lossless_video(
            generate_sequence(SynthConfig(size="tiny", frames=frames, image_size=size, seed=i), i % 4, 0).frames,
            folder / f"synthau_{i:02d}",
            FPS,
        )
        for i in range(videos)
    ]


def sides(workers: int) -> dict[str, list[str]]:
    return {
        "--workers 1": [],
        f"--workers {workers}": ["--workers", str(workers)],
        f"--ray auto --workers {workers}": ["--workers", str(workers), "--ray", "auto"],
    }


def run_side(bundle: Path, videos: list[Path], flags: list[str], out: Path, env: dict[str, str]) -> float:
    argv = [sys.executable, "-m", "ks_runtime.cli", str(bundle), "--out-dir", str(out), "--no-progress", "-q", *flags]
    for video in videos:
        argv += ["--input", str(video)]
    started = time.perf_counter()
    subprocess.run(argv, check=True, env=env)
    return time.perf_counter() - started


def csvs(out: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(out.glob("*.csv"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=ROOT / "runs" / "demo" / "bundle")
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    size = read_manifest(args.bundle).preprocess.size  # the bundle's own frame size: no resizing measured
    with tempfile.TemporaryDirectory(prefix="kscorpus", dir="/tmp") as work:
        work = Path(work)
        videos = write_corpus(work / "videos", args.videos, args.frames, size)
        # An empty RAY_TMPDIR: --ray auto finds no cluster and starts its own (short paths: Ray's sockets need them).
        env = os.environ | {"RAY_TMPDIR": str(work / "ray")}
        env.pop("RAY_ADDRESS", None)
        load_before = load_average()
        seconds: dict[str, list[float]] = {name: [] for name in sides(args.workers)}
        made: dict[str, dict[str, bytes]] = {}
        for round_ in range(args.rounds):
            order = list(sides(args.workers).items())
            for name, flags in order if round_ % 2 == 0 else reversed(order):
                out = work / f"out{round_}_{len(made)}"
                seconds[name].append(run_side(args.bundle, videos, flags, out, env))
                made[f"{name} {round_}"] = csvs(out)
        load_after = load_average()
    same = all(tables == next(iter(made.values())) for tables in made.values())
    print_table(args, seconds, same, load_before, load_after)


def print_table(args, seconds: dict[str, list[float]], same: bool, before: list[float], after: list[float]) -> None:
    frames = args.videos * args.frames
    base = sum(seconds["--workers 1"]) / len(seconds["--workers 1"])
    print(
        f"{args.videos} SynthAU videos x {args.frames} frames ({frames} frames), bundle {args.bundle}; "
        f"{cpu_model()}, {cores()} cores; load average before {before}, after {after}"
    )
    print(f"every run's CSVs byte-identical: {same}\n")
    print("| run | wall s (each round) | mean s | frames/s | vs --workers 1 |")
    print("|---|---|---|---|---|")
    for name, runs in seconds.items():
        mean = sum(runs) / len(runs)
        each = ", ".join(f"{s:.1f}" for s in runs)
        print(f"| `{name}` | {each} | {mean:.1f} | {frames / mean:.0f} | {base / mean:.2f}x |")


if __name__ == "__main__":
    main()
