"""The Python API: `Detector(bundle).detect(video) -> DataFrame`, `.stream(source)`, `.infer_frame(frame)`.

A Detector holds one engine (the bundle's encoder and head, opened and checked once; a bundle that fails
its checks is refused here, before any frame) and runs each source through the streaming runtime, each with
its own face stage (faces.py: `auto` by default, aligning raw frames onto the bundle's alignment template).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ks_runtime.core.au import au_set_from_numbers
from ks_runtime.core.bundle import Manifest, read_manifest
from ks_runtime.core.errors import ConfigError, KSError, OutputError
from ks_runtime.core.results import Face, FrameResult, KeptFrames
from ks_runtime.core.template import template_from_alignment
from ks_runtime.engine import create_engine
from ks_runtime.engine.base import Engine
from ks_runtime.faces.base import FaceStage
from ks_runtime.faces.registry import create_face_stage
from ks_runtime.faces.tap import FrameTap
from ks_runtime.inputs import open_source
from ks_runtime.io.crops import CropSink
from ks_runtime.io.formats import check_csv_format, csv_sink, csv_table
from ks_runtime.io.head_pose import LANDMARKS, add_face_geometry
from ks_runtime.io.live_view import LiveView
from ks_runtime.io.outputs import check_output_paths
from ks_runtime.io.overlay import OverlaySink, overlay_frames
from ks_runtime.io.sources import Source, SourceFrame, to_rgb
from ks_runtime.io.summary import RunStats, RunSummary
from ks_runtime.io.table import TextSink
from ks_runtime.io.timeline import timeline_png
from ks_runtime.stream import Runner, StreamConfig, StreamScheduler

log = logging.getLogger(__name__)

SourceLike = Source | str | Path | Iterable
COLOURS = ("RGB", "BGR")  # a frame's channel order: OpenCV decodes BGR


class Detector:
    """Per-frame AU probabilities from a model bundle.

    device: cpu, cuda or cuda:N (for engine triton: the server's HOST:PORT); engine: ort, ort-trt, trt, openvino
    or triton; policy: last (lowest latency), center, shift or ensemble (docs/runtime.md, Key-slot policies); face:
    the face stage (auto: aligned crops as they are, raw frames through haar; or aligned, haar, dlib); batch_size /
    max_wait_ms: encoder batches and how long a frame
    may wait for one; threads: engine threads; precision: auto, fp32 or int8 (the bundle's INT8 encoder where it
    passes its check on this CPU, else FP32 with a warning, or refused with insist_int8: `create_engine`);
    max_faces: the most faces scored a frame, each tracked with its own face_id (0: every face; default None: every
    face in pictures scored alone, the largest in a video, as OpenFace's FaceLandmarkImg and FeatureExtraction do).
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
        precision: str = "auto",
        insist_int8: bool = False,
        max_faces: int | None = None,
    ) -> None:
        if max_faces is not None and max_faces < 0:
            raise ConfigError(f"max_faces={max_faces}: the most faces a frame, 0 for every face")
        self.max_faces = max_faces
        self.manifest = bundle if isinstance(bundle, Manifest) else read_manifest(bundle)
        policy = policy or self.manifest.policy  # the bundle's default (export writes `last`)
        self.config = StreamConfig(policy=policy, batch_size=batch_size, max_wait_ms=max_wait_ms, queue_size=queue_size)
        self.face = face
        self.template = template_from_alignment(self.manifest.alignment, str(self.manifest.root / "manifest.json"))
        self.face_stage()  # an unknown or uninstalled stage fails here, not at the first frame
        self.engine: Engine = create_engine(self.manifest, engine, device, threads, precision, insist_int8)
        say_provenance(self.manifest)
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

    def face_stage(self, independent: bool = False) -> FaceStage:
        """A new face stage of this detector's kind (one per source: stages that track keep state); for
        `independent` frames (unrelated pictures) one that starts afresh at every frame."""
        limit = self.max_faces if self.max_faces is not None else 0 if independent else 1
        stage = create_face_stage(self.face, self.manifest.preprocess, self.template, limit)
        return _EachFrameAlone(stage) if independent else stage

    def open(self, source: SourceLike, fps: float | None = None, sequence: bool = False) -> Source:
        """A Source for a path, a list of image paths, a synthau: spec, a Source or an iterable of frames. Images
        (a file, a list, a folder) are each scored alone unless `sequence`: then they are one video's frames."""
        return open_source(source, fps=fps, au_set=self.au_set_name(), sequence=sequence)

    # --- whole sources --------------------------------------------------------------------------------------
    def stream(self, source: SourceLike, fps: float | None = None, sequence: bool = False) -> Iterator[FrameResult]:
        """Yield each frame's result in frame order, as soon as it is final. `self.summary` is set at the end."""
        for batch in self.stream_batches({"0": self.open(source, fps, sequence)}):
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
        its own face stage (default: a new `face_stage()` each). `self.summary` is set at the end, with the
        sources' warnings (each also logged)."""
        if not sources:
            raise ConfigError("no sources to stream")
        streamer = StreamScheduler(self.engine, self.manifest.preprocess, sized_for(self.config, sources.values()))
        runner = Runner(streamer)
        stats = self._run_stats(sources)
        errors: list[str] = []
        stages = stages or {}
        chosen = {key: (s, stages.get(key) or self.face_stage(s.independent)) for key, s in sources.items()}
        try:
            for batch in runner.run(chosen):
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
            warnings = [w for s in sources.values() for w in s.warnings] + self._crowded(chosen)
            for warning in warnings:
                log.warning("%s", warning)
            self.summary = stats.summary(sum(dropped.values()), errors, warnings)

    @staticmethod
    def _crowded(chosen: Mapping[str, tuple[Source, FaceStage]]) -> list[str]:
        """A warning for each source whose frames held more faces than its stage's max_faces let it score."""
        out = []
        for source, stage in chosen.values():
            if stage.crowded_frames:
                out.append(
                    f"{source.name}: {stage.crowded_frames} searches of the whole frame found more faces than "
                    f"--max-faces {stage.max_faces} lets it score (the largest were scored; --max-faces 0 scores "
                    "every face)"
                )
        return out

    def _run_stats(self, sources: Mapping[str, Source]) -> RunStats:
        """The summary's accumulator for a run of `sources`; F1 when one source has labels for our AUs."""
        first = next(iter(sources.values()))
        labels = first.labels if len(sources) == 1 and self._labels_match(first) else None
        paced = {s.realtime for s in sources.values()}
        return RunStats(
            self.policy,
            self.manifest.clip_len,
            self.au_columns,
            self.thresholds,
            first.fps,
            self.engine.describe(),
            labels,
            clip_stride=self.manifest.clip_stride,
            latency_from="mixed" if len(paced) > 1 else "arrival" if True in paced else "processing",
        )

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
        sequence: bool = False,
    ) -> pd.DataFrame:
        """Run a whole source; return the CSV's table, writing the CSV (flushed as rows come), the timeline PNG
        and the overlay video when paths are given, and showing the overlay in a window when `show` (q or Esc
        stops the run there). `csv_format`: `ks` (ours, every AU's probability) or `openface` (OpenFace 2's
        columns, io/openface.py); `save_crops`: a folder for the aligned crops and their landmarks (io/crops.py).
        Images (a file, a list of paths, a folder) are scored each alone, a row per image with its path in a `file`
        column, unless `sequence`: then they are one video's frames (a folder's in natural order).

        A run that fails part-way (a frame that cannot be read, an output that cannot be written) keeps what it
        made: every output holds every row made before the failure, and the table returned holds them too, with
        the error in `table.attrs["error"]` and `self.summary.errors` (and logged as a warning); with no row made,
        the error is raised. A clean run has `table.attrs["error"]` None; its warnings (a video that decodes fewer
        frames than its container promises) are in `self.summary.warnings`."""
        check_csv_format(csv_format)
        check_output_paths(csv, plot, overlay, save_crops)  # before any frame: not after the whole input ran
        view = LiveView() if show else None  # no display: refused before any frame is read
        try:
            src = self.open(source, fps, sequence)
        except BaseException:
            if view is not None:
                view.close()
            raise
        stage = self.face_stage(src.independent)
        landmarks = stage.landmark_count == LANDMARKS  # 68: the OpenFace landmark and pose columns
        files = [str(f) for f in src.files] if src.files is not None else None  # the `file` column
        request = _Outputs(csv, csv_format, csv_sep, landmarks, files, overlay, save_crops, view, progress)
        results: list[FrameResult] = []
        try:
            failure = self._detect_into(results, src, stage, request)
        finally:  # Ctrl-C too (how a webcam run ends): the timeline of what was made is still drawn
            src.close()
            unplotted = self._plot_made(plot, results, src)
        failure = failure or unplotted
        if failure is not None:
            self._keep_what_was_made(failure, src, results)
        table = csv_table(csv_format, results, self.au_columns, self.thresholds, landmarks, files)
        table.attrs["summary"], table.attrs["error"] = self.summary, failure
        return table

    def _detect_into(
        self, results: list[FrameResult], src: Source, stage: FaceStage, request: _Outputs
    ) -> KSError | None:
        """Stream `src` into `results` and the outputs `request` asks for; the error that stopped the run, if one
        did (every output is closed holding every row made before it)."""
        from tqdm import tqdm

        outputs: list = [request.view] if request.view is not None else []
        sink = crops = bar = None
        try:
            if request.overlay is not None:
                outputs.append(OverlaySink(request.overlay, src.fps))
            if request.csv is not None:
                sink = csv_sink(
                    request.csv_format,
                    request.csv,
                    self.au_columns,
                    self.thresholds,
                    request.landmarks,
                    request.sep,
                    request.files,
                )
            crops = CropSink(request.crops) if request.crops is not None else None
            # Frames are kept for the outputs written after them (overlay, crops, landmark and pose columns).
            keep = outputs or crops is not None or (request.landmarks and request.csv_format == "openface")
            tap = FrameTap(stage) if keep else None
            bar = tqdm(
                total=src.length,
                disable=not request.progress or src.live,
                unit="frame",
                desc=Path(src.name).name,
                leave=False,
            )
            with closing(self.stream_batches({"0": src}, {"0": tap or stage})) as batches:
                for batch in batches:
                    results += batch  # made, whatever happens to its writing
                    self._write_batch(batch, tap, sink, crops, outputs)
                    bar.update(len(batch))
                    if request.view is not None and request.view.stopped:
                        break
        except (KSError, OSError) as error:
            return _as_ks_error(error)
        finally:
            if bar is not None:
                bar.close()
            for output in [w for w in (sink, crops) if w is not None] + outputs:
                output.close()
        return None

    def _plot_made(self, plot: Path | str | None, results: list[FrameResult], src: Source) -> KSError | None:
        """The timeline PNG of the rows made, when asked for and there are some; the error if it cannot be drawn."""
        if plot is None or not results:
            return None
        try:
            self.plot(plot, results, src)
        except (KSError, OSError) as error:
            return _as_ks_error(error)
        return None

    def _keep_what_was_made(self, failure: KSError, src: Source, results: list[FrameResult]) -> None:
        """A run that failed part-way: raise with nothing made, else record the error and keep the rows."""
        if not results:
            raise failure
        if self.summary is not None and str(failure) not in self.summary.errors:
            self.summary.errors.append(str(failure))  # an output's failure, which the stream itself never saw
        log.warning(
            "%s: %s (detect returns the %d rows made before it; the error is in table.attrs['error'])",
            src.name,
            failure,
            len(results),
        )

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
        note = self.manifest.provenance_warning
        for canvas in overlay_frames(batch, kept, self.au_columns, self.thresholds, note) if outputs else ():
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
        # Unrelated pictures have no time between them: they are drawn one after another, by number.
        along = [r.index if source is not None and source.independent else r.timestamp for r in results]
        return timeline_png(
            path, np.array(along, np.float64), probs, self.au_columns, self.thresholds, labels, title=title
        )

    # --- a frame at a time (the caller owns the capture loop) ---------------------------------------------
    def infer_frame(self, frame: np.ndarray, timestamp: float | None = None, *, colour: str) -> list[FrameResult]:
        """Feed one frame; return the results that became final with it, each naming its frame (`index`).

        `colour` is the frame's channel order, "RGB" or "BGR", and has no default: OpenCV's VideoCapture and imread
        give BGR, most other libraries RGB, and a frame read in the wrong order gives other probabilities without
        any error. Under `last` the results are this frame's own; under look-ahead policies an earlier frame's, or
        none yet. Frames count from 0 at the first call; `end_stream()` flushes the last frames.
        """
        if colour not in COLOURS:
            raise ConfigError(
                f"infer_frame: colour={colour!r}; the frame's channel order is one of {', '.join(COLOURS)}"
            )
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
        self._live.push_faces("live", item, self._live_face.faces(image, index), arrival)
        return self._live.step(force=True)

    def end_stream(self) -> list[FrameResult]:
        """End the infer_frame stream: the frames still waiting for look-ahead are scored with the last frame
        replicated. The next infer_frame starts a new stream at frame 0."""
        if self._live is None:
            return []
        results = self._live.close()
        self._live = None
        return results


def sized_for(config: StreamConfig, sources: Iterable[Source]) -> StreamConfig:
    """`config` with its batch no larger than the sources' frames, when every source knows its length: a batch's
    buffers are allocated up front, and a 20-frame video never needs a batch of 1024."""
    lengths = [source.length for source in sources]
    if None in lengths or not lengths:
        return config
    frames = max(1, sum(lengths))
    return replace(config, batch_size=frames) if frames < config.batch_size else config


_SAID: set[str] = set()  # the bundles whose provenance this process has stated


def say_provenance(manifest: Manifest) -> None:
    """Say once per bundle and process, as a warning (stderr, never the CSV), when the model never saw a real face:
    at the first Detector of a `ks-run`, of a report's several, or of a program's."""
    warning = manifest.provenance_warning
    key = str(manifest.root.resolve())
    if warning is not None and key not in _SAID:
        _SAID.add(key)
        log.warning("%s: %s", manifest.root, warning)


@dataclass(frozen=True)
class _Outputs:
    """What a `detect` run writes besides its table: the CSV (format, separator, landmark columns, the image files
    of a `file` column), the overlay video, the aligned crops' folder, the live window, the progress bar."""

    csv: Path | str | None
    csv_format: str
    sep: str
    landmarks: bool
    files: list[str] | None
    overlay: Path | str | None
    crops: Path | str | None
    view: LiveView | None
    progress: bool


def _as_ks_error(error: BaseException) -> KSError:
    """A run's failure as a KSError: an OSError is an output that could not be written."""
    return error if isinstance(error, KSError) else OutputError(f"cannot write an output: {error}")


class _EachFrameAlone(FaceStage):
    """A face stage for unrelated pictures: reset before each one, so nothing of a picture (a tracker's face, `auto`'s
    choice) reaches the next; `auto` then chooses per picture (aligned crops and photos may be mixed)."""

    def __init__(self, stage: FaceStage) -> None:
        super().__init__(stage.preprocess, stage.template, stage.max_faces)
        self.stage, self.name, self.landmark_count = stage, stage.name, stage.landmark_count

    def __call__(self, image: np.ndarray, index: int) -> Face:
        self.stage.reset()
        return self.stage(image, index)

    def faces(self, image: np.ndarray, index: int) -> list[Face]:
        self.stage.reset()
        return self.stage.faces(image, index)

    @property
    def crowded_frames(self) -> int:
        return self.stage.crowded_frames
