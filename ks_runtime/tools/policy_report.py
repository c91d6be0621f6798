"""SynthAU runs of the runtime: the demo's held-out stream, and the accuracy and latency of each policy.

`held_out_specs` finds the bundle's held-out SynthAU sequences from the training config in its manifest.
`demo_stream` (the last step of `make demo`) writes one of them as a lossless video file and streams it.
`policy_report` (`ks-run report BUNDLE`) runs every key-slot policy: F1 over the held-out part as
fast as the engine goes, and latency with the video replayed at its frame rate, as a camera delivers it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ks_runtime.core.au import au_set_from_numbers
from ks_runtime.core.bundle import Manifest, read_manifest
from ks_runtime.core.errors import ConfigError
from ks_runtime.core.metrics import f1_report
from ks_runtime.core.policy import POLICIES, lookahead
from ks_runtime.detector import Detector
from ks_runtime.engine.ort_graphs import BundleGraphs
from ks_runtime.inputs import SynthAUSource
from ks_runtime.io.sources import ArraySource, ImageFolderSource, Paced, Source, VideoSource
from ks_runtime.synth.generate import SynthConfig, synth_config_from_data, synth_parts, task_id, task_profiles

log = logging.getLogger(__name__)

# Lossless codecs OpenCV's bundled FFmpeg writes, in order of preference; each is checked bit-exact.
LOSSLESS = (("FFV1", ".mkv"), ("FFV1", ".avi"), ("png ", ".avi"))


def held_out_specs(manifest: Manifest) -> list[str]:
    """`synthau:` specs of every sequence in the test part of the fold the bundle's checkpoint trained on."""
    data = manifest.raw.get("training", {}).get("config", {}).get("data", {})
    if data.get("dataset") != "synth" or data.get("root"):
        raise ConfigError(
            f"{manifest.root}: trained on {data.get('dataset', 'unknown data')!r}, not in-memory "
            f"SynthAU: give the inputs (--input synthau:SIZE:SUBJECT:TASK)"
        )
    try:
        cfg = synth_config_from_data(data)
    except ValueError as error:
        raise ConfigError(f"{manifest.root}: field 'training.config.data': {error}") from None
    if cfg != SynthConfig(size=cfg.size, au_set=cfg.au_set, seed=cfg.seed):
        raise ConfigError(
            f"{manifest.root}: trained on SynthAU with non-default difficulty settings, which a "
            f"synthau: spec cannot carry; stream that data from files instead"
        )
    subjects = synth_parts(cfg)[int(data["fold"]) - 1]
    tasks = [task_id(p) for p in task_profiles(cfg.shape.tasks)]
    return [f"synthau:{cfg.size}:{s}:{t}:seed={cfg.seed}:au={cfg.au_set}" for s in subjects for t in tasks]


def write_lossless_video(frames: np.ndarray, stem: Path | str, fps: float) -> Path:
    """RGB uint8 frames [T, H, W, 3] -> a video file that reads back bit-exact (FFV1 .mkv, else FFV1 or PNG
    in .avi); if no codec round-trips, a folder of PNG files. Returns the path written."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames.shape[1:3]
    for fourcc, suffix in LOSSLESS:
        path = stem.with_suffix(suffix)
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
        if not writer.isOpened():
            continue
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        writer.release()
        read = [item.image for item in VideoSource(path)] if path.is_file() else []
        if len(read) == len(frames) and all(np.array_equal(a, b) for a, b in zip(read, frames, strict=True)):
            return path
        log.info("%s: codec %r does not read back bit-exact here; trying the next", path, fourcc)
        path.unlink(missing_ok=True)
    folder = stem
    folder.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(frames):
        if not cv2.imwrite(str(folder / f"{t:05d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)):
            raise OSError(f"{folder / f'{t:05d}.png'}: could not write frame")
    log.warning("no lossless video codec round-trips in this OpenCV; wrote %d PNG frames to %s", len(frames), folder)
    return folder


def with_labels(source: Source, labels: np.ndarray, columns: Sequence[str]) -> Source:
    """Attach ground truth [T, U] to a source (e.g. a video file written from a SynthAU sequence)."""
    source.labels, source.label_columns = np.asarray(labels), tuple(columns)
    return source


def demo_stream(
    bundle: Path | str,
    out_dir: Path | str,
    policy: str | None = None,
    device: str = "cpu",
    sequence: int = 0,
    echo: Callable[[str], None] = print,
) -> dict:
    """`make demo`'s last step: write held-out SynthAU test sequence `sequence` of the bundle's fold as a
    lossless video, stream it through the bundle (policy: the manifest's default), write the CSV and the
    timeline PNG into `out_dir`, and print the streamed F1, the dense F1 beside it, and the fps."""
    out_dir = Path(out_dir)
    manifest = read_manifest(bundle)
    spec = held_out_specs(manifest)[sequence]
    synth = SynthAUSource(spec, au_set=au_set_from_numbers(manifest.au_numbers).name)
    name = f"{synth.sequence.subject}_{synth.sequence.task}"
    video = write_lossless_video(synth.frames, out_dir / name, synth.fps)
    source = VideoSource(video) if video.is_file() else ImageFolderSource(video, fps=synth.fps)
    with_labels(source, synth.labels, synth.label_columns)
    detector = Detector(manifest, device=device, policy=policy or manifest.policy)
    csv, plot = out_dir / f"{name}.csv", out_dir / f"{name}_timeline.png"
    echo(
        f"== Streaming held-out SynthAU {synth.sequence.subject} {synth.sequence.task} ({spec}) from {video} "
        f"through {manifest.root} (policy {detector.policy}, {detector.engine.describe()})"
    )
    table = detector.detect(source, csv=csv, plot=plot, progress=True)
    summary = detector.summary
    dense = BundleGraphs(manifest, roles=("encoder", "head")).dense_probabilities(synth.frames, detector.policy)
    dense_f1 = f1_report(dense, synth.labels, manifest.au_columns, np.asarray(manifest.thresholds)).mean
    echo(summary.text())
    echo(f"CSV {csv} ({len(table)} rows), timeline {plot}")
    echo(f"streamed F1 {summary.f1.mean:.4f} (dense testing of the same video: {dense_f1:.4f}); {summary.fps:.0f} fps")
    return {
        "video": str(video),
        "csv": str(csv),
        "plot": str(plot),
        "mean_f1": summary.f1.mean,
        "dense_f1": dense_f1,
        "fps": summary.fps,
        "summary": summary.to_dict(),
    }


@dataclass
class PolicyRow:
    """One policy on the held-out sequences: F1, throughput, and latency at the source's frame rate."""

    policy: str
    lookahead_frames: int
    lookahead_ms: float
    mean_f1: float
    fps: float
    latency_ms: dict[int, float]
    per_au_f1: dict[str, float] = field(default_factory=dict)


@dataclass
class PolicyReport:
    bundle: str
    sequences: list[str]
    frames: int
    latency_sequence: str
    latency_frames: int
    source_fps: float
    engine: str
    batch_size: int
    rows: list[PolicyRow]

    def markdown(self) -> str:
        lines = [
            f"Bundle `{self.bundle}`; {len(self.sequences)} held-out SynthAU sequences, {self.frames} frames; "
            f"engine {self.engine}, batch size {self.batch_size}.",
            f"F1: mean over AUs, frames pooled. fps: frames per second streaming as fast as the engine goes. "
            f"Latency: frame arrival to final result, with `{self.latency_sequence}` ({self.latency_frames} frames) "
            f"replayed at {self.source_fps:g} fps as a camera delivers it.",
            "",
            "| policy | look-ahead | mean F1 | fps | latency p50 | p95 | p99 |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            lat = r.latency_ms
            lines.append(
                f"| {r.policy} | {r.lookahead_frames} frames ({r.lookahead_ms:.0f} ms) | {r.mean_f1:.4f} | "
                f"{r.fps:.0f} | {lat[50]:.1f} ms | {lat[95]:.1f} ms | {lat[99]:.1f} ms |"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "bundle": self.bundle,
            "sequences": self.sequences,
            "frames": self.frames,
            "latency_sequence": self.latency_sequence,
            "source_fps": self.source_fps,
            "engine": self.engine,
            "rows": [{**r.__dict__, "latency_ms": {f"p{k}": v for k, v in r.latency_ms.items()}} for r in self.rows],
        }


def policy_report(
    bundle: Path | str,
    inputs: Sequence[str] | None = None,
    device: str = "cpu",
    engine: str = "ort",
    batch_size: int = 8,
    threads: int = 0,
    max_sequences: int = 0,
    policies: Sequence[str] = POLICIES,
    latency_frames: int = 0,
    progress: bool = True,
) -> PolicyReport:
    """Every policy on SynthAU sequences (default: the bundle's held-out test part): pooled F1 and fps
    streaming flat out, latency percentiles replaying the first sequence (its first `latency_frames`
    frames; 0: all) at its frame rate."""
    manifest = read_manifest(bundle)
    specs = list(inputs) if inputs else held_out_specs(manifest)
    if max_sequences:
        specs = specs[:max_sequences]
    au_set = au_set_from_numbers(manifest.au_numbers).name
    sources = [SynthAUSource(s, au_set=au_set) if s.startswith("synthau:") else None for s in specs]
    if any(s is None for s in sources):
        raise ConfigError("the policy report needs SynthAU inputs (synthau:SIZE:SUBJECT:TASK), whose labels it scores")
    first = sources[0]
    replay = first.frames[:latency_frames] if latency_frames else first.frames
    rows, describe = [], ""
    for policy in policies:
        detector = Detector(
            manifest, device=device, engine=engine, policy=policy, batch_size=batch_size, threads=threads
        )
        describe = detector.engine.describe()
        rows.append(_policy_row(detector, manifest, policy, sources, replay, progress))
    frames = sum(len(s.labels) for s in sources)
    return PolicyReport(str(manifest.root), specs, frames, specs[0], len(replay), first.fps, describe, batch_size, rows)


def _policy_row(
    detector: Detector,
    manifest: Manifest,
    policy: str,
    sources: Sequence[SynthAUSource],
    replay: np.ndarray,
    progress: bool,
) -> PolicyRow:
    """One policy: F1 and fps streaming every source flat out, then latency replaying `replay` in real time."""
    labels = np.concatenate([s.labels for s in sources])
    probs, seconds = [], 0.0
    for source in tqdm(sources, desc=f"{policy}: flat out", disable=not progress, leave=False):
        results = list(detector.stream(source))
        probs.append(np.stack([r.probs for r in results]))
        seconds += detector.summary.seconds
    report = f1_report(np.concatenate(probs), labels, manifest.au_columns, np.asarray(manifest.thresholds))
    first = sources[0]
    started = time.perf_counter()
    camera = Paced(ArraySource(replay, fps=first.fps, name=first.name))
    for _ in tqdm(
        detector.stream(camera), total=len(replay), disable=not progress, desc=f"{policy}: real time", leave=False
    ):
        pass
    log.info("%s: %.1f s replayed at %g fps", policy, time.perf_counter() - started, first.fps)
    paced = detector.summary
    return PolicyRow(
        policy,
        lookahead(manifest.clip_len, policy, manifest.clip_stride),
        paced.lookahead_ms,
        report.mean,
        len(labels) / seconds,
        paced.latency_ms,
        {c: float(f) for c, f in zip(manifest.au_columns, report.f1, strict=True)},
    )
