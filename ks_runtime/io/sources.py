"""Where frames come from: video files, image files and folders, webcams and numpy iterators (`ks_runtime.inputs`
opens any of them, or a SynthAU sequence, from what a user names; the bounded queue to the scheduler is `queues.py`).
Images are pictures of their own (`independent`: each its own one-frame sequence) unless they are asked to be one
video's frames.

A source is an iterable of `SourceFrame(image, timestamp, index)` with RGB uint8 images, timestamps in
seconds taken from the source, and a `live` flag. `FrameQueue` (queues.py) applies the back-pressure rule: a file
source never loses a frame (the reader waits), a live source drops the oldest frame and counts it. A live
source (`CameraSource`, `SimulatedCamera`) stamps each frame with its wall-clock arrival, in seconds from the
first, and numbers frames as the camera delivered them, so a dropped frame leaves a gap in the numbers.
A frame that cannot be decoded ends the source after every frame before it has been yielded: a video that
decodes fewer frames than its container promises (truncated, or damaged) ends there with a warning in
`source.warnings` (promised and decoded counts), a file with no decodable frame, an unreadable image or a camera
that stops raises a `SourceError` naming the file and the frame.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np

from ks_runtime.core.errors import ConfigError, DataError
from ks_runtime.core.preprocess import as_uint8_colour

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".avi", ".mkv", ".mp4", ".mov", ".m4v", ".webm", ".wmv", ".mpg", ".mpeg", ".ts", ".flv")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
FOLDER_FPS = 30.0  # OpenFace's assumption for image sequences, whose files carry no time
MAX_FPS = 1000.0  # past a high-speed camera's rate: a typo, not a frame rate
# A container whose frame count is an estimate (duration x fps) may list a few frames more than it holds.
COUNT_SLACK_FRAMES, COUNT_SLACK_FRACTION = 2, 0.02


class SourceError(DataError):
    """A source cannot be opened or a frame cannot be decoded; the message names the file and the frame."""


class SourceFrame(NamedTuple):
    """One frame as a source yields it: RGB uint8 [H, W, 3], seconds from the source, 0-based index."""

    image: np.ndarray
    timestamp: float
    index: int


class Source:
    """An iterable of SourceFrame. `live` sources (cameras) may drop frames; file sources never do.

    `length` is the expected frame count (an estimate for some containers; None if unknown), `fps` the
    nominal rate, and `labels` [T, U] / `label_columns` the ground truth when the source has one (SynthAU).
    """

    name: str = "frames"
    live: bool = False
    fps: float | None = None
    length: int | None = None
    labels: np.ndarray | None = None
    label_columns: tuple[str, ...] | None = None
    # What the last pass over the source noticed without failing (a video shorter than its container says).
    warnings: tuple[str, ...] = ()
    # Every frame is a sequence of its own (unrelated pictures): no clip ever holds two of them.
    independent: bool = False
    # The image file of each frame, by index, for sources read from image files (the CSV's `file` column).
    files: list[Path] | None = None

    @property
    def realtime(self) -> bool:
        """Frames come at the source's own pace (a camera, or a file replayed at its rate), so latency counts from
        their arrival; a file read flat out sits in the queue ahead of the engine, and latency counts from when
        the runtime takes each frame off it."""
        return self.live

    def __iter__(self) -> Iterator[SourceFrame]:
        raise NotImplementedError

    def close(self) -> None:
        """Release whatever the source holds (a capture device, a file)."""


def check_fps(fps: float | None, where: str = "fps") -> float | None:
    """A frame rate given by the user, or None (the source's own, or FOLDER_FPS): zero, negative, NaN or past
    MAX_FPS is refused, not replaced (a zero would silently become 30, a negative one write negative timestamps)."""
    if fps is not None and not 0 < fps <= MAX_FPS:
        raise ConfigError(f"{where}={fps} is out of range; allowed: (0, {MAX_FPS:g}] frames per second")
    return fps


def to_rgb(image: Any, where: str, colour: str = "BGR") -> np.ndarray:
    """Any decoded image (uint8/uint16, gray/BGR/BGRA) -> RGB uint8 [H, W, 3]; anything else is refused."""
    try:
        image = as_uint8_colour(image, where)
    except (TypeError, ValueError) as error:
        raise SourceError(str(error)) from None
    return np.ascontiguousarray(image[..., ::-1]) if colour == "BGR" else image


class VideoSource(Source):
    """A video file read with OpenCV; timestamps from the container (CAP_PROP_POS_MSEC)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        if not self.path.is_file():
            raise SourceError(f"{self.path}: no such video file")
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            raise SourceError(f"{self.path}: OpenCV cannot open this video (unknown container or codec?)")
        fps = capture.get(cv2.CAP_PROP_FPS)
        count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
        capture.release()
        self.fps = fps if math.isfinite(fps) and fps > 0 else None
        self.length = int(count) if math.isfinite(count) and count > 0 else None

    def __iter__(self) -> Iterator[SourceFrame]:
        self.warnings = ()
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            raise SourceError(f"{self.path}: OpenCV cannot open this video")
        try:
            index, last_time = 0, -1.0
            while True:
                ok, image = capture.read()
                if not ok:
                    break
                where = f"{self.path}: frame {index}"
                stamp = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                # Some backends report no position; the nominal rate is then the only clock there is.
                if not math.isfinite(stamp) or (index > 0 and stamp <= last_time):
                    stamp = index / self.fps if self.fps else float(index)
                last_time = stamp
                yield SourceFrame(to_rgb(image, where), stamp, index)
                index += 1
            self._check_end(capture, index)
        finally:
            capture.release()

    def _check_end(self, capture: cv2.VideoCapture, read: int) -> None:
        """Decoding stopped after `read` frames: the end, or an end the container did not announce? Fewer frames
        than it promises (a truncated or damaged file) is a warning: every decodable frame was processed and
        there is nothing to retry. A file with no decodable frame at all is an error."""
        resumes = capture.grab()  # the decoder can go on past a damaged frame: damage, not the end
        expected = self.length or 0
        if read == 0:
            listed = f" of the {expected} its container lists" if expected else ""
            raise SourceError(f"{self.path}: no frame{listed} can be decoded (a damaged file, or a codec OpenCV lacks)")
        short = expected - read > max(COUNT_SLACK_FRAMES, COUNT_SLACK_FRACTION * expected)
        if resumes or short:
            what = "is corrupt: later frames decode again" if resumes else "is truncated or corrupt"
            counts = f"the container promises {expected} frames, {read} decoded" if expected else f"{read} decoded"
            self.warnings = (
                f"{self.path}: {counts}: frame {read} cannot be decoded (the video {what}); the run ends there, "
                f"with every frame before it",
            )


def list_images(folder: Path) -> list[Path]:
    """Image files of a folder in natural order (frame2 before frame10)."""

    def natural(path: Path) -> tuple:
        parts = []
        for digits, text in _split_digits(path.name):
            parts.append((0, int(digits), "") if digits else (1, 0, text))
        return tuple(parts)

    return sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()), key=natural)


def _split_digits(name: str) -> list[tuple[str, str]]:
    out, current, is_digit = [], "", None
    for ch in name:
        if is_digit is not None and ch.isdigit() != is_digit:
            out.append((current, "") if is_digit else ("", current))
            current = ""
        current, is_digit = current + ch, ch.isdigit()
    if current:
        out.append((current, "") if is_digit else ("", current))
    return out


class ImageFiles(Source):
    """Image files in the order given. Unless `sequence`, each is a picture of its own (`independent`): its own
    one-frame sequence, scored from a clip of the image repeated n times (a stream's edge frame replicated, as at
    any stream's end), timestamp 0, never in a clip with another image. With `sequence` they are the frames of one
    video, timestamps index / fps (FOLDER_FPS, OpenFace's, by default)."""

    def __init__(
        self, files: Iterable[Path | str], name: str | None = None, sequence: bool = False, fps: float | None = None
    ) -> None:
        self.files = [Path(f) for f in files]
        if not self.files:
            raise SourceError(f"{name or 'images'}: no image files ({', '.join(IMAGE_SUFFIXES)})")
        for file in self.files:
            if not file.is_file():
                raise SourceError(f"{file}: no such image file")
        self.name = name or (str(self.files[0]) if len(self.files) == 1 else f"{len(self.files)} images")
        self.independent = not sequence
        check_fps(fps)
        self.fps = (fps or FOLDER_FPS) if sequence else None
        self.length = len(self.files)

    def __iter__(self) -> Iterator[SourceFrame]:
        what = "image" if self.independent else "frame"
        self.warnings = ()
        sizes = _SizeCheck()
        try:
            for index, file in enumerate(self.files):
                # UNCHANGED keeps 16-bit and gray images as they are; to_rgb then brings them to 8-bit RGB.
                image = cv2.imread(str(file), cv2.IMREAD_UNCHANGED)
                if image is None:
                    raise SourceError(
                        f"{file}: {what} {index} cannot be decoded; the {index} {what}s before it were processed"
                    )
                if not self.independent:
                    sizes.see(image.shape, file, index)
                stamp = index / self.fps if self.fps else 0.0
                yield SourceFrame(to_rgb(image, f"{file}: {what} {index}"), stamp, index)
        finally:
            self.warnings = sizes.warnings()


class _SizeCheck:
    """The frames of one video share a size. One of another size is still run (a user's folder of crops with a
    stray frame should not lose the run), but not silently: the first such file is named once, with the count.
    An aligned-crop face stage would stretch it to the network's square input; a detector would see another
    scene."""

    def __init__(self) -> None:
        self.first: tuple[int, int] | None = None
        self.odd: tuple[Path, int, tuple[int, int]] | None = None
        self.count = 0

    def see(self, shape: tuple[int, ...], file: Path, index: int) -> None:
        size = (int(shape[1]), int(shape[0]))  # width, height
        if self.first is None:
            self.first = size
        elif size != self.first:
            self.count += 1
            self.odd = self.odd or (file, index, size)  # logged once, with the count, when the run ends

    def warnings(self) -> tuple[str, ...]:
        return () if self.odd is None else (self._text(),)

    def _text(self) -> str:
        file, index, (w, h) = self.odd
        first_w, first_h = self.first
        shape = "" if w == h or first_w != first_h else ", not square"
        return (
            f"{file}: frame {index} is {w}x{h}{shape}, the sequence's first frame is {first_w}x{first_h}; it was run "
            f"as it is (an aligned crop is stretched to the network's input): {self.count} frames of another size"
        )


class ImageFolderSource(ImageFiles):
    """A folder's images in natural order (frame2 before frame10): the frames of one video (aligned face crops, or
    raw frames), or with `sequence=False` pictures of their own (`ImageFiles`)."""

    def __init__(self, path: Path | str, fps: float | None = None, sequence: bool = True) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise SourceError(f"{self.path}: no such image folder")
        super().__init__(list_images(self.path), str(self.path), sequence, fps)


class ArraySource(Source):
    """Any iterable of numpy frames (or of (frame, timestamp) pairs), for the Python API.

    Frames are RGB unless `colour="BGR"` (as OpenCV decodes). Without timestamps: index / fps when `fps` is
    given, else seconds since the first frame arrived.
    """

    def __init__(
        self,
        frames: Iterable,
        fps: float | None = None,
        colour: str = "RGB",
        live: bool = False,
        name: str = "frames",
        length: int | None = None,
    ) -> None:
        if colour not in ("RGB", "BGR"):
            raise ValueError(f"colour must be 'RGB' or 'BGR', got {colour!r}")
        check_fps(fps)
        self.frames, self.fps, self.colour, self.live, self.name = frames, fps, colour, live, name
        self.length = length if length is not None else (len(frames) if hasattr(frames, "__len__") else None)

    def __iter__(self) -> Iterator[SourceFrame]:
        started = None
        for index, item in enumerate(self.frames):
            image, stamp = item if isinstance(item, tuple) else (item, None)
            if stamp is None:
                if self.fps:
                    stamp = index / self.fps
                else:
                    now = time.perf_counter()
                    started = now if started is None else started
                    stamp = now - started
            yield SourceFrame(to_rgb(image, f"{self.name}: frame {index}", self.colour), float(stamp), index)


class CameraSource(Source):
    """A webcam (OpenCV capture device `index`), live: frames come at the camera's rate whether or not the engine
    keeps up. Timestamps are wall-clock arrival times from the first frame; `max_frames` ends it (None: never,
    until the run is stopped)."""

    live = True

    def __init__(
        self,
        index: int,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        max_frames: int | None = None,
    ) -> None:
        self.index, self.max_frames = int(index), max_frames
        self.name = f"webcam {self.index}"
        self.capture = cv2.VideoCapture(self.index)
        if not self.capture.isOpened():
            self.capture.release()
            raise SourceError(
                f"input {self.index}: cannot open webcam {self.index} (no camera at that index, or "
                f"it is in use; give a video file, an image folder or a synthau: spec instead)"
            )
        for prop, value in (
            (cv2.CAP_PROP_FRAME_WIDTH, width),
            (cv2.CAP_PROP_FRAME_HEIGHT, height),
            (cv2.CAP_PROP_FPS, fps),
        ):
            if value:
                self.capture.set(prop, float(value))
        rate = self.capture.get(cv2.CAP_PROP_FPS)
        self.fps = rate if math.isfinite(rate) and rate > 0 else None
        self.length = max_frames

    def __iter__(self) -> Iterator[SourceFrame]:
        if self.capture is None:
            raise SourceError(f"{self.name}: closed")
        started = None
        index = 0
        while self.max_frames is None or index < self.max_frames:
            ok, image = self.capture.read()
            now = time.perf_counter()
            if not ok:
                raise SourceError(
                    f"{self.name}: frame {index} could not be read (camera disconnected?); the "
                    f"{index} frames before it were processed"
                )
            started = now if started is None else started
            yield SourceFrame(to_rgb(image, f"{self.name}: frame {index}"), now - started, index)
            index += 1

    def close(self) -> None:
        if self.capture is not None:
            self.capture.release()
            self.capture = None


class SimulatedCamera(Source):
    """A stand-in for a webcam: a thread of its own delivers `frames` at `fps`, as a camera does, whether or not
    anyone reads them; a reader slower than that finds only the newest `buffer` frames (a camera driver's ring)
    and the rest are counted in `missed`. Live, with arrival timestamps, like CameraSource."""

    live = True

    def __init__(
        self,
        frames: Iterable[np.ndarray],
        fps: float,
        colour: str = "RGB",
        buffer: int = 4,
        name: str = "simulated camera",
    ) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.frames, self.fps, self.colour, self.buffer, self.name = frames, fps, colour, buffer, name
        self.length = len(frames) if hasattr(frames, "__len__") else None
        self.missed = 0
        self._stop = threading.Event()

    def _run(self, ring: deque, cond: threading.Condition) -> None:
        started = time.perf_counter()
        end: object = None
        try:
            for index, image in enumerate(self.frames):
                delay = started + index / self.fps - time.perf_counter()
                if self._stop.is_set() or (delay > 0 and self._stop.wait(delay)):
                    break
                with cond:
                    if len(ring) == self.buffer:
                        ring.popleft()
                        self.missed += 1
                    ring.append((index, image, time.perf_counter() - started))
                    cond.notify_all()
        except Exception as error:  # handed to the consumer, which re-raises it: never a silent hang
            end = error
        finally:
            with cond:
                ring.append(end if end is not None else None)  # None: the end
                cond.notify_all()

    def __iter__(self) -> Iterator[SourceFrame]:
        ring: deque = deque()
        cond = threading.Condition()
        self._stop.clear()
        thread = threading.Thread(target=self._run, args=(ring, cond), name=f"ks-camera:{self.name}", daemon=True)
        thread.start()
        try:
            while True:
                with cond:
                    while not ring:
                        cond.wait()
                    item = ring.popleft()
                if item is None:
                    return
                if isinstance(item, Exception):
                    raise SourceError(f"{self.name}: the camera stopped: {item}") from item
                index, image, stamp = item
                yield SourceFrame(to_rgb(image, f"{self.name}: frame {index}", self.colour), stamp, index)
        finally:
            self._stop.set()
            thread.join(timeout=5.0)

    def close(self) -> None:
        self._stop.set()


class Paced(Source):
    """Replays a file source at its own frame rate, as a camera would deliver it (for latency figures)."""

    def __init__(self, source: Source, fps: float | None = None, live: bool = False) -> None:
        self.source, self.live = source, live
        self.fps = check_fps(fps) or source.fps or FOLDER_FPS
        self.name, self.length = source.name, source.length
        self.labels, self.label_columns = source.labels, source.label_columns
        self.independent, self.files = source.independent, source.files

    @property
    def realtime(self) -> bool:
        return True  # frames arrive at the source's rate, as from a camera

    @property
    def warnings(self) -> tuple[str, ...]:
        return self.source.warnings

    def __iter__(self) -> Iterator[SourceFrame]:
        start = time.perf_counter()
        for count, item in enumerate(self.source):
            delay = start + count / self.fps - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            yield item

    def close(self) -> None:
        self.source.close()


def is_camera_spec(spec: object) -> bool:
    """A webcam index: an int, or a string of digits that names no file or folder ("0", as `--input 0`)."""
    if isinstance(spec, bool):
        return False
    return isinstance(spec, int) or (isinstance(spec, str) and spec.isdigit() and not Path(spec).exists())


# ----------------------------------------------------------------------------------------------------------
# Back-pressure: the bounded queue between a source's reader thread and the engine
