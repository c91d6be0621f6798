"""The Python API: `Detector(bundle).detect(video) -> DataFrame`, `.stream(source)`, `.infer_frame(frame)`.

A Detector holds one engine (the bundle's encoder and head, opened and checked once; a bundle that fails
its checks is refused here, before any frame) and runs each source through the streaming runtime, each with
its own face stage (faces.py: `auto` by default, aligning raw frames onto the bundle's alignment template).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from ks_runtime.core.au import au_set_from_numbers
from ks_runtime.core.bundle import Manifest, read_manifest
from ks_runtime.core.errors import ConfigError, OutputError
from ks_runtime.core.results import FrameResult
from ks_runtime.core.template import template_from_alignment
from ks_runtime.engine import create_engine
from ks_runtime.engine.base import Engine
from ks_runtime.faces.base import FaceStage
from ks_runtime.faces.registry import create_face_stage
from ks_runtime.faces.tap import FrameTap, KeptFrames
from ks_runtime.inputs import open_source
from ks_runtime.io.crops import CropSink
from ks_runtime.io.formats import check_csv_format, csv_sink, csv_table
from ks_runtime.io.head_pose import LANDMARKS, add_face_geometry
from ks_runtime.io.live_view import LiveView
from ks_runtime.io.overlay import OverlaySink, overlay_frames
from ks_runtime.io.sources import Source, SourceFrame, to_rgb
from ks_runtime.io.summary import RunStats, RunSummary
from ks_runtime.io.table import TextSink
from ks_runtime.io.timeline import timeline_png
from ks_runtime.stream import Runner, StreamConfig, StreamScheduler

log = logging.getLogger(__name__)

SourceLike = Source | str | Path | Iterable


class Detector:
    """Per-frame AU probabilities from a model bundle.

    device: cpu, cuda or cuda:N; engine: ort, ort-trt or trt; policy: last (lowest latency), center, shift or
    ensemble (docs/runtime.md, Key-slot policies); face: the face stage (auto: aligned crops as they are, raw
    frames through haar; or aligned, haar, dlib); batch_size / max_wait_ms: encoder batches and how long a frame
    may wait for one; threads: engine threads.
    """

    def __init__(
        self,
        bundle: Manifest | Path | str,
        device: str = "cpu",
        engine: str = "ort",
        policy: str | None = None,
        face: str = "auto",
        batch_size: int = 8,
        threads: int = 0,
        max_wait_ms: float = 10.0,
        queue_size: int = 16,
    ) -> None:
        self.manifest = bundle if isinstance(bundle, Manifest) else read_manifest(bundle)
        policy = policy or self.manifest.policy  # the bundle's default (export writes `last`)
        self.config = StreamConfig(policy=policy, batch_size=batch_size, max_wait_ms=max_wait_ms, queue_size=queue_size)
        self.face = face
        self.template = template_from_alignment(self.manifest.alignment, str(self.manifest.root / "manifest.json"))
        self.face_stage()  # an unknown or uninstalled stage fails here, not at the first frame
        self.engine: Engine = create_engine(self.manifest, engine, device, threads)
        self.summary: RunSummary | None = None
        self._live: StreamScheduler | None = None
        self._live_face: FaceStage | None = None
        self._live_next = 0
        self._live_start = 0.0

    # --- facts of the bundle --------------------------------------------------------------------------------
    @property
    def au_columns(self) -> tuple[str, ...]:
        return self.manifest.au_columns

    @property
    def thresholds(self) -> tuple[float, ...]:
        return self.manifest.thresholds

    @property
    def policy(self) -> str:
        return self.config.policy

    def au_set_name(self) -> str | None:
        """The named AU set of the bundle (bp4d, disfa), used to label a SynthAU source the same way."""
        try:
            found = au_set_from_numbers(self.manifest.au_numbers)
        except ValueError:
            return None
        return None if found.name == "custom" else found.name

    def face_stage(self) -> FaceStage:
        """A new face stage of this detector's kind (one per source: stages that track keep state)."""
        return create_face_stage(self.face, self.manifest.preprocess, self.template)

    def open(self, source: SourceLike, fps: float | None = None) -> Source:
        """A Source for a path, a synthau: spec, a Source or an iterable of frames."""
        return open_source(source, fps=fps, au_set=self.au_set_name())

    # --- whole sources --------------------------------------------------------------------------------------
    def stream(self, source: SourceLike, fps: float | None = None) -> Iterator[FrameResult]:
        """Yield each frame's result in frame order, as soon as it is final. `self.summary` is set at the end."""
        for batch in self.stream_batches({"0": self.open(source, fps)}):
            yield from batch

    def stream_many(self, sources: Mapping[str, SourceLike] | Iterable[SourceLike]) -> Iterator[FrameResult]:
        """Several sources at once, their frames batched together; results carry their source's key."""
        named = sources if isinstance(sources, Mapping) else {str(i): s for i, s in enumerate(sources)}
        for batch in self.stream_batches({k: self.open(s) for k, s in named.items()}):
            yield from batch

    def stream_batches(
        self, sources: Mapping[str, Source], stages: Mapping[str, FaceStage] | None = None
    ) -> Iterator[list[FrameResult]]:
        """The results in the groups they became final in (each group one engine step); `stages` gives a source
        its own face stage (default: a new `face_stage()` each)."""
        if not sources:
            raise ConfigError("no sources to stream")
        streamer = StreamScheduler(self.engine, self.manifest.preprocess, self.config)
        runner = Runner(streamer)
        first = next(iter(sources.values()))
        labels = first.labels if len(sources) == 1 and self._labels_match(first) else None
        stats = RunStats(
            self.policy,
            self.manifest.clip_len,
            self.au_columns,
            self.thresholds,
            first.fps,
            self.engine.describe(),
            labels,
            clip_stride=self.manifest.clip_stride,
        )
        errors: list[str] = []
        stages = stages or {}
        try:
            for batch in runner.run({key: (s, stages.get(key) or self.face_stage()) for key, s in sources.items()}):
                stats.add(batch)
                yield batch
        except Exception as error:
            errors.append(str(error))
            raise
        finally:
            # Frames a live source lost: dropped from its queue when the engine fell behind, plus any the camera
            # itself could not hand over (SimulatedCamera counts them in `missed`).
            dropped = {key: runner.dropped.get(key, 0) + getattr(s, "missed", 0) for key, s in sources.items()}
            for key, count in dropped.items():
                if count:
                    log.warning(
                        "%s: %d frames dropped: the engine fell behind the live source", sources[key].name, count
                    )
            self.summary = stats.summary(sum(dropped.values()), errors)

    def _labels_match(self, source: Source) -> bool:
        if source.labels is None:
            return False
        if tuple(source.label_columns or ()) != tuple(self.au_columns):
            log.warning(
                "%s: its labels are %s, the bundle predicts %s: no F1",
                source.name,
                ",".join(source.label_columns or ()),
                ",".join(self.au_columns),
            )
            return False
        return True

    def detect(
        self,
        source: SourceLike,
        csv: Path | str | None = None,
        plot: Path | str | None = None,
        progress: bool = False,
        fps: float | None = None,
        csv_sep: str = ",",
        overlay: Path | str | None = None,
        show: bool = False,
        csv_format: str = "ks",
        save_crops: Path | str | None = None,
    ) -> pd.DataFrame:
        """Run a whole source; return the CSV's table, writing the CSV (flushed as rows come), the timeline PNG
        and the overlay video when paths are given, and showing the overlay in a window when `show` (q or Esc
        stops the run there). `csv_format`: `ks` (ours, every AU's probability) or `openface` (OpenFace 2's
        columns, io/openface.py); `save_crops`: a folder for the aligned crops and their landmarks (io/crops.py).
        On bad input every output holds every frame read, then the error is raised."""
        from tqdm import tqdm

        check_csv_format(csv_format)
        view = LiveView() if show else None  # no display: refused before any frame is read
        src = sink = crops = bar = None
        outputs: list = [view] if view is not None else []
        results: list[FrameResult] = []
        stage = self.face_stage()
        landmarks = stage.landmark_count == LANDMARKS  # 68: the OpenFace landmark and pose columns
        try:
            src = self.open(source, fps)
            if overlay is not None:
                outputs.append(OverlaySink(overlay, src.fps))
            if csv is not None:
                sink = csv_sink(csv_format, csv, self.au_columns, self.thresholds, landmarks, csv_sep)
            crops = CropSink(save_crops) if save_crops is not None else None
            # Frames are kept for the outputs written after them (overlay, crops, landmark and pose columns).
            tap = FrameTap(stage) if outputs or crops is not None or (landmarks and csv_format == "openface") else None
            bar = tqdm(
                total=src.length, disable=not progress or src.live, unit="frame", desc=Path(src.name).name, leave=False
            )
            for batch in self.stream_batches({"0": src}, {"0": tap or stage}):
                self._write_batch(batch, tap, sink, crops, outputs)
                results += batch
                bar.update(len(batch))
                if view is not None and view.stopped:
                    break
        except OSError as error:
            raise OutputError(f"cannot write an output: {error}") from None
        finally:
            if bar is not None:
                bar.close()
            for output in [w for w in (sink, crops) if w is not None] + outputs:
                output.close()
            if src is not None and hasattr(src, "close"):
                src.close()
            if plot is not None and results:
                self.plot(plot, results, src)
        table = csv_table(csv_format, results, self.au_columns, self.thresholds, landmarks)
        table.attrs["summary"] = self.summary
        return table

    def _write_batch(
        self,
        batch: list[FrameResult],
        tap: FrameTap | None,
        sink: TextSink | None,
        crops: CropSink | None,
        outputs: list,
    ) -> None:
        """One batch of results into the CSV, the crops folder and the overlay outputs, its frames taken once."""
        kept = tap.take_batch(batch) if tap is not None else KeptFrames()
        add_face_geometry(batch, kept)
        if sink is not None:
            sink.write(batch)
        if crops is not None:
            crops.write(batch, kept)
        for canvas in overlay_frames(batch, kept, self.au_columns, self.thresholds) if outputs else ():
            for output in outputs:
                output.write_frame(canvas)

    def plot(self, path: Path | str, results: list[FrameResult], source: Source | None = None) -> Path:
        """The AU timeline PNG of a run's results, with the source's ground truth beside it when it has one."""
        probs = np.stack([r.probs if r.probs is not None else np.full(len(self.au_columns), np.nan) for r in results])
        labels = None
        if source is not None and self._labels_match(source):
            index = np.array([r.index for r in results])
            labels = source.labels[np.clip(index, 0, len(source.labels) - 1)]
        title = f"{Path(source.name).name if source else ''}  policy {self.policy}".strip()
        return timeline_png(
            path, np.array([r.timestamp for r in results]), probs, self.au_columns, self.thresholds, labels, title=title
        )

    # --- a frame at a time (the caller owns the capture loop) ---------------------------------------------
    def infer_frame(self, frame: np.ndarray, timestamp: float | None = None, colour: str = "RGB") -> list[FrameResult]:
        """Feed one frame; return the results that became final with it, each naming its frame (`index`).

        Under `last` that is this frame's own result; under look-ahead policies an earlier frame's, or none
        yet. Frames count from 0 at the first call; `end_stream()` flushes the last frames.
        """
        if self._live is None:
            self._live = StreamScheduler(self.engine, self.manifest.preprocess, self.config)
            self._live_face = self.face_stage()
            self._live_next, self._live_start = 0, time.perf_counter()
        arrival = time.perf_counter()
        index = self._live_next
        self._live_next += 1
        image = to_rgb(frame, f"infer_frame: frame {index}", colour)
        stamp = arrival - self._live_start if timestamp is None else float(timestamp)
        item = SourceFrame(image, stamp, index)
        self._live.push("live", item, self._live_face(image, index), arrival)
        return self._live.step(force=True)

    def end_stream(self) -> list[FrameResult]:
        """End the infer_frame stream: the frames still waiting for look-ahead are scored with the last frame
        replicated. The next infer_frame starts a new stream at frame 0."""
        if self._live is None:
            return []
        results = self._live.close()
        self._live = None
        return results
