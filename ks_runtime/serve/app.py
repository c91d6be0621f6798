"""The Starlette app of `ks-serve`: the page, the WebSocket stream, the CSV and video endpoints, health, metrics.

    GET  /                        the page (static/index.html) and its script under /static/
    WS   /ws                      frames in, results out (protocol.py; docs/serving.md)
    GET  /api/sessions/{id}/csv   a session's rows as ks-run writes them (?columns=openface|ks)
    POST /api/video               a video file -> its CSV or JSON (video.py)
    GET  /healthz                 200 {"status": "ok", ...}, or 503 once the worker has failed
    GET  /metrics                 Prometheus' text format (metrics.py)

With a token, /ws needs `?token=T` (a browser cannot set a WebSocket's headers) and /api/... and /metrics need
`Authorization: Bearer T`. The page, its script and /healthz hold no data and stay open, so that a browser can
load the page (which then asks for the token) and a load balancer can probe.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, QueryParams
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.status import WS_1008_POLICY_VIOLATION, WS_1011_INTERNAL_ERROR, WS_1013_TRY_AGAIN_LATER
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from ks_runtime.core.errors import ConfigError
from ks_runtime.core.policy import lookahead
from ks_runtime.serve.metrics import CONTENT_TYPE
from ks_runtime.serve.protocol import Refusal
from ks_runtime.serve.service import KEPT_SESSIONS, StreamService
from ks_runtime.serve.session import Session
from ks_runtime.serve.video import DEFAULT_COLUMNS, VideoEndpoint, error_response

STATIC = Path(__file__).parent / "static"
OPEN_PATHS = ("/", "/healthz")
OPEN_PREFIXES = ("/static/",)
STATS_INTERVAL_S = 0.5
MULTIPART_SLACK_BYTES = 2**20  # a multipart body's boundaries and headers around the video


def create_app(service: StreamService, token: str | None = None) -> Starlette:
    """The app over `service`, which it starts and stops with its lifespan; `token`: required of every request
    but the page's and /healthz."""
    endpoints = _Endpoints(service)
    video = VideoEndpoint(service.detector, service.limits, service.metrics)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            await run_in_threadpool(service.shutdown)

    routes = [
        Route("/", endpoints.page),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
        WebSocketRoute("/ws", endpoints.stream),
        Route("/api/sessions/{session}/csv", endpoints.session_csv),
        Route("/api/video", video.post, methods=["POST"]),
        Route("/healthz", endpoints.health),
        Route("/metrics", endpoints.metrics),
    ]
    app = Starlette(
        routes=routes, lifespan=lifespan, max_body_size=service.limits.max_video_bytes + MULTIPART_SLACK_BYTES
    )
    if token:
        app.add_middleware(TokenGate, token=token)
    return app


def same_token(given: str | None, token: str) -> bool:
    """Constant-time comparison, so the answer's timing does not give the token away byte by byte."""
    return given is not None and hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8"))


def bearer(authorization: str | None) -> str | None:
    scheme, _, credentials = (authorization or "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


class TokenGate:
    """Refuses every request but the open paths without the token: HTTP with 401, a WebSocket by closing it
    with 1008 (policy violation) before it is accepted."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] not in ("http", "websocket") or path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            if same_token(QueryParams(scope.get("query_string", b"")).get("token"), self.token):
                await self.app(scope, receive, send)
            else:
                await WebSocket(scope, receive, send).close(WS_1008_POLICY_VIOLATION, "a valid ?token= is required")
        elif same_token(bearer(Headers(scope=scope).get("authorization")), self.token):
            await self.app(scope, receive, send)
        else:
            response = JSONResponse(
                {"error": "a valid token is required: send `Authorization: Bearer TOKEN`"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="ks-serve"'},
            )
            await response(scope, receive, send)


class _Endpoints:
    """The routes that read the service."""

    def __init__(self, service: StreamService) -> None:
        self.service = service

    async def page(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html")

    async def health(self, request: Request) -> Response:
        service, detector = self.service, self.service.detector
        body = {
            "status": "ok" if service.alive else "failed",
            "error": service.failure,
            "streams": service.streams,
            "max_streams": service.limits.max_streams,
            "bundle": str(detector.manifest.root),
            "engine": detector.engine.describe(),
            "policy": detector.policy,
        }
        return JSONResponse(body, status_code=200 if service.alive else 503)

    async def metrics(self, request: Request) -> Response:
        return Response(self.service.metrics.exposition(), media_type=CONTENT_TYPE)

    async def session_csv(self, request: Request) -> Response:
        session_id = request.path_params["session"]
        session = self.service.session(session_id)
        if session is None:
            return error_response(
                404, f"no session {session_id!r} (a closed session is kept until {KEPT_SESSIONS} more have closed)"
            )
        try:
            data = await run_in_threadpool(
                self.service.csv, session, request.query_params.get("columns", DEFAULT_COLUMNS)
            )
        except ConfigError as error:
            return error_response(400, f"columns: {error}")
        disposition = f'attachment; filename="ks-serve-{session.id}.csv"'
        return Response(data, media_type="text/csv", headers={"Content-Disposition": disposition})

    async def stream(self, websocket: WebSocket) -> None:
        """A client's stream: a hello, then its frames and commands in, its results and stats out."""
        await websocket.accept()
        try:
            # Off the event loop: building a face stage reads its detector's files (about 30 ms for haar), and the
            # other clients' frames wait for the loop meanwhile.
            session = await run_in_threadpool(self.service.open, asyncio.get_running_loop())
        except Refusal as refusal:
            await websocket.send_json(refusal.to_message())
            # max_streams may pass; a failed worker stays failed until the server restarts
            code = WS_1011_INTERNAL_ERROR if refusal.reason == "server" else WS_1013_TRY_AGAIN_LATER
            await websocket.close(code, refusal.reason)
            return
        session.offer(self._hello(session))
        tasks = [asyncio.create_task(self._send(websocket, session)), asyncio.create_task(self._tick(session))]
        try:
            await self._receive(websocket, session)
        finally:
            self.service.close(session)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with suppress(asyncio.CancelledError, Exception):  # a send to a client already gone
                    await task

    async def _receive(self, websocket: WebSocket, session: Session) -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                self.service.submit(session, message["bytes"])
            elif message.get("text") is not None:
                self.service.command(session, message["text"])

    @staticmethod
    async def _send(websocket: WebSocket, session: Session) -> None:
        while True:
            await websocket.send_json(await session.outbox.get())

    async def _tick(self, session: Session) -> None:
        """A stats message every STATS_INTERVAL_S while anything changes."""
        seen = None
        while True:
            await asyncio.sleep(STATS_INTERVAL_S)
            stats = session.stats(self.service.clock())
            counts = tuple(stats[k] for k in ("received", "scored", "dropped", "refused", "errors"))
            if counts != seen:
                session.offer(stats)
                seen = counts

    def _hello(self, session: Session) -> dict:
        detector = self.service.detector
        manifest = detector.manifest
        return {
            "type": "hello",
            "session": session.id,
            "aus": list(manifest.au_columns),
            "thresholds": [float(t) for t in manifest.thresholds],
            "policy": detector.policy,
            "clip_len": manifest.clip_len,
            "lookahead_frames": lookahead(manifest.clip_len, detector.policy, manifest.clip_stride),
            "face": detector.face,
            "queue_size": detector.config.queue_size,
            "limits": self.service.limits.to_dict(),
            "warning": manifest.provenance_warning,
            "csv": f"/api/sessions/{session.id}/csv",
        }
