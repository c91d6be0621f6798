"""The server's Prometheus metrics, in a registry of the app's own (two apps in one process, as in tests, never
share counts)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServeMetrics:
    """Frames in, results out, drops and refusals, latency, encoder batch sizes, open streams, videos."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.frames = Counter("ks_serve_frames", "frames received on WebSocket streams", registry=registry)
        self.results = Counter(
            "ks_serve_results",
            "per-frame results made (a row per face; a gone client's last frames are still scored, for its CSV)",
            registry=registry,
        )
        self.dropped = Counter(
            "ks_serve_dropped", "frames dropped, oldest first, because the engine fell behind", registry=registry
        )
        self.refused = Counter(
            "ks_serve_refused",
            "frames, messages and streams refused, by reason (a limit's name, format, undecodable, message)",
            ["reason"],
            registry=registry,
        )
        self.latency = Histogram(
            "ks_serve_latency_seconds",
            "a frame's arrival to its final result",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "ks_serve_encoder_batch_size",
            "frames per encoder batch, across streams",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.streams = Gauge("ks_serve_active_streams", "WebSocket streams open", registry=registry)
        self.videos = Counter("ks_serve_videos", "videos POSTed, by outcome", ["outcome"], registry=registry)

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)
