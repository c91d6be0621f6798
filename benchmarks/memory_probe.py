"""Resident memory of the runtime over a long stream, in a process of its own (no torch, no pytest: only what a
deployment imports), run by bench_memory.py.

    python -m benchmarks.memory_probe BUNDLE --frames 20000 --every 500

Streams SynthAU frames (one 120-frame sequence at the bundle's size, repeated) through `Detector.stream` from a
generator, dropping each result, and prints JSON: VmRSS (KiB, from /proc/self/status) after every `every` frames.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ks_runtime.core.bundle import read_manifest
from ks_runtime.detector import Detector
from ks_runtime.io.sources import ArraySource
from ks_runtime.synth.generate import SynthConfig, generate_sequence


def rss_kib() -> int:
    """This process's resident set size, KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise OSError("/proc/self/status has no VmRSS line")


def repeated(frames: np.ndarray, total: int) -> Iterator[np.ndarray]:
    for i in range(total):
        yield frames[i % len(frames)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--every", type=int, default=500)
    args = parser.parse_args(argv)

    manifest = read_manifest(args.bundle)
    frames = generate_sequence(SynthConfig(size="tiny", image_size=manifest.preprocess.size), 0, 0).frames
    detector = Detector(manifest, policy="last", face="aligned", batch_size=8)
    samples = [(0, rss_kib())]
    started = time.perf_counter()
    count = 0
    for count, _ in enumerate(
        detector.stream(ArraySource(repeated(frames, args.frames), fps=25.0, length=args.frames)), start=1
    ):
        if count % args.every == 0:
            samples.append((count, rss_kib()))
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "frames": count,
                "seconds": seconds,
                "samples": samples,
                "engine": detector.engine.describe(),
                "size": manifest.preprocess.size,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
