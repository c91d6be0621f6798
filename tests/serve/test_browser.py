"""The page in a real browser (slow; skipped without Chromium): `ks-serve` under uvicorn, headless Chromium whose
fake camera plays SynthAU faces, the page's Start and Stop; every result the page received (`window.ksResults`)
equals `ks-run` on the frames the server recorded (`--record`), and the page's CSV download is ks-run's layout."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from websockets.sync.client import ClientConnection, connect

from ks_runtime import cli as ks_run
from ks_runtime.io.table import read_results_csv
from tests.serve.conftest import synth_frames, wait_for

pytestmark = pytest.mark.slow
CHROMIUM = next(
    (shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)), None
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_y4m(frames: np.ndarray, path: Path, fps: int = 10) -> Path:
    """RGB frames as a YUV4MPEG2 file, what Chromium's fake camera plays."""
    height, width = frames.shape[1:3]
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            out.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420).tobytes())
    return path


def started(argv: list[str], ready, what: str) -> subprocess.Popen:
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{what} did not start: {argv}")
        time.sleep(0.2)
    return process


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


class Page:
    """Just enough of the Chrome DevTools Protocol: evaluate JavaScript in the page."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket, self.calls = socket, 0

    def call(self, method: str, **params) -> dict:
        self.calls += 1
        self.socket.send(json.dumps({"id": self.calls, "method": method, "params": params}))
        while True:  # events come in between: skip to this call's answer
            message = json.loads(self.socket.recv(timeout=30))
            if message.get("id") == self.calls:
                return message["result"]

    def js(self, expression: str):
        done = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        return done["result"].get("value")


def screenshot(page: Page, path: Path) -> None:
    """The page as the user sees it. The README's picture: KS_SCREENSHOT=docs/images/ks-serve.png
    KS_SCREENSHOT_BUNDLE=runs/demo/bundle (after `make demo`) .venv/bin/python -m pytest tests/serve/test_browser.py"""
    page.call("Emulation.setDeviceMetricsOverride", width=1100, height=720, deviceScaleFactor=1, mobile=False)
    png = base64.b64decode(page.call("Page.captureScreenshot", format="png")["data"])
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[:2] == (720, 1100) and image.std() > 10  # drawn, not blank
    path.write_bytes(png)
    if os.environ.get("KS_SCREENSHOT"):
        Path(os.environ["KS_SCREENSHOT"]).write_bytes(png)


@pytest.fixture()
def browser_and_server(bundle, tmp_path):
    if CHROMIUM is None:
        pytest.skip("no Chromium here (`make browser` installs Debian's chromium as root)")
    bundle = os.environ.get("KS_SCREENSHOT_BUNDLE", bundle)  # the README's picture is of the demo's model
    port, debug = free_port(), free_port()
    server = started(
        [
            sys.executable,
            "-m",
            "ks_runtime.serve.cli",
            str(bundle),
            "--port",
            str(port),
            "--record",
            str(tmp_path / "seen"),
            "-q",
        ],
        lambda: answers(f"http://127.0.0.1:{port}/healthz"),
        "ks-serve",
    )
    camera = write_y4m(synth_frames(48, size=64)[0], tmp_path / "faces.y4m")
    flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--use-fake-ui-for-media-stream"]
    flags += ["--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={camera}"]
    chromium = started(
        [
            CHROMIUM,
            *flags,
            f"--remote-debugging-port={debug}",
            f"--user-data-dir={tmp_path / 'profile'}",
            "about:blank",
        ],
        lambda: answers(f"http://127.0.0.1:{debug}/json"),
        "Chromium",
    )
    try:
        target = httpx.get(f"http://127.0.0.1:{debug}/json").json()[0]["webSocketDebuggerUrl"]
        with connect(target, max_size=None) as socket:
            yield Page(socket), f"http://127.0.0.1:{port}/", tmp_path / "seen"
    finally:
        for process in (chromium, server):
            process.terminate()
            process.wait(timeout=10)


def test_the_page_streams_the_camera_and_gets_what_ks_run_gets_on_the_same_frames(browser_and_server, bundle, tmp_path):
    page, url, seen = browser_and_server
    bundle = os.environ.get("KS_SCREENSHOT_BUNDLE", bundle)
    page.call("Page.navigate", url=url)
    wait_for(lambda: page.js("document.readyState") == "complete", 30)
    page.js("document.getElementById('start').click()")
    wait_for(lambda: page.js("window.ksResults.length") >= 20, 60)
    screenshot(page, tmp_path / "page.png")
    page.js("document.getElementById('stop').click()")
    wait_for(lambda: page.js("document.getElementById('status').textContent").startswith("stopped"), 30)
    session, got = page.js("window.ksSession"), json.loads(page.js("JSON.stringify(window.ksResults)"))
    csv = page.js(f"fetch('/api/sessions/{session}/csv').then(r => r.text())")
    assert csv.startswith("frame, face_id, timestamp, confidence, success, AU01_r")  # OpenFace's layout, as ks-run
    recorded = sorted((seen / session).glob("frame_*.png"))
    assert [r["index"] for r in got] == [int(p.stem.split("_")[1]) for p in recorded]
    assert all(r["success"] for r in got)
    out = tmp_path / "again.csv"
    ks_run.main(
        ["run", str(bundle), "--input", str(seen / session), "--sequence", "--format", "ks", "--csv", str(out), "-q"]
    )
    again = read_results_csv(out).filter(like="_p")
    probs = [[r["probs"][column[:-2]] for column in again.columns] for r in got]
    np.testing.assert_allclose(np.array(probs), again.to_numpy(), atol=1e-5)
