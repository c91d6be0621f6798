"""Item 7: latency at batch 1 for each key-slot policy, on paper-r50 (FP32, aligned 224 px frames).

Compute latency: `Detector.infer_frame(frame, colour="RGB")` from the call (a decoded frame in memory) to its return
with the results that became final (the encoder on this frame, the head on the clip(s) now complete), batch size 1.
A look-ahead policy must also wait for its future frames: at 25 fps that adds look-ahead x 40 ms (worst case;
`shift`'s varies with the slot), so frame in to result out is compute + look-ahead. The four policies run side
by side, one frame to each in turn, each on its own stream.
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.harness import R50_MODEL, Row, budget, quick
from ks_runtime.core.policy import POLICIES, lookahead
from ks_runtime.detector import Detector

SOURCE_FPS = 25.0
WARMUP_FRAMES = 8


def test_policy_latency(benchmark, record, r50_bundle, aligned_frames):
    detectors = {p: Detector(r50_bundle, policy=p, face="aligned", batch_size=1, max_wait_ms=0) for p in POLICIES}
    seconds: dict[str, list[float]] = {p: [] for p in POLICIES}
    produced: dict[str, int] = dict.fromkeys(POLICIES, 0)
    count = [0]

    def one_round() -> None:
        frame = aligned_frames[count[0] % len(aligned_frames)]
        order = POLICIES if count[0] % 2 == 0 else POLICIES[::-1]
        for policy in order:
            started = time.perf_counter()
            results = detectors[policy].infer_frame(frame, colour="RGB")
            seconds[policy].append(time.perf_counter() - started)
            produced[policy] += len(results)
        count[0] += 1

    for _ in range(WARMUP_FRAMES):
        one_round()
    started = time.perf_counter()
    one_round()
    per_round = time.perf_counter() - started
    for policy in POLICIES:
        seconds[policy].clear()
        produced[policy] = 0
    rounds = 3 if quick() else int(np.clip(budget(45) / per_round, 50, 400))
    benchmark.group = "7 latency per policy"
    benchmark.pedantic(one_round, rounds=rounds, iterations=1)
    n, stride = detectors["last"].manifest.clip_len, detectors["last"].manifest.clip_stride
    for key, policy in zip("abcd", POLICIES, strict=True):
        record(latency_row(key, policy, np.asarray(seconds[policy]) * 1e3, produced[policy], n, stride))


def latency_row(key: str, policy: str, ms: np.ndarray, produced: int, n: int, stride: int) -> Row:
    """Row 7x: the policy's compute latency percentiles and its look-ahead at the source's frame rate."""
    p50, p99 = float(np.percentile(ms, 50)), float(np.percentile(ms, 99))
    ahead = lookahead(n, policy, stride)  # the worst case; `shift` waits (n - 1 - slot) * stride frames
    mean_ahead = (n - 1) / 2 * stride if policy == "shift" else ahead
    ahead_ms = 1e3 * ahead / SOURCE_FPS
    return Row(
        key=f"7{key}",
        item=7,
        name=f"Latency at batch 1, policy `{policy}` (compute p50)",
        figure=p50,
        unit=" ms",
        model=R50_MODEL,
        boundary="Detector.infer_frame(frame), batch size 1: aligned 224 px frame in memory -> the results final "
        f"with it; {len(ms)} frames; frame in to result out adds the look-ahead of {ahead} frame(s) at "
        f"{SOURCE_FPS:g} fps",
        details={
            "compute_p50_ms": p50,
            "compute_p99_ms": p99,
            "lookahead_frames": ahead,
            "lookahead_mean_frames": mean_ahead,
            "lookahead_ms": ahead_ms,
            "total_p50_ms": p50 + ahead_ms,
            "total_p99_ms": p99 + ahead_ms,
            "frames": len(ms),
            "results": produced,
        },
        note=f"compute p50 {p50:.1f} ms, p99 {p99:.1f} ms; "
        f"+ look-ahead {'up to ' if mean_ahead != ahead else ''}"
        f"{ahead} frames ({ahead_ms:.0f} ms) = "
        f"{p50 + ahead_ms:.1f} / {p99 + ahead_ms:.1f} ms frame in to result out",
    )
