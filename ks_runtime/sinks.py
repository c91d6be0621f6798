"""Where results go: the OpenFace-compatible CSV, a pandas table, the AU timeline PNG, the overlay video and
live view, and the run summary.

CSV layout (DESIGN.md): `frame,face_id,timestamp,confidence,success,AU01_c,...,AU01_p,...`: every `_c`
column (0/1 at the AU's threshold from the manifest) and then every `_p` column (the probability, our
extension), AUs in the bundle's order. `frame` counts from 1 as OpenFace does; `timestamp` is the source's,
in seconds; a frame without a face has success=0 and empty AU values. The file is flushed after every
batch of rows, so a run that stops on bad input leaves a complete file of what it processed.

Overlay (`OverlaySink`, `LiveView`): each frame with its face box, the points it was aligned on, and a bar per
AU (probability, green at or above the AU's threshold), drawn with OpenCV. Results come out of the engine
after their frames (look-ahead policies), so a `FrameTap` around the face stage keeps each frame until its
result is final.
"""

from __future__ import annotations

import io
import logging
import math
import os
import sys
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from ks_runtime.errors import ConfigError, OutputError
from ks_runtime.faces import Face, FaceStage
from ks_runtime.metrics import F1Report, f1_report
from ks_runtime.policy import lookahead
from ks_runtime.stream import FrameResult

log = logging.getLogger(__name__)

ID_COLUMNS = ("frame", "face_id", "timestamp", "confidence", "success")
PERCENTILES = (50, 95, 99)


def csv_columns(au_columns: Sequence[str]) -> list[str]:
    """The CSV's header: the id columns, then every AU's _c, then every AU's _p."""
    return [*ID_COLUMNS, *(f"{c}_c" for c in au_columns), *(f"{c}_p" for c in au_columns)]


def format_row(result: FrameResult, thresholds: np.ndarray, sep: str = ",") -> str:
    """One CSV line (no newline): empty AU values and success=0 where there is no face."""
    ids = [str(result.frame), "0", f"{result.timestamp:.3f}", f"{result.confidence:.2f}",
           "1" if result.success else "0"]
    if result.probs is None:
        values = [""] * (2 * len(thresholds))
    else:
        probs = np.asarray(result.probs, np.float64)
        values = [str(int(p >= t)) for p, t in zip(probs, thresholds, strict=True)] + [f"{p:.6f}" for p in probs]
    return sep.join(ids + values)


class CsvSink:
    """Writes results as they come, one OpenFace-style row per frame, flushed after every write.

    `sep=", "` writes OpenFace 2's own separator, for parsers that expect it; the default has no spaces.
    """

    def __init__(self, path: Path | str, au_columns: Sequence[str], thresholds: Sequence[float], sep: str = ","):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.thresholds = np.asarray(thresholds, np.float64)
        if len(self.thresholds) != len(au_columns):
            raise ValueError(f"{len(au_columns)} AU columns but {len(self.thresholds)} thresholds")
        self.sep = sep
        self.rows = 0
        self._file: io.TextIOBase | None = open(self.path, "w", newline="")  # noqa: SIM115 (closed in close())
        self._file.write(sep.join(csv_columns(au_columns)) + "\n")
        self._file.flush()

    def write(self, results: Iterable[FrameResult]) -> None:
        if self._file is None:
            raise ValueError(f"{self.path}: the CSV sink is closed")
        lines = [format_row(r, self.thresholds, self.sep) + "\n" for r in results]
        self._file.writelines(lines)
        self._file.flush()
        self.rows += len(lines)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> CsvSink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def results_table(results: Sequence[FrameResult], au_columns: Sequence[str], thresholds: Sequence[float]
                  ) -> pd.DataFrame:
    """The CSV's rows as a DataFrame (same columns; NaN where no face)."""
    u = len(au_columns)
    probs = np.full((len(results), u), np.nan)
    for i, r in enumerate(results):
        if r.probs is not None:
            probs[i] = r.probs
    present = ~np.isnan(probs)
    with np.errstate(invalid="ignore"):
        labels = np.where(present, probs >= np.asarray(thresholds, np.float64), np.nan)
    data: dict[str, object] = {
        "frame": np.array([r.frame for r in results], np.int64),
        "face_id": np.zeros(len(results), np.int64),
        "timestamp": np.array([r.timestamp for r in results], np.float64),
        "confidence": np.array([r.confidence for r in results], np.float64),
        "success": np.array([int(r.success) for r in results], np.int64),
    }
    for j, c in enumerate(au_columns):
        data[f"{c}_c"] = pd.array(labels[:, j], dtype="Int64") if not present[:, j].all() else labels[:, j].astype(
            np.int64)
    for j, c in enumerate(au_columns):
        data[f"{c}_p"] = probs[:, j]
    return pd.DataFrame(data, columns=csv_columns(au_columns))


def read_results_csv(path: Path | str) -> pd.DataFrame:
    """Read a runtime CSV, or one with OpenFace 2's ", " separators, with stripped column names."""
    table = pd.read_csv(path, skipinitialspace=True)
    table.columns = [c.strip() for c in table.columns]
    return table


# --------------------------------------------------------------------------------------------------------
# The AU timeline: one lane per AU, probability over time, ground truth beside it when known

LANE, TRUTH, MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, AXIS = 34, 7, 64, 16, 34, 34
BLUE, GREEN, GREY, DARK, RED = (200, 90, 20), (60, 160, 60), (225, 225, 225), (40, 40, 40), (40, 40, 200)  # BGR


def timeline_png(path: Path | str, timestamps: np.ndarray, probs: np.ndarray, au_columns: Sequence[str],
                 thresholds: Sequence[float], labels: np.ndarray | None = None, title: str = "",
                 width: int | None = None) -> Path:
    """Draw probs [T, U] (NaN where no face) against timestamps [T] as one lane per AU, with the threshold
    dashed; labels [T, U] (1 / 0 / -1) add a green ground-truth strip under each lane. OpenCV only."""
    path = Path(path)
    timestamps = np.asarray(timestamps, np.float64)
    probs = np.asarray(probs, np.float64)
    t_count, u = probs.shape
    if len(timestamps) != t_count or len(au_columns) != u:
        raise ValueError(f"timeline: {len(timestamps)} timestamps, probs {probs.shape}, {len(au_columns)} AUs")
    plot_w = width or int(np.clip(2 * t_count, 600, 2400))
    lane = LANE + (TRUTH + 2 if labels is not None else 0)
    height = MARGIN_TOP + u * lane + AXIS
    image = np.full((height, MARGIN_LEFT + plot_w + MARGIN_RIGHT, 3), 255, np.uint8)
    t0 = float(timestamps[0]) if t_count else 0.0
    t1 = float(timestamps[-1]) if t_count else 1.0
    span = max(t1 - t0, 1e-9)
    xs = (MARGIN_LEFT + (timestamps - t0) / span * (plot_w - 1)).round().astype(np.int32)
    font = cv2.FONT_HERSHEY_SIMPLEX
    text = title or "AU probabilities"
    if labels is not None:
        text += "   (green: ground truth)"
    cv2.putText(image, text, (MARGIN_LEFT, 22), font, 0.5, DARK, 1, cv2.LINE_AA)
    for j in range(u):
        top = MARGIN_TOP + j * lane
        bottom = top + LANE - 4
        cv2.rectangle(image, (MARGIN_LEFT, top), (MARGIN_LEFT + plot_w - 1, bottom), GREY, -1)
        cv2.putText(image, au_columns[j], (6, top + LANE // 2 + 2), font, 0.42, DARK, 1, cv2.LINE_AA)
        y_threshold = int(round(bottom - thresholds[j] * (bottom - top)))
        for x in range(MARGIN_LEFT, MARGIN_LEFT + plot_w, 8):
            cv2.line(image, (x, y_threshold), (min(x + 3, MARGIN_LEFT + plot_w - 1), y_threshold), RED, 1)
        ys = np.round(bottom - probs[:, j] * (bottom - top))
        valid = ~np.isnan(ys)
        for run in _runs(valid):
            points = np.stack([xs[run], ys[run].astype(np.int32)], axis=1).reshape(-1, 1, 2)  # (k, 1, 2) for cv2
            cv2.polylines(image, [points], False, BLUE, 1, cv2.LINE_AA)
        if labels is not None:
            strip = bottom + 2
            for run in _runs(np.asarray(labels[:, j]) == 1):
                x_end = xs[run[-1] + 1] if run[-1] + 1 < t_count else MARGIN_LEFT + plot_w - 1
                cv2.rectangle(image, (int(xs[run[0]]), strip), (int(x_end), strip + TRUTH - 1), GREEN, -1)
    axis_y = MARGIN_TOP + u * lane + 4
    cv2.line(image, (MARGIN_LEFT, axis_y), (MARGIN_LEFT + plot_w - 1, axis_y), DARK, 1)
    for tick in _ticks(t0, t1):
        x = int(round(MARGIN_LEFT + (tick - t0) / span * (plot_w - 1)))
        cv2.line(image, (x, axis_y), (x, axis_y + 4), DARK, 1)
        cv2.putText(image, f"{tick:g}s", (x - 8, axis_y + 18), font, 0.38, DARK, 1, cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        written = cv2.imwrite(str(path), image)
    except cv2.error:
        written = False
    if not written:
        raise OutputError(f"{path}: could not write the timeline image (is the extension .png?)")
    return path


def _runs(mask: np.ndarray) -> list[np.ndarray]:
    """Index arrays of the consecutive True runs of a boolean mask."""
    index = np.flatnonzero(mask)
    if not len(index):
        return []
    return np.split(index, np.flatnonzero(np.diff(index) > 1) + 1)


def _ticks(t0: float, t1: float, target: int = 8) -> list[float]:
    span = max(t1 - t0, 1e-9)
    raw = span / target
    step = min((s * 10 ** math.floor(math.log10(raw)) for s in (1, 2, 5, 10)), key=lambda s: abs(s - raw))
    first = math.ceil(t0 / step) * step
    return [round(first + i * step, 6) for i in range(int((t1 - first) / step) + 1)]


# --------------------------------------------------------------------------------------------------------
# Overlay: frames with their face and AU bars, as a video file or a live window

OVERLAY_CODECS = {".mp4": "mp4v", ".avi": "FFV1", ".mkv": "FFV1"}  # FFV1 is lossless; mp4v plays anywhere
OVERLAY_MIN_HEIGHT = 360  # smaller frames (aligned crops) are scaled up so the drawing is legible
PANEL_WIDTH = 220
FACE_COLOUR, POINT_COLOUR, ON, OFF, PANEL = (60, 220, 60), (0, 200, 255), (60, 190, 60), (150, 150, 150), (32, 32, 32)


class FrameTap(FaceStage):
    """A face stage that keeps each frame and its Face until `take(index)` collects them with the frame's result
    (the overlay). Frames a live source dropped never reach it; a frame taken evicts any older one left."""

    def __init__(self, stage: FaceStage) -> None:
        super().__init__(stage.preprocess, stage.template)
        self.stage = stage
        self.name = stage.name
        self._kept: OrderedDict[int, tuple[np.ndarray, Face]] = OrderedDict()

    def __call__(self, image: np.ndarray, index: int) -> Face:
        face = self.stage(image, index)
        self._kept[index] = (image, face)
        return face

    def reset(self) -> None:
        self.stage.reset()
        self._kept.clear()

    def take(self, index: int) -> tuple[np.ndarray, Face] | None:
        """The frame `index` and its Face (None if it never came through here)."""
        while self._kept and next(iter(self._kept)) < index:
            self._kept.popitem(last=False)
        return self._kept.pop(index, None)


def draw_overlay(image: np.ndarray, result: FrameResult, face: Face | None, au_columns: Sequence[str],
                 thresholds: Sequence[float]) -> np.ndarray:
    """One overlay frame, BGR uint8: the RGB frame (scaled up to OVERLAY_MIN_HEIGHT if smaller) with the face box
    and points, and beside it a panel with one bar per AU and the frame's number, time and confidence."""
    h, w = image.shape[:2]
    zoom = max(1, math.ceil(OVERLAY_MIN_HEIGHT / h))
    frame = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if zoom > 1:
        frame = cv2.resize(frame, (w * zoom, h * zoom), interpolation=cv2.INTER_NEAREST)
    height, width = frame.shape[:2]
    canvas = np.full((height, width + PANEL_WIDTH, 3), PANEL, np.uint8)
    canvas[:, :width] = frame
    thick = max(1, round(height / 240))
    if result.success and result.box is not None:
        x0, y0, x1, y1 = (int(round((v + 0.5) * zoom - 0.5)) for v in result.box)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), FACE_COLOUR, thick, cv2.LINE_AA)
    if result.success and face is not None and face.points is not None:
        for k, (x, y) in enumerate((face.points + 0.5) * zoom - 0.5):
            cv2.circle(canvas, (int(round(x)), int(round(y))), thick + (2 if k < 2 else 1), POINT_COLOUR, -1,
                       cv2.LINE_AA)
    font, left = cv2.FONT_HERSHEY_SIMPLEX, width + 10
    status = f"conf {result.confidence:.2f}" if result.success else "no face"
    cv2.putText(canvas, f"frame {result.frame}  {result.timestamp:.2f}s", (left, 18), font, 0.45, (230, 230, 230), 1,
                cv2.LINE_AA)
    cv2.putText(canvas, status, (left, 36), font, 0.45, (230, 230, 230) if result.success else (80, 80, 240), 1,
                cv2.LINE_AA)
    u = len(au_columns)
    row = max(10, min(26, (height - 50) // max(u, 1)))
    bar_x, bar_w = left + 44, PANEL_WIDTH - 90
    for j, column in enumerate(au_columns):
        y = 48 + j * row
        cv2.putText(canvas, column, (left, y + row - 4), font, 0.38, (230, 230, 230), 1, cv2.LINE_AA)
        cv2.rectangle(canvas, (bar_x, y + 2), (bar_x + bar_w, y + row - 3), (70, 70, 70), -1)
        if result.probs is not None:
            p = float(result.probs[j])
            cv2.rectangle(canvas, (bar_x, y + 2), (bar_x + int(round(p * bar_w)), y + row - 3),
                          ON if p >= thresholds[j] else OFF, -1)
            cv2.putText(canvas, f"{p:.2f}", (bar_x + bar_w + 4, y + row - 4), font, 0.36, (230, 230, 230), 1,
                        cv2.LINE_AA)
        tick = bar_x + int(round(float(thresholds[j]) * bar_w))
        cv2.line(canvas, (tick, y), (tick, y + row - 1), (80, 80, 240), 1)
    return canvas


def overlay_frames(results: Iterable[FrameResult], tap: FrameTap, au_columns: Sequence[str],
                   thresholds: Sequence[float]) -> Iterable[np.ndarray]:
    """The overlay frame (BGR) of each result whose frame the tap kept, in the results' order."""
    for result in results:
        kept = tap.take(result.index)
        if kept is not None:
            yield draw_overlay(kept[0], result, kept[1], au_columns, thresholds)


class OverlaySink:
    """Writes the overlay video (codec by suffix: .mp4 mp4v; .mkv / .avi FFV1, lossless), one frame per result
    in the order results come; the size is the first frame's (later frames of another size are resized)."""

    def __init__(self, path: Path | str, fps: float | None = None) -> None:
        self.path = Path(path)
        self.fourcc = OVERLAY_CODECS.get(self.path.suffix.lower())
        if self.fourcc is None:
            raise ConfigError(f"{self.path}: overlay video suffix {self.path.suffix!r} is not one of "
                              f"{', '.join(OVERLAY_CODECS)}")
        self.fps = fps or 30.0
        self.frames = 0
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None

    def write_frame(self, canvas: np.ndarray) -> None:
        """Append one overlay frame (BGR, as draw_overlay makes it)."""
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._size = (canvas.shape[1], canvas.shape[0])
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, self._size)
            if not self._writer.isOpened():
                self._writer = None
                raise OutputError(f"{self.path}: OpenCV cannot write codec {self.fourcc!r} here "
                                  f"(try .mkv, .avi or .mp4)")
        if (canvas.shape[1], canvas.shape[0]) != self._size:
            canvas = cv2.resize(canvas, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(canvas)
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


def display_problem() -> str | None:
    """Why a live window cannot open here (None when it can): no GUI in this OpenCV, or no display."""
    gui = [line.split(":", 1)[1].strip() for line in cv2.getBuildInformation().splitlines()
           if line.strip().startswith("GUI:")]
    if gui and gui[0].upper() == "NONE":
        return (f"this OpenCV ({cv2.__version__}) has no GUI (opencv-python-headless); install opencv-python for "
                f"a window, or write the overlay to a file with --overlay FILE")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display here (DISPLAY is not set); write the overlay to a file with --overlay FILE"
    return None


class LiveView:
    """The overlay in a window (`--show`); `stopped` once the user presses q or Esc or closes it."""

    WINDOW = "ks-run"

    def __init__(self) -> None:
        problem = display_problem()
        if problem is None:
            try:
                cv2.namedWindow(self.WINDOW, cv2.WINDOW_NORMAL)
            except cv2.error as error:
                problem = f"OpenCV cannot open a window ({str(error).strip().splitlines()[-1]})"
        if problem is not None:
            raise ConfigError(f"--show: {problem}")
        self.stopped = False

    def write_frame(self, canvas: np.ndarray) -> None:
        """Show one overlay frame (BGR); notice a key press or a closed window."""
        if self.stopped:
            return
        cv2.imshow(self.WINDOW, canvas)
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27) or cv2.getWindowProperty(self.WINDOW, cv2.WND_PROP_VISIBLE) < 1:
            self.stopped = True

    def close(self) -> None:
        try:
            cv2.destroyWindow(self.WINDOW)
        except cv2.error:
            pass


# --------------------------------------------------------------------------------------------------------
# The summary at the end of a run


@dataclass
class RunSummary:
    """What a run did: frames, throughput, latency percentiles (arrival -> final, frames with a face),
    dropped frames, the policy's look-ahead at the source's rate, and F1 when the source has labels."""

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
        lines = [f"frames {self.frames} ({self.faces} with a face, {self.streams} stream(s)), dropped {self.dropped}",
                 f"{self.fps:.1f} fps over {self.seconds:.2f} s ({self.engine})",
                 f"latency ms, arrival to result: {lat}",
                 f"policy {self.policy}: look-ahead {ahead}"]
        if self.f1 is not None:
            lines.append(f"streamed F1 {self.f1.mean:.4f} (all-positive floor {self.f1.mean_floor:.4f}) over "
                         f"{int(self.f1.support.max()) if len(self.f1.support) else 0} labelled frames")
        lines += [f"error: {e}" for e in self.errors]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"frames": self.frames, "faces": self.faces, "dropped": self.dropped, "streams": self.streams,
                "seconds": self.seconds, "fps": self.fps, "latency_ms": {f"p{p}": v for p, v in
                                                                           self.latency_ms.items()},
                "policy": self.policy, "lookahead_frames": self.lookahead_frames, "lookahead_ms": self.lookahead_ms,
                "source_fps": self.source_fps, "engine": self.engine,
                "mean_f1": self.f1.mean if self.f1 is not None else None, "errors": list(self.errors)}


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
        return self.values[:min(self.seen, self.capacity)]


class RunStats:
    """Accumulates results into a RunSummary (and the F1 against a source's labels, when it has some)."""

    def __init__(self, policy: str, clip_len: int, au_columns: Sequence[str], thresholds: Sequence[float],
                 source_fps: float | None = None, engine: str = "", labels: np.ndarray | None = None,
                 clock_start: float | None = None, clip_stride: int = 1) -> None:
        self.policy, self.clip_len, self.source_fps, self.engine = policy, clip_len, source_fps, engine
        self.clip_stride = clip_stride
        self.columns, self.thresholds = list(au_columns), np.asarray(thresholds, np.float64)
        self.labels = labels
        self.start = clock_start
        self.end = clock_start
        self.frames = self.faces = 0
        self.latencies = LatencyReservoir()
        self.streams: set[tuple[str, int]] = set()
        self.probs: dict[int, np.ndarray] = {}

    def add(self, results: Iterable[FrameResult]) -> None:
        for r in results:
            self.frames += 1
            self.start = r.arrival if self.start is None else min(self.start, r.arrival)
            self.end = r.final if self.end is None else max(self.end, r.final)
            if r.success:
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

    def summary(self, dropped: int = 0, errors: Sequence[str] = ()) -> RunSummary:
        seconds = (self.end - self.start) if self.start is not None and self.end is not None else 0.0
        lat = self.latencies.sample() * 1e3
        percentiles = {p: float(np.percentile(lat, p)) if len(lat) else float("nan") for p in PERCENTILES}
        return RunSummary(self.frames, self.faces, dropped, len(self.streams), seconds, percentiles, self.policy,
                          self.clip_len, self.source_fps, self.engine, self.f1(), list(errors), self.clip_stride)
