"""The summary at the end of a run: frames, throughput, latency percentiles, dropped frames, look-ahead, F1,
and the warnings and errors the run met."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ks_runtime.core.metrics import F1Report, f1_report
from ks_runtime.core.policy import lookahead
from ks_runtime.core.results import FrameResult

PERCENTILES = (50, 95, 99)
# Where a frame's latency starts: its arrival from a source that delivers at its own pace (a camera, a replayed
# file), or, for a file read flat out, when the runtime took it off the queue (its wait in the queue is read-ahead,
# not delay); "mixed" when a run has both.
LATENCY_FROM = {
    "arrival": "arrival to result",
    "processing": "processing: off the queue to result",
    "mixed": "arrival to result (live sources), off the queue to result (files)",
}


@dataclass
class RunSummary:
    """What a run did: frames (and frames with a face: a frame of several faces counts once; `streams` counts each
    face's runs of frames), throughput, latency percentiles (faces; from arrival or from processing,
    `latency_from`, to final), dropped frames, the policy's look-ahead at the source's rate, F1 when the source
    has labels, and what went wrong: `warnings` (the run went on, or ended early but cleanly) and `errors`."""

    frames: int
    faces: int
    dropped: int
    streams: int
    seconds: float
    latency_ms: dict[int, float]
    policy: str
    clip_len: int
    source_fps: float | None
    engine: str = ""
    f1: F1Report | None = None
    errors: list[str] = field(default_factory=list)
    clip_stride: int = 1
    warnings: list[str] = field(default_factory=list)
    latency_from: str = "arrival"

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")

    @property
    def lookahead_frames(self) -> int:
        return lookahead(self.clip_len, self.policy, self.clip_stride)

    @property
    def lookahead_ms(self) -> float:
        return 1e3 * self.lookahead_frames / self.source_fps if self.source_fps else float("nan")

    def text(self) -> str:
        lat = "  ".join(f"p{p} {self.latency_ms.get(p, float('nan')):.1f}" for p in PERCENTILES)
        ahead = f"{self.lookahead_frames} frames"
        if self.source_fps:
            ahead += f" = {self.lookahead_ms:.0f} ms at {self.source_fps:g} fps"
        lines = [
            f"frames {self.frames} ({self.faces} with a face, {self.streams} stream(s)), dropped {self.dropped}",
            f"{self.fps:.1f} fps over {self.seconds:.2f} s ({self.engine})",
            f"latency ms, {LATENCY_FROM[self.latency_from]}: {lat}",
            f"policy {self.policy}: look-ahead {ahead}",
        ]
        if self.f1 is not None:
            lines.append(
                f"streamed F1 {self.f1.mean:.4f} (all-positive floor {self.f1.mean_floor:.4f}) over "
                f"{int(self.f1.support.max()) if len(self.f1.support) else 0} labelled frames"
            )
        lines += [f"warning: {w}" for w in self.warnings] + [f"error: {e}" for e in self.errors]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "frames": self.frames,
            "faces": self.faces,
            "dropped": self.dropped,
            "streams": self.streams,
            "seconds": self.seconds,
            "fps": self.fps,
            "latency_ms": {f"p{p}": v for p, v in self.latency_ms.items()},
            "latency_from": self.latency_from,
            "policy": self.policy,
            "lookahead_frames": self.lookahead_frames,
            "lookahead_ms": self.lookahead_ms,
            "source_fps": self.source_fps,
            "engine": self.engine,
            "mean_f1": self.f1.mean if self.f1 is not None else None,
            "warnings": list(self.warnings),
            "errors": list(self.errors),
        }


class LatencyReservoir:
    """A uniform sample of at most `capacity` latencies (Vitter's algorithm R): percentiles are exact until
    `capacity` frames, then estimated, and a camera left running for days does not grow the process."""

    def __init__(self, capacity: int = 100_000, seed: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"latency reservoir capacity must be >= 1, got {capacity}")
        self.capacity, self.seen = capacity, 0
        self.values = np.empty(capacity, np.float64)
        self.rng = np.random.default_rng(seed)

    def add(self, value: float) -> None:
        if self.seen < self.capacity:
            self.values[self.seen] = value
        else:
            slot = int(self.rng.integers(self.seen + 1))
            if slot < self.capacity:
                self.values[slot] = value
        self.seen += 1

    def sample(self) -> np.ndarray:
        return self.values[: min(self.seen, self.capacity)]


class RunStats:
    """Accumulates results into a RunSummary (and the F1 against a source's labels, when it has some)."""

    def __init__(
        self,
        policy: str,
        clip_len: int,
        au_columns: Sequence[str],
        thresholds: Sequence[float],
        source_fps: float | None = None,
        engine: str = "",
        labels: np.ndarray | None = None,
        clock_start: float | None = None,
        clip_stride: int = 1,
        latency_from: str = "arrival",
    ) -> None:
        if latency_from not in LATENCY_FROM:
            raise ValueError(f"latency_from {latency_from!r}: one of {', '.join(LATENCY_FROM)}")
        self.policy, self.clip_len, self.source_fps, self.engine = policy, clip_len, source_fps, engine
        self.clip_stride, self.latency_from = clip_stride, latency_from
        self.columns, self.thresholds = list(au_columns), np.asarray(thresholds, np.float64)
        self.labels = labels
        self.start = clock_start
        self.end = clock_start
        self.frames = self.faces = 0
        # A frame with several faces has a result per face, consecutive: each source's last frame counted.
        self._counted: dict[str, int] = {}
        self._counted_face: dict[str, int] = {}
        self.latencies = LatencyReservoir()
        self.streams: set[tuple[str, int]] = set()
        self.probs: dict[int, np.ndarray] = {}

    def add(self, results: Iterable[FrameResult]) -> None:
        for r in results:
            if self._counted.get(r.source) != r.index:
                self._counted[r.source] = r.index
                self.frames += 1
            self.start = r.arrival if self.start is None else min(self.start, r.arrival)
            self.end = r.final if self.end is None else max(self.end, r.final)
            if r.success:
                if self._counted_face.get(r.source) != r.index:
                    self._counted_face[r.source] = r.index
                    self.faces += 1
                self.latencies.add(r.latency)
                self.streams.add((r.source, r.stream))
                if self.labels is not None:
                    self.probs[r.index] = r.probs

    def f1(self) -> F1Report | None:
        """F1 over the labelled frames that got a result (a dropped or faceless frame counts as unknown)."""
        if self.labels is None or not self.probs:
            return None
        probs = np.zeros(self.labels.shape, np.float32)
        labels = np.full(self.labels.shape, -1, self.labels.dtype)
        index = np.array([i for i in self.probs if i < len(self.labels)], np.int64)
        probs[index] = np.stack([self.probs[i] for i in index])
        labels[index] = self.labels[index]
        return f1_report(probs, labels, self.columns, self.thresholds)

    def summary(self, dropped: int = 0, errors: Sequence[str] = (), warnings: Sequence[str] = ()) -> RunSummary:
        seconds = (self.end - self.start) if self.start is not None and self.end is not None else 0.0
        lat = self.latencies.sample() * 1e3
        percentiles = {p: float(np.percentile(lat, p)) if len(lat) else float("nan") for p in PERCENTILES}
        return RunSummary(
            self.frames,
            self.faces,
            dropped,
            len(self.streams),
            seconds,
            percentiles,
            self.policy,
            self.clip_len,
            self.source_fps,
            self.engine,
            self.f1(),
            list(errors),
            self.clip_stride,
            list(warnings),
            self.latency_from,
        )
