"""ks_runtime/corpus.py through `ks-run --workers N` and `--ray auto`: a CSV per video equal to a one-video run's,
a broken video listed while the others are written, a worker process dying failing only the video it held, resuming
(done videos skipped, a changed bundle, setting or input run again), image folders refused, and a local Ray cluster
giving the same CSVs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest

from ks_runtime import corpus
from ks_runtime.cli import main
from ks_runtime.core.errors import ConfigError
from ks_runtime.tools.policy_report import write_lossless_video
from tests.runtime.conftest import synth_frames

LENGTHS = (6, 8, 10)  # frames of each good video: short, and each longer than the clip (3)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("corpus")
    return [
        write_lossless_video(synth_frames(n, size=32, seed=i)[0], folder / f"clip{i}", 25.0)
        for i, n in enumerate(LENGTHS)
    ]


@pytest.fixture(scope="module")
def with_broken(videos, tmp_path_factory) -> Path:
    """A folder of the good videos and bad.avi, random bytes that no codec opens."""
    folder = tmp_path_factory.mktemp("with_broken")
    for video in videos:
        shutil.copy(video, folder / video.name)
    (folder / "bad.avi").write_bytes(bytes(range(256)) * 8)
    return folder


@pytest.fixture(scope="module")
def reference(bundle, videos, tmp_path_factory) -> dict[str, bytes]:
    """Each good video's CSV from a plain one-video `ks-run`."""
    out = tmp_path_factory.mktemp("reference")
    for video in videos:
        assert main([str(bundle), "--input", str(video), "--csv", str(out / "one.csv"), "--no-progress", "-q"]) == 0
        (out / f"{video.stem}.csv").write_bytes((out / "one.csv").read_bytes())
    return {video.stem: (out / f"{video.stem}.csv").read_bytes() for video in videos}


def corpus_run(bundle: Path, inputs: list[Path], out: Path, *flags: str) -> int:
    argv = [str(bundle), "--out-dir", str(out), "--no-progress", *flags]
    for path in inputs:
        argv += ["--input", str(path)]
    return main(argv)


def assert_same_csvs(out: Path, reference: dict[str, bytes]) -> None:
    for stem, expected in reference.items():
        assert (out / f"{stem}.csv").read_bytes() == expected, stem
        assert json.loads((out / f"{stem}.csv{corpus.SIDECAR_SUFFIX}").read_text())["bundle_sha256"]


def test_two_workers_write_each_videos_csv_and_list_the_broken_one(bundle, with_broken, reference, tmp_path, capsys):
    code = corpus_run(bundle, [with_broken], tmp_path, "--workers", "2")
    captured = capsys.readouterr()
    assert code == 1
    assert_same_csvs(tmp_path, reference)
    assert "4 videos" in captured.out and "3 done" in captured.out and "1 failed" in captured.out
    errors = [line for line in captured.err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "bad.avi" in errors[0]
    assert not (tmp_path / f"bad.csv{corpus.SIDECAR_SUFFIX}").exists()


class Tripwire:
    """A worker's pipe that ends its process, as a segfault would (os._exit: no cleanup, no result), when it is sent
    a video named dies.*. Spawned workers do not see a monkeypatch, but they import the target they are given."""

    def __init__(self, connection) -> None:
        self.connection = connection

    def recv(self):
        video = self.connection.recv()
        if video is not None and video.path.stem == "dies":
            os._exit(3)
        return video

    def send(self, result) -> None:
        self.connection.send(result)


def dies_on_a_video(job, connection) -> None:  # corpus._worker_main's stand-in, in the spawned process
    corpus._worker_main(job, Tripwire(connection))


def killed_at_start(job, connection) -> None:  # as the OOM killer would
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_worker_process_dying_fails_only_the_video_it_held(bundle, videos, reference, tmp_path, monkeypatch, capsys):
    dies = shutil.copy(videos[0], tmp_path / "dies.avi")
    monkeypatch.setattr(corpus, "_worker_main", dies_on_a_video)
    assert corpus_run(bundle, [dies, *videos], tmp_path / "out", "--workers", "2") == 1
    captured = capsys.readouterr()
    assert_same_csvs(tmp_path / "out", reference)  # every other video, including those queued behind it
    assert "4 videos" in captured.out and "3 done" in captured.out and "1 failed" in captured.out
    errors = [line for line in captured.err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "dies.avi: its worker process died while running it (exit code 3)" in errors[0]


def test_videos_that_kill_every_worker_fail_once_each_and_the_run_ends(bundle, videos, tmp_path, monkeypatch):
    spawned = []
    spawn = corpus._spawn
    monkeypatch.setattr(corpus, "_spawn", lambda *args: spawned.append(1) or spawn(*args))
    monkeypatch.setattr(corpus, "_worker_main", killed_at_start)
    job = corpus.CorpusJob.create(bundle, {"threads": 1}, "ks", ",")
    jobs = [corpus.Video(v, {"csv": tmp_path / f"{v.stem}.csv"}) for v in videos]
    report = corpus.run_corpus(job, jobs, workers=2, progress=False)
    assert sorted(r.input for r in report.failed) == sorted(str(v) for v in videos)
    assert all("exit code -9 (SIGKILL)" in r.error for r in report.failed)
    assert len(spawned) == len(videos)  # one process per video it killed: no retries, no loop


def test_a_run_stopped_early_ends_its_worker_processes(bundle, videos, tmp_path, monkeypatch):
    spawned = []
    spawn = corpus._spawn
    monkeypatch.setattr(corpus, "_spawn", lambda *args: spawned.append(spawn(*args)) or spawned[-1])
    job = corpus.CorpusJob.create(bundle, {"threads": 1}, "ks", ",")
    results = corpus.run_local(job, [corpus.Video(v, {"csv": tmp_path / f"{v.stem}.csv"}) for v in videos], 2)
    assert next(results).error is None
    results.close()  # as a Ctrl-C in the consumer does: the one still running is terminated, the queued never start
    assert len(spawned) == 2 and not any(worker.process.is_alive() for worker in spawned)


def test_a_second_run_skips_the_done_videos_and_reruns_one_whose_sidecar_differs(
    bundle, videos, reference, tmp_path, capsys
):
    listing = tmp_path / "corpus.txt"  # a list of the videos, one a line, with a comment
    listing.write_text("# the corpus\n" + "\n".join(str(v) for v in videos) + "\n")
    out = tmp_path / "out"
    assert corpus_run(bundle, [listing], out, "--workers", "2") == 0
    assert_same_csvs(out, reference)
    written = {v.stem: (out / f"{v.stem}.csv").stat().st_mtime_ns for v in videos}
    capsys.readouterr()

    assert corpus_run(bundle, [listing], out, "--workers", "2") == 0
    assert "0 done" in capsys.readouterr().out
    assert {v.stem: (out / f"{v.stem}.csv").stat().st_mtime_ns for v in videos} == written

    sidecar = out / f"{videos[1].stem}.csv{corpus.SIDECAR_SUFFIX}"
    sidecar.write_text(json.dumps(json.loads(sidecar.read_text()) | {"bundle_sha256": "0" * 64}))
    assert corpus_run(bundle, [listing], out, "--workers", "2") == 0
    summary = capsys.readouterr().out
    assert "1 done" in summary and "2 skipped" in summary
    after = {v.stem: (out / f"{v.stem}.csv").stat().st_mtime_ns for v in videos}
    assert [stem for stem in after if after[stem] != written[stem]] == [videos[1].stem]
    assert_same_csvs(out, reference)


def test_plan_runs_again_what_another_bundle_settings_or_input_made(bundle, videos, tmp_path):
    job = corpus.CorpusJob.create(bundle, {"face": "auto", "threads": 1}, "openface", ",")
    done = [corpus.Video(v, {"csv": tmp_path / f"{v.stem}.csv", "plot": None}) for v in videos]
    for video in done:
        video.csv.write_text("made\n")
        corpus.write_sidecar(video.sidecar, job.stamp(video))
    assert corpus.plan(done, job) == ([], done)
    assert corpus.plan(done, corpus.CorpusJob("other", "f" * 64, job.detector, "openface", ","))[1] == []
    assert corpus.plan(done, corpus.CorpusJob.create(bundle, job.detector, "ks", ","))[1] == []  # another format
    with_plot = [corpus.Video(done[0].path, done[0].outputs | {"plot": tmp_path / "missing.png"}), *done[1:]]
    assert corpus.plan(with_plot, job)[0] == with_plot[:1]  # an output asked for and missing
    copy = tmp_path / videos[0].name
    shutil.copy(videos[0], copy)
    moved = corpus.Video(copy, done[0].outputs)
    assert corpus.plan([moved], job)[0] == [moved]  # another input file (its size or mtime)


def test_two_videos_writing_one_csv_are_refused(videos, tmp_path):
    same = [corpus.Video(v, {"csv": tmp_path / "x.csv"}) for v in videos[:2]]
    with pytest.raises(ConfigError, match="would both write"):
        corpus.check_distinct_outputs(same)


def test_an_image_folder_and_single_input_flags_are_refused(bundle, tmp_path, capsys):
    import cv2

    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), synth_frames(1, size=32)[0][0])
    assert corpus_run(bundle, [images], tmp_path / "out", "--workers", "2") == 1
    assert "it holds images: run an image folder without --workers" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        corpus_run(bundle, [images], tmp_path / "out", "--workers", "2", "--csv", str(tmp_path / "one.csv"))
    assert exited.value.code == 2 and "--csv names one file" in capsys.readouterr().err


def test_cpus_and_threads_are_shared_among_the_workers():
    job = corpus.CorpusJob("b", "h", {"threads": 0}, "ks", ",")
    assert corpus.threads_per_worker(job, 8, 3) == 2 and corpus.threads_per_worker(job, 2, 4) == 1
    assert corpus.threads_per_worker(job.with_threads(3), 8, 2) == 3
    assert corpus.actor_cpus(2, 2) == 1.0 and corpus.actor_cpus(2, 3) == 0.6666 and corpus.actor_cpus(9, 2) == 4.0


@pytest.fixture()
def local_ray(monkeypatch):
    """No cluster to find (an empty RAY_TMPDIR, no RAY_ADDRESS): `--ray auto` starts a local one, with 2 CPUs, no
    dashboard and a short temp dir (Ray's socket paths must fit in 107 bytes); shut down afterwards."""
    ray = pytest.importorskip("ray", reason="ray is not installed: pip install '.[ray]'")
    temp = tempfile.mkdtemp(prefix="ksray", dir="/tmp")
    monkeypatch.setenv("RAY_TMPDIR", temp)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setitem(corpus.LOCAL_CLUSTER, "num_cpus", 2)
    monkeypatch.setitem(corpus.LOCAL_CLUSTER, "_temp_dir", temp)
    yield ray
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


def test_ray_auto_starts_a_local_cluster_and_writes_the_same_csvs(
    local_ray, bundle, with_broken, reference, tmp_path, capsys
):
    assert corpus_run(bundle, [with_broken], tmp_path, "--workers", "2", "--ray", "auto") == 1
    captured = capsys.readouterr()
    assert_same_csvs(tmp_path, reference)
    assert "3 done" in captured.out and "1 failed" in captured.out and "bad.avi" in captured.err
    assert not local_ray.is_initialized()  # the run shut down the cluster it started
