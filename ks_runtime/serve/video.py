"""`POST /api/video`: a whole video scored by `Detector.detect` with the server's engine, answered with the CSV
`ks-run` writes for it (`?format=csv`, the default) or its rows as JSON (`?format=json`); `?columns=openface` (the
default, as ks-run's) or `ks`. The video comes as a multipart form's `file` field or as the request body with a
video/* (or application/octet-stream) Content-Type; it is saved to a temporary file, scored on a worker thread,
and deleted. At most `video_jobs` videos are scored at once; more are refused with 503.
"""

from __future__ import annotations

import json
import logging
import math
import re
import tempfile
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ks_runtime.core.errors import ConfigError, KSError
from ks_runtime.detector import Detector
from ks_runtime.io.formats import check_csv_format
from ks_runtime.io.sources import VideoSource
from ks_runtime.serve.metrics import ServeMetrics
from ks_runtime.serve.protocol import Limits

log = logging.getLogger(__name__)

OUTPUTS = ("csv", "json")
DEFAULT_COLUMNS = "openface"  # ks-run's default
OCTET_STREAM = "application/octet-stream"  # what curl and many clients send for a file of unknown type
SUFFIXES = {
    "video/mp4": ".mp4",
    "video/x-msvideo": ".avi",
    "video/avi": ".avi",
    "video/x-matroska": ".mkv",
    "video/webm": ".webm",
    "video/quicktime": ".mov",
    "video/mpeg": ".mpg",
    "video/ogg": ".ogv",
}
CHUNK_BYTES = 2**20


class UploadError(Exception):
    """A request the endpoint refuses: its HTTP status and the reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def error_response(status: int, message: str, **extra) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def is_video_type(media: str) -> bool:
    return media.startswith("video/") or media == OCTET_STREAM


def upload_suffix(filename: str | None, media: str) -> str:
    """A suffix for the saved upload (FFmpeg probes the content; the suffix only helps): the file's own when it
    is a plain one, else the content type's."""
    suffix = Path(filename or "").suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix) else SUFFIXES.get(media, ".video")


def csv_attachment(upload_name: str) -> str:
    """The Content-Disposition of the CSV for an upload named `upload_name` by the client. A header carries Latin-1
    only, and a quote or line break would end it early: `filename=` gets an ASCII stand-in (anything but letters,
    digits, `.`, `_` and `-` as `_`), and `filename*=` (RFC 6266, RFC 5987) the name as given, percent-encoded."""
    name = f"{Path(upload_name).stem or 'video'}.csv"
    plain = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(name, safe='')}"


def json_safe(value: object) -> object:
    """`value` with NaN and infinities as None: JSON has neither."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


class VideoEndpoint:
    """The endpoint, with the detector whose engine it shares with the streams."""

    def __init__(self, detector: Detector, limits: Limits, metrics: ServeMetrics) -> None:
        self.detector, self.limits, self.metrics = detector, limits, metrics
        self._slots = threading.BoundedSemaphore(limits.video_jobs)

    async def post(self, request: Request) -> Response:
        try:
            output, columns = self._options(request)
        except ConfigError as error:
            return error_response(400, str(error))
        if not self._slots.acquire(blocking=False):
            jobs = self.limits.video_jobs
            return JSONResponse(
                {"error": f"busy: video_jobs={jobs} video(s) are being scored; try again", "limit": "video_jobs"},
                status_code=503,
                headers={"Retry-After": "5"},
            )
        try:
            with tempfile.TemporaryDirectory(prefix="ks-serve-video-") as folder:
                name, path = await self._receive(request, Path(folder))
                return await run_in_threadpool(self._score, path, name, Path(folder) / "rows.csv", output, columns)
        except UploadError as error:
            self.metrics.videos.labels(outcome="refused").inc()
            return error_response(error.status, str(error))
        finally:
            self._slots.release()

    @staticmethod
    def _options(request: Request) -> tuple[str, str]:
        output = request.query_params.get("format", "csv")
        if output not in OUTPUTS:
            raise ConfigError(f"format={output!r}: one of {', '.join(OUTPUTS)}")
        columns = request.query_params.get("columns", DEFAULT_COLUMNS)
        try:
            return output, check_csv_format(columns)
        except ConfigError as error:
            raise ConfigError(f"columns: {error}") from None

    async def _receive(self, request: Request, folder: Path) -> tuple[str, Path]:
        """The uploaded video saved in `folder`: (the name it came with, its path)."""
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.limits.max_video_bytes:
            raise self._too_large(int(length))
        if media == "multipart/form-data":
            return await self._from_form(request, folder)
        if not is_video_type(media):
            raise UploadError(
                415,
                f"Content-Type {media or '(none)'} is not a video: POST multipart/form-data with the video in a "
                f"`file` field, or the video's bytes with a video/* or {OCTET_STREAM} Content-Type",
            )
        path = folder / f"upload{upload_suffix(None, media)}"
        await self._save(request.stream(), path)
        return path.name, path

    async def _from_form(self, request: Request, folder: Path) -> tuple[str, Path]:
        async with request.form(max_files=1, max_fields=8) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise UploadError(400, "the multipart form has no `file` field holding the video")
            name = upload.filename or "upload"
            media = (upload.content_type or OCTET_STREAM).lower()
            if not is_video_type(media):
                raise UploadError(415, f"{name}: Content-Type {media} is not a video (video/* or {OCTET_STREAM})")
            path = folder / f"upload{upload_suffix(upload.filename, media)}"
            await self._save(_chunks(upload), path)
            return name, path

    async def _save(self, chunks: AsyncIterator[bytes], path: Path) -> None:
        """Write the upload to `path`, refused past max_video_bytes (a body without a Content-Length too)."""
        size = 0
        with path.open("wb") as file:
            async for chunk in chunks:
                size += len(chunk)
                if size > self.limits.max_video_bytes:
                    raise self._too_large(size, "at least ")
                file.write(chunk)
        if size == 0:
            raise UploadError(400, "the upload is empty")

    def _too_large(self, size: int, prefix: str = "") -> UploadError:
        limit = self.limits.max_video_bytes
        return UploadError(413, f"the video is {prefix}{size} bytes, over max_video_bytes={limit}")

    def _score(self, path: Path, name: str, out: Path, output: str, columns: str) -> Response:
        """Run the video through the detector (on a worker thread): its CSV, or its rows and summary as JSON."""
        try:
            table = self.detector.detect(VideoSource(path), csv=out, csv_format=columns)
        except KSError as error:
            self.metrics.videos.labels(outcome="refused").inc()
            return error_response(400, str(error).replace(str(path), name))
        failure = table.attrs.get("error")
        failure = None if failure is None else str(failure).replace(str(path), name)
        self.metrics.videos.labels(outcome="partial" if failure else "scored").inc()
        if output == "csv":
            headers = {"Content-Disposition": csv_attachment(name)}
            if failure:
                headers["KS-Error"] = " ".join(failure.split()).encode("ascii", "replace").decode()
            return Response(out.read_bytes(), media_type="text/csv", headers=headers)
        summary = table.attrs.get("summary")
        body = {
            "file": name,
            "columns": [str(c) for c in table.columns],
            "rows": json.loads(table.to_json(orient="records")),
            "summary": None if summary is None else json_safe(summary.to_dict()),
            "error": failure,
        }
        return JSONResponse(body)


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(CHUNK_BYTES):
        yield chunk
