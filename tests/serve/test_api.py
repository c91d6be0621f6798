"""ks-serve's HTTP side: a POSTed video gets ks-run's CSV byte for byte, non-videos are refused with the reason,
the page and its script are served, /healthz and /metrics report, and a token guards everything with data."""

from __future__ import annotations

import asyncio
import inspect
import re
import shutil
import subprocess
from fnmatch import fnmatch
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from packaging.requirements import Requirement
from starlette.applications import Starlette
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from ks_runtime import cli as ks_run
from ks_runtime.detector import Detector
from ks_runtime.serve.app import create_app
from ks_runtime.serve.protocol import Limits, Refusal
from ks_runtime.serve.service import StreamService
from ks_runtime.serve.video import csv_attachment
from ks_runtime.tools.policy_report import write_lossless_video
from tests.serve.conftest import RecordingEngine, png, receive, results, serve, until, wait_for


@pytest.fixture(scope="module")
def video(frames, tmp_path_factory):
    path = write_lossless_video(frames, tmp_path_factory.mktemp("upload") / "clip", 25.0)
    assert path.suffix in (".mkv", ".avi")
    return path


@pytest.fixture(scope="module")
def server(bundle):
    app, service = serve(bundle)
    with TestClient(app) as client:
        yield client, service


def ks_run_csv(bundle, video, tmp_path, *flags) -> bytes:
    out = tmp_path / "ks-run.csv"
    assert ks_run.main(["run", str(bundle), "--input", str(video), "--csv", str(out), "-q", *flags]) == 0
    return out.read_bytes()


def test_a_posted_video_gets_ks_runs_csv_byte_for_byte(server, bundle, video, tmp_path):
    client, _ = server
    media = "video/x-matroska" if video.suffix == ".mkv" else "video/x-msvideo"
    upload = client.post("/api/video", files={"file": (video.name, video.read_bytes(), media)})
    assert upload.status_code == 200, upload.text
    assert upload.headers["content-type"].startswith("text/csv")
    assert upload.content == ks_run_csv(bundle, video, tmp_path)  # openface columns, ks-run's default
    raw = client.post("/api/video?columns=ks", content=video.read_bytes(), headers={"content-type": media})
    assert raw.status_code == 200 and raw.content == ks_run_csv(bundle, video, tmp_path, "--format", "ks")


def test_a_posted_video_as_json_has_a_row_per_frame_and_the_summary(server, video, frames):
    client, service = server
    answer = client.post(
        "/api/video?format=json&columns=ks", content=video.read_bytes(), headers={"content-type": "video/x-msvideo"}
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [row["frame"] for row in body["rows"]] == list(range(1, len(frames) + 1))
    assert set(body["columns"]) >= {f"{au}_p" for au in service.detector.au_columns}
    assert body["summary"]["frames"] == len(frames) and body["error"] is None


@pytest.mark.parametrize(
    ("send", "status", "words"),
    [
        ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, ["text/plain", "not a video"]),
        ({"files": {"file": ("notes.txt", b"hello", "text/plain")}}, 415, ["notes.txt", "text/plain"]),
        ({"files": {"file": ("photo.png", b"\x89PNG", "image/png")}}, 415, ["photo.png", "image/png"]),
        ({"files": {"file": ("clip.avi", b"no video in here", "video/x-msvideo")}}, 400, ["clip.avi", "OpenCV"]),
        ({"files": {"other": ("clip.avi", b"x", "video/x-msvideo")}}, 400, ["`file` field"]),
        ({"content": b"", "headers": {"content-type": "video/mp4"}}, 400, ["empty"]),
    ],
)
def test_a_non_video_upload_is_refused_with_the_reason(server, send, status, words):
    client, _ = server
    answer = client.post("/api/video", **send)
    assert answer.status_code == status, answer.text
    assert all(word in answer.json()["error"] for word in words), answer.json()
    assert "/tmp" not in answer.json()["error"]  # the upload's name, not the server's temporary path


def test_bad_options_and_an_oversized_video_are_refused_naming_the_field(bundle, video):
    from ks_runtime.serve.protocol import Limits

    app, _ = serve(bundle, limits=Limits(max_video_bytes=1024))
    with TestClient(app) as client:
        assert "format='xml'" in client.post("/api/video?format=xml", content=b"x").json()["error"]
        assert "columns" in client.post("/api/video?columns=csv", content=b"x").json()["error"]
        big = client.post("/api/video", content=video.read_bytes(), headers={"content-type": "video/x-msvideo"})
    assert big.status_code == 413 and "max_video_bytes=1024" in big.json()["error"]


def test_the_page_and_its_script_are_served(server):
    client, _ = server
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    script = client.get("/static/app.js")
    assert script.status_code == 200 and "window.ksResults" in script.text and "window.ksSession" in script.text


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def test_healthz_and_metrics_count_what_happens(server, frames):
    client, _ = server
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok" and health.json()["streams"] == 0
    before = client.get("/metrics").text
    with client.websocket_connect("/ws") as ws:
        receive(ws)
        for frame in frames[:3]:
            ws.send_bytes(png(frame))
        ws.send_json({"stop": True})
        assert len(results(until(ws, "stopped"))) == 3
        assert client.get("/healthz").json()["streams"] == 1
    after = client.get("/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    for name in ("ks_serve_frames_total", "ks_serve_results_total", "ks_serve_latency_seconds_count"):
        assert metric(after.text, name) == metric(before, name) + 3, name
    assert metric(after.text, "ks_serve_encoder_batch_size_count") > metric(before, "ks_serve_encoder_batch_size_count")
    assert "ks_serve_active_streams" in after.text and "ks_serve_dropped_total" in after.text


def test_with_a_token_every_request_with_data_needs_it(bundle, frames):
    app, _ = serve(bundle, token="s3cret")
    right, wrong = {"Authorization": "Bearer s3cret"}, {"Authorization": "Bearer s3cre"}
    with TestClient(app) as client:
        for path in ("/metrics", "/api/sessions/none/csv"):
            assert client.get(path).status_code == 401
            assert client.get(path, headers=wrong).status_code == 401
            assert client.get(path, headers={"Authorization": "s3cret"}).status_code == 401
        assert client.get("/metrics", headers=right).status_code == 200
        assert client.get("/api/sessions/none/csv", headers=right).status_code == 404  # past the gate
        assert client.post("/api/video", content=b"x").status_code == 401
        assert client.get("/").status_code == 200 and client.get("/healthz").status_code == 200
        for url in ("/ws", "/ws?token=s3cre", "/ws?token="):
            with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect(url):
                pass
            assert closed.value.code == 1008
        with client.websocket_connect("/ws?token=s3cret") as ws:
            assert receive(ws)["type"] == "hello"
            ws.send_bytes(png(frames[0]))
            ws.send_json({"stop": True})
            assert np.isfinite(results(until(ws, "stopped"))[0]["probs"]["AU01"])


def test_the_page_ships_in_the_wheel():
    """scikit-build-core copies every file under wheel.packages but those git ignores or wheel.exclude names."""
    tomllib = pytest.importorskip("tomllib")
    root = Path(__file__).resolve().parents[2]
    wheel = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["scikit-build"]["wheel"]
    page = [root / "ks_runtime/serve/static" / name for name in ("index.html", "app.js")]
    assert "ks_runtime" in wheel["packages"] and all(path.is_file() for path in page)
    for path in page:
        relative = path.relative_to(root).as_posix()
        assert not any(fnmatch(relative, pattern) for pattern in wheel["exclude"]), relative
    if shutil.which("git") is None:
        pytest.skip("no git here to ask what it ignores")
    ignored = subprocess.run(["git", "check-ignore", *map(str, page)], cwd=root, capture_output=True, text=True)
    assert ignored.returncode == 1 and not ignored.stdout, ignored.stdout  # 1: none of them is ignored


CSV_ATTACHMENT = re.compile(r"attachment; filename=\"([A-Za-z0-9._-]+)\"; filename\*=UTF-8''([A-Za-z0-9%._~-]+)")


def form_with_file(name: str, data: bytes, media: str) -> tuple[bytes, str]:
    """A multipart body written by hand: a client may send a raw `"` in the file name (httpx would escape it)."""
    quoted = name.replace("\\", "\\\\").replace('"', '\\"').encode()
    head = b'--ks\r\nContent-Disposition: form-data; name="file"; filename="' + quoted + b'"\r\n'
    body = head + f"Content-Type: {media}\r\n\r\n".encode() + data + b"\r\n--ks--\r\n"
    return body, "multipart/form-data; boundary=ks"


@pytest.mark.parametrize(("name", "plain"), [("视频.mkv", "__.csv"), ('take "one".mkv', "take__one_.csv")])
def test_a_video_of_any_name_gets_a_well_formed_content_disposition(server, video, name, plain):
    client, _ = server
    body, media = form_with_file(name, video.read_bytes(), "video/x-matroska")
    answer = client.post("/api/video", content=body, headers={"content-type": media})
    assert answer.status_code == 200, answer.text
    header = answer.headers["content-disposition"]
    found = CSV_ATTACHMENT.fullmatch(header)
    assert found, header  # ASCII only, one quoted plain name, then the name as given, percent-encoded
    assert found.group(1) == plain and unquote(found.group(2)) == name.rsplit(".", 1)[0] + ".csv"


def test_the_csv_attachment_keeps_line_breaks_and_quotes_out_of_the_header():
    header = csv_attachment('a"b\r\nSet-Cookie: x=1.mp4')
    assert header.isascii() and "\r" not in header and "\n" not in header
    assert header.startswith('attachment; filename="a_b__Set-Cookie__x_1.csv"; ')
    assert csv_attachment("") == "attachment; filename=\"video.csv\"; filename*=UTF-8''video.csv"


def test_the_serve_extra_asks_for_a_starlette_with_max_body_size():
    """app.py passes Starlette(max_body_size=...), which Starlette 1.6.0 added."""
    tomllib = pytest.importorskip("tomllib")
    root = Path(__file__).resolve().parents[2]
    serve_extra = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]["serve"]
    (starlette,) = [Requirement(line) for line in serve_extra if Requirement(line).name == "starlette"]
    assert "1.6.0" in starlette.specifier and "1.5.1" not in starlette.specifier, starlette
    assert "max_body_size" in inspect.signature(Starlette).parameters


class FailingEngine(RecordingEngine):
    name = "failing"

    def encode(self, frames):
        raise RuntimeError("the GPU fell off the bus")


def test_once_the_worker_has_failed_a_new_stream_is_refused_naming_the_failure(bundle, frames):
    made = Detector(bundle, queue_size=64)
    made.engine = FailingEngine(made.engine)
    service = StreamService(made, Limits())
    with TestClient(create_app(service)) as client:
        with client.websocket_connect("/ws") as first:
            receive(first)
            first.send_bytes(png(frames[0]))
            first.send_json({"stop": True})
            told = until(first, "error")[-1]
            wait_for(lambda: service.failure is not None)
        with client.websocket_connect("/ws") as late:
            refusal = receive(late)
            with pytest.raises(WebSocketDisconnect) as closed:
                receive(late)
        health = client.get("/healthz")
        refused = metric(client.get("/metrics").text, 'ks_serve_refused_total{reason="server"}')
    assert told["reason"] == "server" and "the GPU fell off the bus" in told["message"]
    assert refusal["type"] == "error" and refusal["reason"] == "server", refusal
    assert "the GPU fell off the bus" in refusal["message"] and closed.value.code == 1011
    assert health.status_code == 503 and refused == 1
    assert service.streams == 0


def test_a_failure_is_told_to_sessions_the_worker_has_not_taken_yet(bundle):
    service = StreamService(Detector(bundle, queue_size=64))  # not started: the test plays the worker
    loop = asyncio.new_event_loop()
    try:
        session = service.open(loop)  # its `open` command waits: the worker has not seen it
        service._fail(RuntimeError("engine gone"))
        loop.run_until_complete(asyncio.sleep(0))
        told = session.outbox.get_nowait()
        assert told["reason"] == "server" and "engine gone" in told["message"]
        with pytest.raises(Refusal, match="engine gone"):
            service.open(loop)
    finally:
        loop.close()
