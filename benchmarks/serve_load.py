"""`python -m benchmarks.serve_load`: ks-serve under load and under faults (issue 20).

Load: for each bundle, one `ks-serve` subprocess and, for each N, N concurrent WebSocket clients, each sending
pre-encoded JPEG frames paced at 25 fps for the given seconds (the streams' phases spread over one frame period)
and reading its results on its own thread; then per N: frames sent, results served, frames the server dropped
(its `stopped` messages), latency p50/p99, the server's RSS before and after, its /metrics counters, and the CPU
the server, the clients and everything else used meanwhile.

Latency, two figures: `server` is each result's own `latency_ms` (the frame's arrival on the server's event loop
to its final result); `round trip` runs from the client's send() of the frame to the result's arrival there.

Faults, on the first bundle unless --fault-bundles names others, for each input: (a) client processes (started
ahead, so that their start-up is not in the window) SIGKILLed after 1 s of streaming (no close frame): ten while
two clients stream, after a 10 s baseline, then --kill-cycles more with nobody else streaming; the streams gauge,
the steady clients' results and their frames without a result by when they were sent (baseline, a victim joining,
streaming, just after a kill), the server's RSS after each kill; (b) the server SIGKILLed (a crash) and SIGTERMed
(a restart) mid-session, started again on the same port and the client reconnecting: what the client got against
the session's CSV read just before, and the new session against its own CSV.

    python -m benchmarks.serve_load [--streams 1 4 8] [--seconds 60] [--bundles synth-cpu paper-r50]
        [--inputs aligned scene] [--fault-bundles synth-cpu] [--out benchmarks/results/serve_load.md]
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from benchmarks.harness import ROOT, load_average, machine_busy_seconds, machine_info
from ks_runtime.synth.generate import SynthConfig, generate_sequence
from ks_runtime.synth.scene import render_scene_sequence

FPS = 25.0
JPEG_QUALITY = 92  # what the camera page sends (canvas.toBlob quality 0.92)
ALIGNED_PX = 112  # aligned SynthAU crops, as AU datasets ship them; the server resizes them to the network's size
SCENE_SIZE = (640, 480)
HEALTH_TIMEOUT_S = 300.0  # paper-r50's sessions take a while to load on a busy machine
STOP_TIMEOUT_S = 120.0  # a saturated server may owe many results when the stop comes
SETTLE_TIMEOUT_S = 15.0
WARMUP_S = 4.0  # one stream before the measured runs: engine arenas and first-call costs are not the load's
STEADY_STREAMS = 2  # clients streaming while others are killed
KILLS_BESIDE = 10  # kill cycles while the steady clients stream
VICTIM_STREAM_S = 1.0  # how long a client to be killed streams first
CRASH_AFTER_S = 4.0  # how long a session runs before its server is killed
BASELINE_S = 10.0  # the steady clients stream alone this long before the first kill
START_S = 2.0  # of which the first seconds are their own start (new face stages), not the baseline
PHASES = ("start", "baseline", "victim joining", "victim streaming", "after a kill", "between kills")
JOINING_S = 0.5  # a victim's connection and first frames (a new face stage's first detection is the dearest)
AFTER_KILL_S = 1.0  # frames sent this soon after a kill are counted against it; the pause before the next victim
SNAPSHOT_LEAD_S = 0.5  # the session's CSV is read this long before the kill: every row in it was sent by then
RESUME_S = 3.0  # how long the reconnected client streams
PROB_TOLERANCE = 1e-6  # the CSV writes probabilities with 6 decimals
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "serve_load.md"
INPUTS = {"aligned": "aligned", "scene": "haar"}  # input kind -> the server's face stage


# --- frames ----------------------------------------------------------------------------------------------------


def encoded_frames(kind: str, count: int = 120) -> list[bytes]:
    """`count` SynthAU frames (subject 0, task 0) as JPEG bytes, encoded once: aligned 112 px crops or 640x480
    scene frames."""
    cfg = SynthConfig(size="tiny", image_size=ALIGNED_PX)
    if kind == "aligned":
        frames = generate_sequence(cfg, 0, 0).frames[:count]
    else:
        frames = render_scene_sequence(SynthConfig(size="tiny"), 0, 0, SCENE_SIZE, frame_indices=range(count)).frames
    out = []
    for rgb in frames:
        ok, data = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise RuntimeError("cv2.imencode failed on a SynthAU frame")
        out.append(data.tobytes())
    return out


def resolve_bundle(name: str) -> tuple[Path, str]:
    """A bundle by profile name (the benchmarks' cached untrained export) or by folder, with its description."""
    if name in ("synth-cpu", "paper-r50"):
        from benchmarks.models import cached_bundle  # deferred: torch

        return cached_bundle(name, int8=name == "paper-r50"), f"{name}, untrained weights (benchmarks/models.py)"
    path = Path(name)
    if not (path / "manifest.json").is_file():
        raise SystemExit(f"{name}: not a profile (synth-cpu, paper-r50) nor a bundle folder")
    return path, str(path)


# --- the server ---------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class ServeProcess:
    """`python -m ks_runtime.serve.cli BUNDLE --port P -q` as a subprocess: started, probed, measured, killed."""

    def __init__(self, bundle: Path, face: str, port: int, log_dir: Path) -> None:
        self.bundle, self.face, self.port, self.log_dir = bundle, face, port, log_dir
        self.process: subprocess.Popen | None = None
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0)
        self.starts = 0

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self) -> None:
        """Start the server and wait for /healthz (a server that exits first, e.g. on a port still held, fails)."""
        self.starts += 1
        self.http.close()  # a kept-alive connection to a killed server would fail the first request
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30.0)
        command = [sys.executable, "-m", "ks_runtime.serve.cli", str(self.bundle), "--port", str(self.port), "-q"]
        command += ["--face", self.face]
        with (self.log_dir / f"serve-{self.port}-{self.starts}.log").open("w") as log:  # the child keeps its copy
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.wait_healthy()

    def wait_healthy(self, timeout: float = HEALTH_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ks-serve exited with {self.process.returncode}: see {self.log_dir}")
            try:
                if self.http.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:  # not listening yet
                pass
            time.sleep(0.2)
        raise TimeoutError(f"ks-serve did not answer /healthz in {timeout:.0f} s")

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS in /proc/PID/status")

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.process.pid)

    def health(self) -> dict:
        return self.http.get("/healthz").json()

    def metrics(self) -> dict[str, float]:
        """Every sample of /metrics by name (labels folded into the name, e.g. ks_serve_refused_total{max_fps})."""
        text = self.http.get("/metrics").text
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f"{v}" for k, v in sorted(sample.labels.items()) if k != "le")
                if "le" not in sample.labels:
                    samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return samples

    def session_rows(self, session: str) -> dict[int, np.ndarray] | None:
        """The session's CSV (ks columns) as frame index -> AU probabilities; None when the server has no such
        session (404)."""
        response = self.http.get(f"/api/sessions/{session}/csv", params={"columns": "ks"})
        if response.status_code == 404:
            return None
        response.raise_for_status()
        rows = {}
        for row in csv.DictReader(io.StringIO(response.text)):
            probs = [float(v) for k, v in row.items() if k.endswith("_p") and v != ""]
            rows[int(row["frame"]) - 1] = np.asarray(probs)
        return rows

    def kill(self, sig: int = signal.SIGKILL) -> int:
        """Send `sig` and wait for the process to end; its exit code."""
        self.process.send_signal(sig)
        return self.process.wait(timeout=60)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.http.close()

    def wait_streams(self, expected: int, timeout: float = SETTLE_TIMEOUT_S) -> bool:
        """Wait until /healthz and the ks_serve_active_streams gauge both say `expected` streams are open."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.health()["streams"] == expected and self.metrics()["ks_serve_active_streams"] == expected:
                return True
            time.sleep(0.05)
        return False


# --- a client ---------------------------------------------------------------------------------------------------


def open_socket(url: str, timeout: float = 30.0) -> ClientConnection:
    # No permessage-deflate: JPEG does not compress, and the browser page's frames are sent as they are.
    return connect(url, max_size=None, compression=None, open_timeout=timeout)


@dataclass
class StreamClient:
    """One WebSocket client: `stream` sends frames paced at FPS from the calling thread while a thread of its own
    reads every message; it keeps each result (with its round trip), the last stats and the `stopped` message."""

    url: str
    sent_at: list[float] = field(default_factory=list)
    results: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    stats: dict | None = None
    stopped: dict | None = None
    ended: str = ""  # how the connection ended, as the reader saw it
    late_sends: int = 0  # frames sent more than a period after their time (the client fell behind, not the server)

    def __post_init__(self) -> None:
        self.exit_stack = ExitStack()  # the connection as websockets wants it used: a context, closed in finish
        self.ws = self.exit_stack.enter_context(open_socket(self.url))
        self.hello = json.loads(self.ws.recv(timeout=30.0))
        self.session = self.hello["session"]
        self.got_stopped = threading.Event()
        self.reader = threading.Thread(target=self._read, name=f"reader-{self.session}", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        try:
            for text in self.ws:
                self._take(json.loads(text), time.perf_counter())
            self.ended = f"closed with {self.ws.close_code}"
        except ConnectionClosed as error:
            self.ended = f"lost ({error})"

    def _take(self, message: dict, now: float) -> None:
        kind = message["type"]
        if kind == "result":
            message["rtt_ms"] = 1e3 * (now - self.sent_at[message["index"]])
            message["arrived"] = now
            self.results.append(message)
        elif kind == "stats":
            self.stats = message
        elif kind == "stopped":
            self.stats = self.stopped = message
            self.got_stopped.set()
        elif kind == "error":
            self.errors.append(message)

    def stream(self, frames: list[bytes], seconds: float, phase: float = 0.0, until: threading.Event | None = None):
        """Send frames[i % len] at start + phase + i / FPS for `seconds` or until `until` is set; a late frame
        goes at once and the schedule is kept. A connection the server closes ends the stream."""
        start = time.perf_counter() + phase
        for i in range(int(seconds * FPS)):
            if until is not None and until.is_set():
                return
            delay = start + i / FPS - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            elif delay < -1 / FPS:
                self.late_sends += 1
            self.sent_at.append(time.perf_counter())
            try:
                self.ws.send(frames[i % len(frames)])
            except ConnectionClosed:
                self.sent_at.pop()  # never sent: the server is gone
                return

    def ask_stop(self) -> None:
        try:
            self.ws.send(json.dumps({"stop": True}))
        except ConnectionClosed:
            pass

    def finish(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        """Wait for the `stopped` message, then close; whether it came."""
        got = self.got_stopped.wait(timeout)
        self.exit_stack.close()
        self.reader.join(timeout)
        return got

    def result_indices(self) -> list[int]:
        return [r["index"] for r in self.results]


def stream_all(clients: list[StreamClient], frames: list[bytes], seconds: float, until=None) -> list[threading.Thread]:
    """Start each client's stream on its own thread, their phases spread evenly over one frame period (cameras
    are not in step)."""
    threads = []
    for k, client in enumerate(clients):
        phase = k / (len(clients) * FPS)
        thread = threading.Thread(target=client.stream, args=(frames, seconds, phase, until), daemon=True)
        thread.start()
        threads.append(thread)
    return threads


def finish_all(clients: list[StreamClient]) -> list[bool]:
    for client in clients:
        client.ask_stop()
    return [client.finish() for client in clients]


# --- load ----------------------------------------------------------------------------------------------------


class CpuMeter:
    """CPU the server, this process (the clients) and everything else used over an interval, in cores."""

    def __init__(self, server: ServeProcess) -> None:
        self.server = server
        self.start = self._read()

    def _read(self) -> tuple[float, float, float, float]:
        return time.perf_counter(), self.server.cpu_seconds(), own_cpu_seconds(), machine_busy_seconds()

    def cores(self) -> dict[str, float]:
        end = self._read()
        wall, server, own, busy = (b - a for a, b in zip(self.start, end, strict=True))
        return {"server": server / wall, "clients": own / wall, "others": max(0.0, busy - server - own) / wall}


def load_run(server: ServeProcess, frames: list[bytes], streams: int, seconds: float) -> dict:
    """N clients streaming at FPS for `seconds`, then stopping; what they sent and got, and the server's view."""
    if not server.wait_streams(0):
        raise RuntimeError("streams of an earlier run are still open")
    metrics_before, rss_before = server.metrics(), server.rss_mib()
    clients = [StreamClient(server.ws_url) for _ in range(streams)]
    meter = CpuMeter(server)
    for thread in stream_all(clients, frames, seconds):
        thread.join()
    stopped = finish_all(clients)
    cpu = meter.cores()
    settled = server.wait_streams(0)
    run = summarise(clients, seconds, stopped)
    run.update(
        streams=streams,
        seconds=seconds,
        cpu_cores=cpu,
        settled=settled,
        rss_before_mib=rss_before,
        rss_after_mib=server.rss_mib(),
        metrics=metric_deltas(metrics_before, server.metrics()),
    )
    return run


def summarise(clients: list[StreamClient], seconds: float, stopped: list[bool]) -> dict:
    """Counts over every client (from their `stopped` messages) and pooled latency percentiles."""
    final = [c.stopped or c.stats or {} for c in clients]
    count = {k: sum(f.get(k, 0) for f in final) for k in ("received", "scored", "dropped", "refused", "errors")}
    results = [r for c in clients for r in c.results]
    server_ms = np.array([r["latency_ms"] for r in results if r["latency_ms"] is not None])
    rtt_ms = np.array([r["rtt_ms"] for r in results])
    sent = sum(len(c.sent_at) for c in clients)
    return {
        "sent": sent,
        "served": len(results),
        **count,
        "unsent": sum(f.get("unsent", 0) for f in final),
        "unaccounted": sent - len(results) - count["dropped"] - count["refused"] - count["errors"],
        "stopped_messages": sum(stopped),
        "late_sends": sum(c.late_sends for c in clients),
        "served_fps": len(results) / seconds,
        "server_ms": percentiles(server_ms),
        "round_trip_ms": percentiles(rtt_ms),
    }


def percentiles(values: np.ndarray) -> dict[str, float | None]:
    return {f"p{p}": float(np.percentile(values, p)) if len(values) else None for p in (50, 99)}


def metric_deltas(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """The counters' growth over a run, the refusals summed over reasons, and the mean encoder batch."""
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after if k.endswith(("_total", "_sum", "_count"))}
    batches = delta.get("ks_serve_encoder_batch_size_count", 0.0)
    return {
        "frames": delta.get("ks_serve_frames_total", 0.0),
        "results": delta.get("ks_serve_results_total", 0.0),
        "dropped": delta.get("ks_serve_dropped_total", 0.0),
        "refused": sum(v for k, v in delta.items() if k.startswith("ks_serve_refused_total")),
        "batches": batches,
        "mean_batch": delta.get("ks_serve_encoder_batch_size_sum", 0.0) / batches if batches else None,
    }


def warm_up(server: ServeProcess, frames: list[bytes]) -> None:
    client = StreamClient(server.ws_url)
    client.stream(frames, WARMUP_S)
    client.ask_stop()
    client.finish()


# --- fault (a): clients killed mid-stream ----------------------------------------------------------------------------


def spawn_victims(url: str, frame_file: Path, count: int) -> list[subprocess.Popen]:
    """Client processes started ahead, each waiting for a line on stdin before it connects: their start-up (the
    interpreter, imports) costs CPU that must not fall inside the measured window."""
    command = [sys.executable, "-m", "benchmarks.serve_load", "--victim", url, str(frame_file)]
    victims = [
        subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(count)
    ]
    for victim in victims:
        if victim.stdout.readline().strip() != "ready":
            raise RuntimeError(f"a victim client exited ({victim.wait()}) before it was ready")
    return victims


def victim_main(url: str, frame_file: str) -> None:
    """The client to be killed: says `ready`, waits for a line on stdin, connects, says its session, then sends a
    frame every 1/FPS s, never reading, until it is killed."""
    frame = Path(frame_file).read_bytes()
    print("ready", flush=True)
    sys.stdin.readline()
    with open_socket(url) as ws:
        print(json.loads(ws.recv(timeout=30.0))["session"], flush=True)
        due = time.perf_counter()
        while True:
            ws.send(frame)
            due += 1 / FPS
            time.sleep(max(0.0, due - time.perf_counter()))


def kill_cycle(server: ServeProcess, victim: subprocess.Popen, others: int, pause: float = 0.0) -> dict:
    """A waiting victim connects, streams VICTIM_STREAM_S and is killed; how long until the server counted it
    gone. `pause`: seconds to wait after it, so that what follows a kill is not the next victim's arrival."""
    go = time.perf_counter()
    victim.stdin.write("go\n")
    victim.stdin.flush()
    if not victim.stdout.readline().strip():
        raise RuntimeError(f"a victim client exited ({victim.wait()}) before the server's hello")
    opened = server.wait_streams(others + 1)
    time.sleep(VICTIM_STREAM_S)
    victim.kill()  # SIGKILL: no close frame, the kernel closes the socket
    victim.wait()
    killed = time.perf_counter()
    settled = server.wait_streams(others)
    settle_s = time.perf_counter() - killed
    time.sleep(pause)
    return {
        "opened": opened,
        "settled": settled,
        "settle_s": settle_s,
        "go_at": go,
        "killed_at": killed,
        "rss": server.rss_mib(),
    }


def kill_fault(server: ServeProcess, frames: list[bytes], frame_file: Path, cycles: int) -> dict:
    """STEADY_STREAMS clients stream BASELINE_S alone, then through KILLS_BESIDE kills (their drops by phase,
    results and gaps); then `cycles` kills with nobody else streaming (the server's RSS after each)."""
    victims = spawn_victims(server.ws_url, frame_file, KILLS_BESIDE + cycles)
    try:
        return kill_phases(server, frames, victims)
    finally:
        for victim in victims:  # those left by a failure
            if victim.poll() is None:
                victim.kill()
                victim.wait()


def kill_phases(server: ServeProcess, frames: list[bytes], victims: list[subprocess.Popen]) -> dict:
    done = threading.Event()
    steady = [StreamClient(server.ws_url) for _ in range(STEADY_STREAMS)]
    threads = stream_all(steady, frames, 3600.0, until=done)
    time.sleep(BASELINE_S)
    baseline_end = time.perf_counter()
    beside = [kill_cycle(server, victim, STEADY_STREAMS, AFTER_KILL_S) for victim in victims[:KILLS_BESIDE]]
    done.set()
    for thread in threads:
        thread.join()
    finish_all(steady)
    settled_zero = server.wait_streams(0)
    alone = [kill_cycle(server, victim, 0) for victim in victims[KILLS_BESIDE:]]
    rss = np.array([c["rss"] for c in alone])
    return {
        "beside": beside,
        "alone": alone,
        "steady": [steady_summary(client, beside, baseline_end) for client in steady],
        "settled_zero": settled_zero,
        "rss_first_mib": float(rss[0]),
        "rss_last_mib": float(rss[-1]),
        "rss_max_mib": float(rss.max()),
        "rss_slope_kib_per_kill": float(np.polyfit(np.arange(len(rss)), rss, 1)[0] * 1024) if len(rss) > 1 else None,
        "metrics": server.metrics(),
    }


def drop_phase(when: float, cycles: list[dict], baseline_end: float) -> str:
    """Which part of the kill fault a frame was sent in."""
    if when <= baseline_end:
        return "start" if when < baseline_end - BASELINE_S + START_S else "baseline"
    if any(c["go_at"] <= when <= c["go_at"] + JOINING_S for c in cycles):
        return "victim joining"
    if any(c["go_at"] <= when <= c["killed_at"] for c in cycles):
        return "victim streaming"
    if any(c["killed_at"] < when <= c["killed_at"] + AFTER_KILL_S for c in cycles):
        return "after a kill"
    return "between kills"


def phase_seconds(cycles: list[dict], started: float, baseline_end: float, ended: float) -> dict[str, float]:
    """How long each phase of drop_phase lasted, so that its frames without a result can be read as a rate."""
    streaming = sum(c["killed_at"] - c["go_at"] for c in cycles)
    joining = sum(min(JOINING_S, c["killed_at"] - c["go_at"]) for c in cycles)
    after = sum(min(AFTER_KILL_S, ended - c["killed_at"]) for c in cycles)
    return {
        "start": START_S,
        "baseline": baseline_end - started - START_S,
        "victim joining": joining,
        "victim streaming": streaming - joining,
        "after a kill": after,
        "between kills": ended - baseline_end - streaming - after,
    }


def steady_summary(client: StreamClient, cycles: list[dict], baseline_end: float) -> dict:
    """A client that streamed through the kills: what it sent and got, its longest wait between results, and its
    frames without a result by the phase they were sent in (a dropped frame's own number says which it was)."""
    indices = client.result_indices()
    arrivals = np.array([r["arrived"] for r in client.results])
    final = client.stopped or client.stats or {}
    missing = sorted(set(range(len(client.sent_at))) - set(indices))
    phases = dict.fromkeys(PHASES, 0)
    for index in missing:
        phases[drop_phase(client.sent_at[index], cycles, baseline_end)] += 1
    seconds = phase_seconds(cycles, client.sent_at[0], baseline_end, client.sent_at[-1])
    latency: dict[str, list[float]] = {phase: [] for phase in PHASES}
    for result in client.results:
        latency[drop_phase(client.sent_at[result["index"]], cycles, baseline_end)].append(result["latency_ms"] or 0)
    return {
        "sent": len(client.sent_at),
        "served": len(indices),
        "dropped": final.get("dropped"),
        "errors": final.get("errors"),
        "in_order": indices == sorted(indices),
        "missing": len(missing),
        "stopped": client.stopped is not None,
        "longest_gap_ms": float(np.diff(arrivals).max() * 1e3) if len(arrivals) > 1 else None,
        "missing_by_phase": phases,
        "phase_seconds": seconds,
        "latency_p99_by_phase": {k: float(np.percentile(v, 99)) if v else None for k, v in latency.items()},
    }


# --- fault (b): the server killed mid-session --------------------------------------------------------------------


def restart_fault(server: ServeProcess, frames: list[bytes], sig: int) -> dict:
    """A session streaming when the server gets `sig`; the server started again on the same port, the client
    reconnecting. Checks the crashed session against its CSV read SNAPSHOT_LEAD_S before the kill, and the new
    session against its own CSV."""
    done = threading.Event()
    client = StreamClient(server.ws_url)
    (thread,) = stream_all([client], frames, 3600.0, until=done)
    time.sleep(CRASH_AFTER_S)
    snapshot = server.session_rows(client.session)
    time.sleep(SNAPSHOT_LEAD_S)
    killed = time.perf_counter()
    exit_code = server.kill(sig)
    done.set()
    thread.join()
    client.reader.join(10.0)
    client.exit_stack.close()
    before = crashed_session(client, snapshot)
    server.start()
    healthy_s = time.perf_counter() - killed
    resumed = resume_session(server, frames, killed)
    return {
        "signal": signal.Signals(sig).name,
        "exit_code": exit_code,
        "before": before,
        "healthy_after_s": healthy_s,
        "old_session_csv": "404" if server.session_rows(client.session) is None else "still there",
        "resumed": resumed,
        "rss_new_mib": server.rss_mib(),
    }


def result_probs(client: StreamClient) -> dict[int, np.ndarray]:
    """Frame index -> the result's AU probabilities, in the CSV's column order (empty: no face)."""
    return {r["index"]: np.asarray(list((r["probs"] or {}).values())) for r in client.results}


def max_difference(rows: dict[int, np.ndarray], got: dict[int, np.ndarray]) -> float:
    """Largest probability difference over the frames both hold; a frame with a face on one side only is inf."""
    worst = 0.0
    for index in set(rows) & set(got):
        if rows[index].shape != got[index].shape:
            return float("inf")
        if rows[index].size:
            worst = max(worst, float(np.abs(rows[index] - got[index]).max()))
    return worst


def crashed_session(client: StreamClient, snapshot: dict[int, np.ndarray]) -> dict:
    """What the client of a killed server got: every row of the CSV read before the kill must be among its
    results with the same probabilities; frames after its last result are the ones lost in flight."""
    got = result_probs(client)
    indices = client.result_indices()
    last = max(indices, default=-1)
    missing_rows = sorted(set(snapshot) - set(got))
    return {
        "sent": len(client.sent_at),
        "served": len(indices),
        "last_index": last,
        "in_order": indices == sorted(indices),
        "gaps_below_last": len(set(range(last + 1)) - set(indices)),
        "reported_dropped": (client.stats or {}).get("dropped"),
        "lost_in_flight": len(client.sent_at) - 1 - last,
        "snapshot_rows": len(snapshot),
        "snapshot_rows_missing": len(missing_rows),
        "snapshot_max_diff": max_difference(snapshot, got),
        "ended": client.ended,
    }


def resume_session(server: ServeProcess, frames: list[bytes], killed: float) -> dict:
    """The client reconnects to the restarted server and streams RESUME_S; its results against its CSV."""
    client = StreamClient(server.ws_url)
    reconnect_s = time.perf_counter() - killed
    client.stream(frames, RESUME_S)
    client.ask_stop()
    stopped = client.finish()
    rows = server.session_rows(client.session) or {}
    got = result_probs(client)
    same = set(rows) == set(got) and max_difference(rows, got) <= PROB_TOLERANCE
    return {
        "reconnect_s": reconnect_s,
        "sent": len(client.sent_at),
        "served": len(client.results),
        "received": (client.stopped or {}).get("received"),
        "dropped": (client.stopped or {}).get("dropped"),
        "stopped": stopped,
        "first_index": client.results[0]["index"] if client.results else None,
        "csv_rows": len(rows),
        "csv_equals_results": same,
    }


# --- the report -------------------------------------------------------------------------------------------------


def ms(pair: dict) -> str:
    p50, p99 = pair["p50"], pair["p99"]
    return "-" if p50 is None else f"{p50:.0f} / {p99:.0f}"


def load_table(runs: list[dict]) -> list[str]:
    lines = [
        "| bundle | input | N | sent | served | dropped | refused, errors | served fps (per stream) | server "
        "latency p50 / p99 ms | round trip p50 / p99 ms | RSS before -> after MiB | /metrics frames, results, "
        "dropped | mean encoder batch | cores: server, clients, others |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        m, cpu = r["metrics"], r["cpu_cores"]
        batch = "-" if m["mean_batch"] is None else f"{m['mean_batch']:.1f}"
        lines.append(
            f"| {r['bundle']} | {r['input']} | {r['streams']} | {r['sent']} | {r['served']} | {r['dropped']} | "
            f"{r['refused']}, {r['errors']} | {r['served_fps']:.1f} ({r['served_fps'] / r['streams']:.1f}) | "
            f"{ms(r['server_ms'])} | {ms(r['round_trip_ms'])} | {r['rss_before_mib']:.0f} -> "
            f"{r['rss_after_mib']:.0f} | {m['frames']:.0f}, {m['results']:.0f}, {m['dropped']:.0f} | {batch} | "
            f"{cpu['server']:.2f}, {cpu['clients']:.2f}, {cpu['others']:.2f} |"
        )
    odd = [r for r in runs if r["unaccounted"] or r["stopped_messages"] != r["streams"] or not r["settled"]]
    lines.append("")
    lines.append(
        "Every frame sent was served or counted as dropped, refused or an error, every client got its `stopped` "
        "message, and the streams gauge went back to 0 after each run."
        if not odd
        else "Not all accounted for: " + "; ".join(f"{r['bundle']} {r['input']} N={r['streams']}: {r}" for r in odd)
    )
    return lines


def kill_lines(fault: dict) -> list[str]:
    beside, alone, steady = fault["beside"], fault["alone"], fault["steady"]
    settle = [c["settle_s"] for c in beside + alone]
    lines = [
        f"- **Clients killed mid-stream** ({fault['bundle']}, {fault['input']} frames): {len(beside)} client "
        f"processes (started ahead, each connecting when told) SIGKILLed after {VICTIM_STREAM_S:g} s of streaming "
        f"at {FPS:g} fps without reading (no close frame; the kernel closes the socket) while {len(steady)} clients "
        f"streamed, then {len(alone)} more with nobody else streaming.",
        f"  - streams gauge and /healthz back to the right count after every kill: "
        f"{sum(c['settled'] for c in beside + alone)}/{len(settle)} (within {max(settle) * 1e3:.0f} ms, median "
        f"{np.median(settle) * 1e3:.0f} ms); back to 0 at the end: {fault['settled_zero']}.",
    ]
    for k, s in enumerate(steady):
        lines.append(
            f"  - steady client {k + 1}: sent {s['sent']}, served {s['served']}, dropped {s['dropped']}, errors "
            f"{s['errors']}, results in order {s['in_order']}, frames without a result {s['missing']}, `stopped` "
            f"received {s['stopped']}, longest wait between two results {s['longest_gap_ms']:.0f} ms; frames without a "
            f"result by when they were sent: {phase_text(s['missing_by_phase'], s['phase_seconds'])}; server latency "
            f"p99 of its results by the same phases (ms): {p99_text(s['latency_p99_by_phase'])}."
        )
    lines.append(
        f"  - server RSS over the {len(alone)} kills alone: {fault['rss_first_mib']:.1f} MiB after the first, "
        f"{fault['rss_last_mib']:.1f} after the last (max {fault['rss_max_mib']:.1f}; fitted slope "
        f"{fault['rss_slope_kib_per_kill']:.0f} KiB a kill)."
    )
    return lines


def p99_text(latency: dict[str, float | None]) -> str:
    return ", ".join("-" if latency[k] is None else f"{latency[k]:.0f}" for k in PHASES)


def phase_text(missing: dict[str, int], seconds: dict[str, float]) -> str:
    spans = {
        "start": f"in the steady clients' own first {START_S:g} s",
        "baseline": "then before any victim",
        "victim joining": f"in a victim's first {JOINING_S:g} s (connect, first frames)",
        "victim streaming": "in the rest of its stream",
        "after a kill": f"within {AFTER_KILL_S:g} s after a kill",
        "between kills": "between kills",
    }
    return ", ".join(
        f"{spans[k]} {missing[k]} in {seconds[k]:.1f} s ({missing[k] / seconds[k]:.1f}/s)"
        if seconds[k] > 0
        else f"{spans[k]} {missing[k]}"
        for k in PHASES
    )


def restart_lines(fault: dict) -> list[str]:
    b, r = fault["before"], fault["resumed"]
    what = "crash" if fault["signal"] == "SIGKILL" else "restart"
    return [
        f"- **Server {fault['signal']} mid-session** ({what}; {fault['bundle']}, {fault['input']} frames): after "
        f"{CRASH_AFTER_S:g} s of a {FPS:g} fps stream; exit code {fault['exit_code']}; the client saw the "
        f"connection {b['ended']}.",
        f"  - before it: sent {b['sent']}, results {b['served']} (frames 0..{b['last_index']}, in order "
        f"{b['in_order']}, {b['gaps_below_last']} missing below the last; dropped reported {b['reported_dropped']}); "
        f"frames after the last result, dropped or in flight when the server went (the client knows them by "
        f"number): {b['lost_in_flight']}. The session's CSV read "
        f"{SNAPSHOT_LEAD_S:g} s before the kill had {b['snapshot_rows']} rows: {b['snapshot_rows_missing']} of them "
        f"missing from the client's results, largest probability difference {b['snapshot_max_diff']:.1g}.",
        f"  - started again on the same port, /healthz answered {fault['healthy_after_s']:.1f} s after the kill; "
        f"the client reconnected {r['reconnect_s']:.1f} s after it; the old session's CSV: {fault['old_session_csv']}.",
        f"  - new session: sent {r['sent']}, served {r['served']} (first index {r['first_index']}), received "
        f"{r['received']}, dropped {r['dropped']}, `stopped` {r['stopped']}; its CSV has {r['csv_rows']} rows, equal "
        f"to the results (frames and probabilities): {r['csv_equals_results']}. Server RSS "
        f"{fault['rss_new_mib']:.0f} MiB.",
    ]


def code_state() -> str:
    """The commit measured, and whether the runtime had uncommitted changes (others edit it meanwhile)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "ks_runtime"], cwd=ROOT, capture_output=True, text=True
        ).stdout.split("\n")
    except OSError:
        return "unknown (no git)"
    changed = [line[3:] for line in dirty if line.strip()]
    return f"commit {head.stdout.strip()}" + (f" with uncommitted changes to {', '.join(changed)}" if changed else "")


def machine_lines(info: dict, load_before: list[float], load_after: list[float]) -> list[str]:
    versions = info["versions"]
    return [
        f"Machine: {info['cpu']}, {info['cores']} cores ({', '.join(info['cpu_flags'])}), "
        f"{info['memory_gib']} GiB; {info['os']}; Python {info['python']}, onnxruntime {versions['onnxruntime']}, "
        f"opencv {versions['opencv-python-headless']}.",
        f"Load average (1, 5, 15 min): {', '.join(map(str, load_before))} before, {', '.join(map(str, load_after))} "
        "after. The clients run in the measuring process on the same cores as the server; the `others` column is "
        "the cores the rest of the machine kept busy during the run (/proc/stat less the server and the clients).",
    ]


def markdown(args: argparse.Namespace, runs: list[dict], faults: list[dict], meta: dict) -> str:
    started = datetime.datetime.fromtimestamp(meta["started"]).strftime("%Y-%m-%d %H:%M")
    command = "python -m benchmarks.serve_load " + " ".join(meta["argv"])
    lines = [
        f"## ks-serve under load and faults ({started}, {meta['minutes']:.0f} min)",
        "",
        f"`{command}`",
        "",
        *machine_lines(meta["info"], meta["load_before"], meta["load_after"]),
        f"Code: {meta['code']}.",
        "",
        f"Bundles: {'; '.join(f'**{k}** = {v}' for k, v in meta['bundles'].items())}. Frames: "
        f"{'; '.join(f'**{k}** = {v}' for k, v in meta['frames'].items())}; pre-encoded once, sent by each client "
        f"at {FPS:g} fps for {args.seconds:g} s, phases spread over one frame period. The server runs with its "
        "defaults (batch 8, max wait 10 ms, queue 4, max 8 streams, policy from the bundle) but the face stage "
        f"({', '.join(f'`--face {INPUTS[k]}` for {k}' for k in meta['frames'])}), after a warm-up stream.",
        "",
        "Served: results the clients got; dropped, refused, errors: the server's counts in each client's `stopped` "
        "message. Server latency: each result's `latency_ms` (frame's arrival at the server to its final result); "
        "round trip: the client's send() to the result's arrival. Percentiles pool every result of the run.",
        "",
        *load_table(runs),
        "",
        "### Faults",
        "",
    ]
    for fault in faults:
        lines += kill_lines(fault) if fault["kind"] == "kill" else restart_lines(fault)
    return "\n".join(lines) + "\n"


# --- main ------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4, 8], help="concurrent streams per run")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds each run streams")
    parser.add_argument("--bundles", nargs="+", default=["synth-cpu", "paper-r50"], help="profiles or bundle folders")
    parser.add_argument(
        "--inputs", nargs="+", choices=sorted(INPUTS), default=["aligned"], help="aligned 112 px crops, 640x480 scenes"
    )
    parser.add_argument("--fault-bundles", nargs="*", help="bundles of the fault checks (default: the first)")
    parser.add_argument("--kill-cycles", type=int, default=20, help="clients killed with nobody else streaming")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the markdown report")
    parser.add_argument("--json", type=Path, help="also every number behind the report, as JSON")
    parser.add_argument("--victim", nargs=2, metavar=("URL", "FRAME"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def measure_bundle(name: str, bundle: Path, kind: str, frames: list[bytes], args: argparse.Namespace, work: Path):
    """The load runs on one bundle and input kind and, for a fault bundle, the faults."""
    server = ServeProcess(bundle, INPUTS[kind], free_port(), work)
    runs, faults = [], []
    tag = {"bundle": name, "input": kind}
    try:
        server.start()
        warm_up(server, frames)
        for streams in args.streams:
            say(f"{name}, {kind}: {streams} stream(s) for {args.seconds:g} s")
            runs.append({**tag, **load_run(server, frames, streams, args.seconds)})
        if name in (args.bundles[:1] if args.fault_bundles is None else args.fault_bundles):
            say(f"{name}, {kind}: faults")
            faults = [{**tag, **fault} for fault in run_faults(server, frames, work, args.kill_cycles)]
    finally:
        server.stop()
    return runs, faults


def say(text: str) -> None:
    print(f"[serve_load] {text}", file=sys.stderr, flush=True)


def run_faults(server: ServeProcess, frames: list[bytes], work: Path, cycles: int) -> list[dict]:
    frame_file = work / "victim-frame.jpg"
    frame_file.write_bytes(frames[0])
    faults = [{"kind": "kill", **kill_fault(server, frames, frame_file, cycles)}]
    for sig in (signal.SIGKILL, signal.SIGTERM):
        faults.append({"kind": "restart", **restart_fault(server, frames, sig)})
    return faults


def describe_frames(kind: str, frames: list[bytes]) -> str:
    shape = "aligned 112 px SynthAU crops" if kind == "aligned" else "640x480 SynthAU scene frames"
    mean_kib = np.mean([len(f) for f in frames]) / 1024
    return f"{len(frames)} {shape} as JPEG (quality {JPEG_QUALITY}, mean {mean_kib:.1f} KiB)"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.victim:
        victim_main(*args.victim)
        return 0
    meta = {"started": time.time(), "argv": argv, "info": machine_info(), "load_before": load_average()}
    meta["code"] = code_state()
    bundles = {name: resolve_bundle(name) for name in args.bundles}  # exports, when needed, before any timing
    meta.update(bundles={name: described for name, (_, described) in bundles.items()}, frames={})
    runs, faults = [], []
    work = Path(tempfile.mkdtemp(prefix="serve-load-"))  # the servers' logs: kept when a run fails
    for kind in args.inputs:
        frames = encoded_frames(kind)
        meta["frames"][kind] = describe_frames(kind, frames)
        for name in args.bundles:
            bundle_runs, bundle_faults = measure_bundle(name, bundles[name][0], kind, frames, args, work)
            runs += bundle_runs
            faults += bundle_faults
    shutil.rmtree(work, ignore_errors=True)
    meta.update(load_after=load_average(), minutes=(time.time() - meta["started"]) / 60)
    text = markdown(args, runs, faults, meta)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "runs": runs, "faults": faults}, indent=1, default=str))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
