"""Corpus runs: many videos through one bundle, fanned out over worker processes on this machine (`ks-run --workers
N`) or over the actors of a Ray cluster (`--ray ADDRESS`), each worker opening the bundle once for all its videos.

Every video gets the CSV (and timeline, overlay, crops when asked) that a one-video `ks-run` writes for it, and
beside the CSV `<csv>.done.json`, written once the CSV is complete: the bundle's hash, the settings that shape the
CSV, and the input's size and mtime. A later run skips a video whose sidecar matches all of them (`plan`), so a run
that was stopped resumes where it stopped. A video that fails is reported with its error; the others still run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
import os
import signal
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ks_runtime.commandline import LOG_FORMAT
from ks_runtime.core.bundle import read_manifest
from ks_runtime.core.bundle_files import MANIFEST, read_inside
from ks_runtime.core.errors import ConfigError, KSError
from ks_runtime.detector import Detector
from ks_runtime.io.sources import IMAGE_SUFFIXES, VIDEO_SUFFIXES, is_camera_spec

log = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".done.json"
LIST_SUFFIX = ".txt"  # a file listing the corpus's videos, one path a line
AUTO = "auto"  # --ray auto: a running cluster, else a local one
# ray.init's options when `--ray auto` finds no cluster and starts one on this machine (tests add num_cpus and a
# short _temp_dir: Ray's socket paths must fit in 107 bytes).
LOCAL_CLUSTER: dict[str, Any] = {"include_dashboard": False}
# The Detector options whose value changes a CSV's numbers or columns: a sidecar holding others is not a match.
CSV_SHAPING = ("policy", "face", "max_faces", "precision", "engine", "device")


@dataclass(frozen=True)
class Video:
    """One video of a corpus and where its outputs go: the paths a one-video `ks-run` gives it (cli.output_paths)."""

    path: Path
    outputs: dict[str, Path | None]

    @property
    def csv(self) -> Path:
        return self.outputs["csv"]

    @property
    def sidecar(self) -> Path:
        return self.csv.with_name(self.csv.name + SIDECAR_SUFFIX)

    def absolute(self) -> Video:
        """Its paths made absolute: a Ray worker need not share this process's working directory."""
        outputs = {name: None if path is None else Path(os.path.abspath(path)) for name, path in self.outputs.items()}
        return Video(Path(os.path.abspath(self.path)), outputs)


@dataclass(frozen=True)
class CorpusJob:
    """What every worker needs: the bundle (and its hash), the Detector's options, the CSV's format and separator."""

    bundle: str
    bundle_sha256: str
    detector: dict[str, Any]
    csv_format: str
    csv_sep: str
    log_level: int = logging.WARNING

    @classmethod
    def create(cls, bundle: str | Path, detector: dict[str, Any], csv_format: str, csv_sep: str, **kw) -> CorpusJob:
        """The job for `bundle`, read and checked here, before any worker starts: a bad bundle fails once."""
        return cls(os.path.abspath(bundle), bundle_sha256(bundle), dict(detector), csv_format, csv_sep, **kw)

    def settings(self) -> dict[str, Any]:
        return {"format": self.csv_format, "sep": self.csv_sep} | {k: self.detector.get(k) for k in CSV_SHAPING}

    def stamp(self, video: Video) -> dict[str, Any]:
        """What the sidecar of `video` holds once its CSV is complete."""
        return {"bundle_sha256": self.bundle_sha256, "settings": self.settings(), "input": input_stat(video.path)}

    def with_threads(self, threads: int) -> CorpusJob:
        return replace(self, detector=self.detector | {"threads": threads})


@dataclass
class VideoResult:
    """How one video went: its frames and seconds, and its error (None: its CSV is complete and stamped)."""

    input: str
    csv: str
    frames: int = 0
    seconds: float = 0.0
    error: str | None = None
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def failure(cls, video: Video, error: str) -> VideoResult:
        return cls(str(video.path), str(video.csv), error=error)


@dataclass
class CorpusReport:
    """A corpus run: the videos run, those skipped as done before, the wall time."""

    results: list[VideoResult]
    skipped: list[Video]
    seconds: float

    @property
    def failed(self) -> list[VideoResult]:
        return [r for r in self.results if r.error is not None]

    def text(self) -> str:
        done = [r for r in self.results if r.error is None]
        frames = sum(r.frames for r in done)
        return (
            f"{len(self.results) + len(self.skipped)} videos in {self.seconds:.1f} s: {len(done)} done "
            f"({frames} frames), {len(self.skipped)} skipped (done before with this bundle and settings), "
            f"{len(self.failed)} failed"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "results": [asdict(r) for r in self.results],
            "skipped": [str(v.path) for v in self.skipped],
            "failed": [{"input": r.input, "error": r.error} for r in self.failed],
        }


def bundle_sha256(bundle: str | Path) -> str:
    """The bundle's identity: its manifest's sha256. The manifest holds every file's sha256 and read_manifest checks
    the files against them, so equal hashes mean the same graphs, thresholds and settings."""
    root = read_manifest(bundle).root
    return hashlib.sha256(read_inside(root, MANIFEST, MANIFEST)).hexdigest()


def input_stat(path: Path) -> dict[str, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None  # it fails when it runs, with its own error
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def list_videos(specs: Iterable[str]) -> list[Path]:
    """The corpus's videos: files as given, a folder's video files by name, a .txt file's lines (paths
    relative to it; blank lines and # comments skipped). Images, cameras and SynthAU specs are refused: a corpus run
    is of videos (an image folder is one input: run it without --workers)."""
    videos: list[Path] = []
    for spec in specs:
        if is_camera_spec(spec) or spec.startswith("synthau:"):
            raise ConfigError(f"{spec}: --workers and --ray run video files; run a camera or SynthAU spec alone")
        path = Path(spec)
        if path.is_dir():
            videos += _folder_videos(path)
        elif path.suffix.lower() == LIST_SUFFIX and path.is_file():
            videos += _listed_videos(path)
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            raise ConfigError(f"{path}: an image; --workers and --ray run video files (run images without them)")
        else:
            videos.append(path)  # a missing file fails when it runs, listed with the others' failures
    return list(dict.fromkeys(videos))  # a video named twice runs once


def _folder_videos(folder: Path) -> list[Path]:
    videos = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    if not videos:
        images = any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir())
        raise ConfigError(
            f"{folder}: no video files ({', '.join(VIDEO_SUFFIXES)})"
            + (
                "; it holds images: run an image folder without --workers/--ray (each image alone, or --sequence)"
                if images
                else ""
            )
        )
    return videos


def _listed_videos(listing: Path) -> list[Path]:
    lines = (line.strip() for line in listing.read_text().splitlines())
    return [listing.parent / line for line in lines if line and not line.startswith("#")]


def plan(videos: Sequence[Video], job: CorpusJob) -> tuple[list[Video], list[Video]]:
    """(to run, skipped): a video is skipped when its sidecar holds `job.stamp(video)` (same bundle, settings and
    input) and every output it asks for is there. Two videos writing one CSV are refused, naming both."""
    check_distinct_outputs(videos)
    to_run, skipped = [], []
    for video in videos:
        done = read_sidecar(video.sidecar) == job.stamp(video)
        outputs = all(path.exists() for path in video.outputs.values() if path is not None)
        (skipped if done and outputs else to_run).append(video)
    return to_run, skipped


def check_distinct_outputs(videos: Sequence[Video]) -> None:
    seen: dict[Path, Path] = {}
    for video in videos:
        other = seen.setdefault(video.csv.resolve(), video.path)
        if other != video.path:
            raise ConfigError(
                f"{other} and {video.path} would both write {video.csv}: rename one, or run them into separate "
                f"--out-dir folders"
            )


def read_sidecar(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # none, or unreadable: the video runs again


def write_sidecar(path: Path, stamp: dict[str, Any]) -> None:
    """Write the sidecar whole or not at all (a run stopped mid-write must not leave half of one)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(stamp, indent=1) + "\n")
    os.replace(partial, path)


class VideoWorker:
    """One worker: the Detector, opened once, and the videos given to it one after another. A bundle that this
    worker cannot open fails each of its videos with that error (the other workers carry on)."""

    def __init__(self, job: CorpusJob) -> None:
        logging.basicConfig(format=LOG_FORMAT)  # a spawned process or a Ray actor has no handler yet
        logging.getLogger("ks_runtime").setLevel(job.log_level)
        self.job = job
        self.detector: Detector | None = None
        self.error: str | None = None
        try:
            self.detector = Detector(job.bundle, **job.detector)
        except Exception as error:  # reported per video by run(): a worker that raised here would die unheard
            self.error = f"{job.bundle}: cannot open the bundle in a worker: {error}"

    def run(self, video: Video) -> VideoResult:
        """Run one video; every failure is its result, never raised: a worker outlives its videos' errors."""
        if self.detector is None:
            return VideoResult.failure(video, self.error or "no detector")
        started = time.perf_counter()
        stamp = self.job.stamp(video)  # before the run: an input changed while it ran runs again next time
        try:
            video.sidecar.unlink(missing_ok=True)  # a stale sidecar must not vouch for the CSV rewritten now
            table = self.detector.detect(
                str(video.path),
                csv=video.csv,
                plot=video.outputs.get("plot"),
                overlay=video.outputs.get("overlay"),
                save_crops=video.outputs.get("crops"),
                csv_format=self.job.csv_format,
                csv_sep=self.job.csv_sep,
            )
            error = table.attrs.get("error")
            if error is None:
                write_sidecar(video.sidecar, stamp)
        except Exception as failure:  # a bug's too: one video's failure is reported, the corpus goes on
            log.debug("%s failed", video.path, exc_info=True)
            return VideoResult.failure(video, _describe(failure))
        summary = self.detector.summary
        return VideoResult(
            str(video.path),
            str(video.csv),
            len(table),
            time.perf_counter() - started,
            None if error is None else _describe(error),
            list(summary.warnings) if summary is not None else [],
        )


def _describe(error: BaseException) -> str:
    """The error as one line: ours name their file; anything else shows its type too."""
    return str(error) if isinstance(error, KSError | OSError) else f"{type(error).__name__}: {error}"


def run_corpus(
    job: CorpusJob, videos: Sequence[Video], workers: int, ray_address: str | None = None, progress: bool = True
) -> CorpusReport:
    """Run the videos `plan` does not skip over `workers` local processes, or over `workers` Ray actors when
    `ray_address` is given; a progress bar moves as each video ends."""
    started = time.perf_counter()
    to_run, skipped = plan(videos, job)
    for video in skipped:
        log.debug("%s: done before with this bundle and settings (%s): skipped", video.path, video.sidecar)
    results: list[VideoResult] = []
    if to_run:
        backend = run_on_ray if ray_address is not None else run_local
        with tqdm(total=len(to_run), unit="video", disable=not progress, desc="corpus") as bar:
            for result in backend(job, to_run, workers, ray_address):
                results.append(result)
                bar.update(1)
                if result.error is not None:
                    bar.set_postfix(failed=sum(r.error is not None for r in results))
    return CorpusReport(results, skipped, time.perf_counter() - started)


def local_cores() -> int:
    """The cores this process may run on (its affinity: a container's share, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def threads_per_worker(job: CorpusJob, cores: float, workers: int) -> int:
    """--threads when given, else this machine's (or cluster's) cores shared among the workers."""
    return int(job.detector.get("threads") or max(1, int(cores // workers)))


# --- local processes ------------------------------------------------------------------------------------------------


@dataclass
class _Process:
    """A spawned worker process, the parent's end of its pipe, and the video it was last sent (None: none yet)."""

    process: multiprocessing.process.BaseProcess
    connection: Connection
    video: Video | None = None


def _worker_main(job: CorpusJob, connection: Connection) -> None:
    """A worker process: the bundle opened once, then each video the parent sends, its result sent back, until the
    parent sends None."""
    worker = VideoWorker(job)
    try:
        for video in iter(connection.recv, None):
            connection.send(worker.run(video))
    except (EOFError, BrokenPipeError):  # the parent has gone (stopped or killed): no one is left to tell
        pass


def run_local(
    job: CorpusJob, videos: Sequence[Video], workers: int, _address: str | None = None
) -> Iterator[VideoResult]:
    """The videos over `workers` spawned processes, each sent its next video as it ends one; results as they end.
    Spawned, not forked: a fork copies onnxruntime's thread pools in whatever state they are in.

    Our own processes and pipes, not a ProcessPoolExecutor: one process dying there (a segfault, os._exit, the OOM
    killer) breaks the whole pool and fails every queued video, and does not say which video it was running. Here
    a process that dies fails the one video it held, with its exit code, and a new process takes the next queued
    video; the others run on. Every death uses up the video it held (it is not retried), so a video or a bundle
    that kills every worker cannot loop: at most `workers` + len(videos) processes are started."""
    workers = min(workers, len(videos))
    job = job.with_threads(threads_per_worker(job, local_cores(), workers))
    context = multiprocessing.get_context("spawn")
    queue: deque[Video] = deque(videos)
    started: list[_Process] = []
    busy: dict[Any, _Process] = {}  # its connection and its process's sentinel -> a process holding a video

    def start() -> None:
        worker = _spawn(context, job)
        started.append(worker)
        if _give(worker, queue):
            busy[worker.connection] = busy[worker.process.sentinel] = worker

    try:
        for _ in range(min(workers, len(queue))):
            start()
        while busy:
            for worker in {id(busy[ready]): busy[ready] for ready in wait(list(busy))}.values():
                result, died = _collect(worker)
                del busy[worker.connection], busy[worker.process.sentinel]
                yield result
                if died and queue:
                    start()  # in the dead one's place
                elif not died and _give(worker, queue):
                    busy[worker.connection] = busy[worker.process.sentinel] = worker
    finally:
        _stop(started, busy)  # stopped early (Ctrl-C): the queued videos never start


def _spawn(context: Any, job: CorpusJob) -> _Process:
    parent, child = context.Pipe()
    process = context.Process(target=_worker_main, args=(job, child), name="ks-corpus-worker")
    process.start()
    child.close()  # the child's end is the child's alone: its death then reads as end-of-file here
    return _Process(process, parent)


def _give(worker: _Process, queue: deque[Video]) -> bool:
    """Send `worker` the next queued video (True), or None to end it when none is left (False)."""
    worker.video = queue.popleft() if queue else None
    try:
        worker.connection.send(worker.video)
    except OSError:  # it has died: its sentinel or its pipe's end-of-file reports that, with the video it held
        pass
    return worker.video is not None


def _collect(worker: _Process) -> tuple[VideoResult, bool]:
    """(the result `worker` sent for its video, False), or, when its process died without one, (that video's
    failure naming the exit code, True)."""
    try:
        if worker.connection.poll():
            return worker.connection.recv(), False
    except (EOFError, OSError):
        pass  # the pipe closed: the process died
    worker.process.join()
    code = worker.process.exitcode
    died_of = f" ({signal.Signals(-code).name})" if code is not None and -code in signal.valid_signals() else ""
    error = f"{worker.video.path}: its worker process died while running it (exit code {code}{died_of})"
    return VideoResult.failure(worker.video, error), True


def _stop(started: list[_Process], busy: dict[Any, _Process]) -> None:
    """End every worker process: those mid-video (the run stopped early) are terminated, and every pipe is closed,
    which ends a worker waiting for its next video (end-of-file). A terminated video's CSV has no sidecar, so the
    next run runs it again."""
    for worker in {id(w): w for w in busy.values()}.values():
        worker.process.terminate()
    for worker in started:
        worker.connection.close()
    for worker in started:
        worker.process.join()


# --- Ray actors -----------------------------------------------------------------------------------------------------


def run_on_ray(job: CorpusJob, videos: Sequence[Video], workers: int, address: str | None) -> Iterator[VideoResult]:
    """The videos over `workers` Ray actors, each holding a Detector; results as they end (`ray.wait`). Every node
    must reach the bundle and the videos at the paths given, and have this package installed."""
    try:
        import ray  # deferred: ray (the optional ray extra)
    except ImportError:
        raise ConfigError("--ray needs Ray: pip install 'knowledge-spreader[ray]'") from None
    connect_ray(ray, address or AUTO)
    try:
        yield from _on_actors(ray, job, videos, workers)
    finally:
        ray.shutdown()  # a cluster this run started stops with it; a running one is only disconnected from


def connect_ray(ray: Any, address: str) -> None:
    """`auto`: the running cluster (RAY_ADDRESS, or the latest `ray start` on this machine), else a local one
    started with LOCAL_CLUSTER's options. ray.init(address="auto") raises ConnectionError when none runs, where
    ray.init() would start one, but with no way to give the local cluster's options only when it is started."""
    try:
        if address != AUTO:
            ray.init(address=address, logging_level=logging.WARNING)
            return
        try:
            ray.init(address=AUTO, logging_level=logging.WARNING)
        except ConnectionError:
            log.info("no Ray cluster running: starting a local one")
            ray.init(logging_level=logging.WARNING, **LOCAL_CLUSTER)
    except (ConnectionError, ValueError, RuntimeError) as error:
        raise ConfigError(f"--ray {address}: cannot connect to or start a Ray cluster: {error}") from None


def actor_cpus(cluster_cpus: float, workers: int) -> float:
    """Each actor's CPU reservation: the cluster's CPUs shared among the workers, so that all of them are placed.
    Ray takes a fraction below one CPU, a whole number above."""
    share = cluster_cpus / workers
    return float(int(share)) if share >= 1 else math.floor(share * 1e4) / 1e4


def _on_actors(ray: Any, job: CorpusJob, videos: Sequence[Video], workers: int) -> Iterator[VideoResult]:
    """Each actor is given its next video as it ends one, so a long video never holds up the queue behind it."""
    cluster_cpus = float(ray.cluster_resources().get("CPU", 1.0))
    workers = min(workers, len(videos))
    job = job.with_threads(threads_per_worker(job, cluster_cpus, workers))
    remote = ray.remote(VideoWorker).options(num_cpus=actor_cpus(cluster_cpus, workers))
    actors = [remote.remote(job) for _ in range(workers)]
    queue, running = deque(video.absolute() for video in videos), {}

    def give(actor: Any) -> None:
        if queue:
            video = queue.popleft()
            running[actor.run.remote(video)] = (actor, video)

    for actor in actors:
        give(actor)
    while running:
        (ref,), _ = ray.wait(list(running), num_returns=1)
        actor, video = running.pop(ref)
        try:
            result = ray.get(ref)
        except ray.exceptions.RayActorError as error:  # the actor died: its video fails, it gets no more
            result, actor = VideoResult.failure(video, f"its Ray worker died: {error}"), None
        except ray.exceptions.RayError as error:
            result = VideoResult.failure(video, f"Ray: {error}")
        yield result
        if actor is not None:
            give(actor)
    for video in queue:  # every actor died
        yield VideoResult.failure(video, "no Ray worker left to run it")
