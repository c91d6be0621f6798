"""Item 8: resident memory over a 20,000-frame stream through the runtime; growth must stay under 1%.

The stream runs in its own process (benchmarks/memory_probe.py: only the runtime's imports, no torch), on the
synth-cpu-sized bundle so that 20,000 frames take seconds, not minutes; the runtime's buffers (rings, queues,
batches) are the same whatever the backbone. Growth is the last sample against the one after the warm-up
(the first 10% of the stream: sessions, arenas and queues reach their working size).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from benchmarks.harness import ROOT, SMALL_MODEL, Row, Target, quick

FRAMES = 20_000
TARGET = Target("<", 1.0, "%")


def test_memory_growth(benchmark, record, small_bundle):
    frames = 2_000 if quick() else FRAMES
    every = max(frames // 40, 1)
    out = {}

    def probe():
        command = [sys.executable, "-m", "benchmarks.memory_probe", str(small_bundle)]
        command += ["--frames", str(frames), "--every", str(every)]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1200, check=True)
        out.update(json.loads(done.stdout.strip().splitlines()[-1]))

    benchmark.group = "8 memory"
    benchmark.pedantic(probe, rounds=1, iterations=1)
    index, rss = (np.asarray(v) for v in zip(*out["samples"], strict=True))
    warm = int(np.searchsorted(index, frames // 10))
    baseline, last, peak = int(rss[warm]), int(rss[-1]), int(rss[warm:].max())
    growth = 100 * (last - baseline) / baseline
    slope = np.polyfit(index[warm:], rss[warm:], 1)[0] * 1000 if len(index) - warm > 1 else float("nan")
    record(
        Row(
            key="8a",
            item=8,
            name=f"Memory: resident growth over a {frames:,}-frame stream",
            figure=growth,
            unit="%",
            target=TARGET,
            model=SMALL_MODEL,
            boundary="VmRSS of a process running only the runtime (Detector.stream, policy last, batch 8, aligned "
            "96 px frames from a generator, results dropped); growth = last sample against the sample at frame "
            f"{int(index[warm])} (after warm-up)",
            details={
                "frames": out["frames"],
                "seconds": out["seconds"],
                "fps": out["frames"] / out["seconds"],
                "rss_start_kib": int(rss[0]),
                "rss_after_warmup_kib": baseline,
                "rss_last_kib": last,
                "rss_peak_kib": peak,
                "slope_kib_per_1000_frames": slope,
                "samples": out["samples"],
                "engine": out["engine"],
            },
            note=f"RSS {baseline / 1024:.1f} MiB after warm-up, {last / 1024:.1f} MiB at the end "
            f"(peak {peak / 1024:.1f}); trend {slope:+.1f} KiB per 1000 frames",
        )
    )
