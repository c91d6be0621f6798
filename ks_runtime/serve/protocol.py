"""What travels over the wire, and the limits it is held to.

In: a binary WebSocket message is one encoded frame (JPEG, PNG or WebP); frames are numbered by arrival, from 0,
refused and dropped ones included, so a client maps the n-th frame it sent to `index` n. A text message is a JSON
command: {"start": {...}} or {"stop": true}. Out: JSON text messages, each with a `type` (hello, result, stats,
stopped, error). docs/serving.md shows every shape.
"""

from __future__ import annotations

import json
import math
import struct
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from ks_runtime.core.errors import ConfigError, DataError
from ks_runtime.core.results import FrameResult
from ks_runtime.io.sources import SourceError, to_rgb

# Each limit's allowed range (the CLI checks its flags against them, Limits its fields).
LIMIT_RANGES: dict[str, tuple[float, float]] = {
    "max_streams": (1, 1024),
    "max_frame_bytes": (1024, 64 * 2**20),
    "max_side": (16, 16384),
    "max_fps": (1.0, 1000.0),
    "max_video_bytes": (1024, 2**40),
    "video_jobs": (1, 64),
}
COMMANDS = ("start", "stop")
START_FIELDS = ("fps", "width", "height")  # what a client may declare up front, to be refused before its first frame
# PNG: the signature, then the IHDR chunk (length, type, width, height). WebP: RIFF, size, WEBP, the first chunk.
PNG_SIGNATURE, JPEG_START, RIFF, WEBP = b"\x89PNG\r\n\x1a\n", b"\xff\xd8", b"RIFF", b"WEBP"
# JPEG markers that start a frame header (SOF0..SOF15 but DHT, JPG and DAC, which share the range).
JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
JPEG_BARE_MARKERS = frozenset([0x01, *range(0xD0, 0xD9)])  # markers without a length field


@dataclass(frozen=True)
class Limits:
    """What the server accepts. max_streams: WebSocket streams open at once; max_frame_bytes: an encoded frame;
    max_side: a frame's longer side in pixels; max_fps: frames a stream may send in any one second;
    max_video_bytes: a POSTed video; video_jobs: POSTed videos scored at once."""

    max_streams: int = 8
    max_frame_bytes: int = 2 * 2**20
    max_side: int = 1920
    max_fps: float = 60.0
    max_video_bytes: int = 512 * 2**20
    video_jobs: int = 1

    def __post_init__(self) -> None:
        for name, (low, high) in LIMIT_RANGES.items():
            value = getattr(self, name)
            if not low <= value <= high:  # NaN fails too
                raise ConfigError(f"{name}={value} is out of range; allowed: {low:g}..{high:g}")

    def to_dict(self) -> dict:
        return asdict(self)


class Refusal(DataError):
    """A frame, message or stream the server refuses; the message names the frame and the limit with its value.
    `reason` is the limit's name, or `format`, `undecodable`, `message` (metrics count refusals by it)."""

    def __init__(self, message: str, reason: str, limit: float | None = None) -> None:
        super().__init__(message)
        self.reason, self.limit = reason, limit

    def to_message(self, index: int | None = None) -> dict:
        out: dict = {"type": "error", "message": str(self), "reason": self.reason}
        if self.limit is not None:
            out["limit"], out["value"] = self.reason, self.limit
        if index is not None:
            out["index"] = index
        return out


def image_size(data: bytes, where: str) -> tuple[str, int, int]:
    """(format, width, height) from an encoded image's header, without decoding it: OpenCV decodes a whole image
    to learn its size, and a small file of a huge flat picture would take gigabytes before a size check."""
    if data.startswith(PNG_SIGNATURE) and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return "PNG", width, height
    if data.startswith(JPEG_START):
        return ("JPEG", *_jpeg_size(data, where))
    if data[:4] == RIFF and data[8:12] == WEBP and len(data) >= 30:
        return ("WebP", *_webp_size(data, where))
    raise Refusal(f"{where}: not a JPEG, PNG or WebP image (it starts with {data[:8]!r})", "format")


def _jpeg_size(data: bytes, where: str) -> tuple[int, int]:
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            break
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
        elif marker in JPEG_BARE_MARKERS:
            at += 2
        elif marker in JPEG_FRAME_MARKERS and at + 9 <= len(data):
            height, width = struct.unpack(">HH", data[at + 5 : at + 9])
            return width, height
        else:
            at += 2 + struct.unpack(">H", data[at + 2 : at + 4])[0]
    raise Refusal(f"{where}: a JPEG without a readable frame header (damaged or truncated)", "undecodable")


def _webp_size(data: bytes, where: str) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8 ":  # lossy: 14-bit sizes after the key frame's start code
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":  # lossless: 14-bit sizes minus one, packed after the signature byte
        bits = struct.unpack("<I", data[21:25])[0]
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: 24-bit canvas sizes minus one
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    raise Refusal(f"{where}: a WebP image with an unknown first chunk {chunk!r}", "undecodable")


def check_frame(data: bytes, index: int, limits: Limits) -> None:
    """Refuse a frame over max_frame_bytes, not an image of ours, or larger than max_side, before decoding it."""
    where = f"frame {index}"
    if len(data) > limits.max_frame_bytes:
        raise Refusal(
            f"{where}: {len(data)} bytes is over max_frame_bytes={limits.max_frame_bytes}",
            "max_frame_bytes",
            limits.max_frame_bytes,
        )
    kind, width, height = image_size(data, where)
    check_side(width, height, f"{where} ({kind})", limits)


def check_side(width: int, height: int, where: str, limits: Limits) -> None:
    if max(width, height) > limits.max_side:
        raise Refusal(
            f"{where}: {width}x{height} pixels is over max_side={limits.max_side}", "max_side", limits.max_side
        )


def decode_frame(data: bytes, index: int, limits: Limits) -> np.ndarray:
    """An encoded frame -> RGB uint8 [H, W, 3]."""
    where = f"frame {index}"
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise Refusal(f"{where}: OpenCV cannot decode this image (damaged or truncated)", "undecodable")
    check_side(image.shape[1], image.shape[0], where, limits)
    try:
        return to_rgb(image, where, "BGR")
    except SourceError as error:
        raise Refusal(str(error), "undecodable") from None


class FrameRate:
    """Holds a stream to `max_fps`: a frame is admitted when fewer than max_fps were admitted in the second
    before it."""

    def __init__(self, max_fps: float) -> None:
        self.max_fps = max_fps
        self._times: deque[float] = deque()

    def admit(self, now: float) -> bool:
        while self._times and self._times[0] <= now - 1.0:
            self._times.popleft()
        if len(self._times) >= self.max_fps:
            return False
        self._times.append(now)
        return True


def rate_refusal(index: int, limits: Limits) -> Refusal:
    return Refusal(
        f"frame {index}: more than max_fps={limits.max_fps:g} frames in one second on this stream",
        "max_fps",
        limits.max_fps,
    )


def parse_command(text: str, limits: Limits) -> str:
    """A text message -> its command (`start` or `stop`); a start's declared fps, width and height are checked."""
    try:
        message = json.loads(text)
    except json.JSONDecodeError as error:
        raise Refusal(f"a text message must be JSON ({error.msg}); frames go as binary messages", "message") from None
    if not isinstance(message, dict) or len(message) != 1 or next(iter(message)) not in COMMANDS:
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise Refusal(f'unknown message {shown!r}: send {{"start": {{}}}} or {{"stop": true}}', "message")
    name, body = next(iter(message.items()))
    if name == "start":
        check_start(body, limits)
    return name


def check_start(body: object, limits: Limits) -> None:
    if not isinstance(body, dict):
        raise Refusal(f'"start" takes an object of {", ".join(START_FIELDS)}, not {body!r}', "message")
    unknown = sorted(set(body) - set(START_FIELDS))
    if unknown:
        raise Refusal(f'"start": unknown field(s) {", ".join(unknown)}; known: {", ".join(START_FIELDS)}', "message")
    values = {}
    for name, value in body.items():
        if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
            raise Refusal(f'"start": {name}={value!r} is not a positive number', "message")
        values[name] = value
    if values.get("fps", 0) > limits.max_fps:
        raise Refusal(f'"start": fps={values["fps"]:g} is over max_fps={limits.max_fps:g}', "max_fps", limits.max_fps)
    check_side(int(values.get("width", 0)), int(values.get("height", 0)), '"start"', limits)


def finite(value: float) -> float | None:
    """A number for JSON: NaN and infinities (which JSON lacks) as null."""
    return float(value) if math.isfinite(value) else None


def result_message(result: FrameResult, au_columns: Sequence[str]) -> dict:
    """One face's result: `index` counts frames from 0 by arrival, `frame` is the CSV's (from 1)."""
    probs = None if result.probs is None else {c: float(p) for c, p in zip(au_columns, result.probs, strict=True)}
    return {
        "type": "result",
        "index": result.index,
        "frame": result.frame,
        "face_id": result.face_id,
        "timestamp": result.timestamp,
        "success": bool(result.success),
        "confidence": float(result.confidence),
        "probs": probs,
        "box": None if result.box is None else [float(v) for v in result.box],
        "latency_ms": finite(result.latency * 1e3),
    }
