"""A run folder after a kill, a full disk or a DataLoader worker that dies: it agrees with its last.pt, a resume
continues it cleanly, and each failure is an error naming the file or the batch (docs/training.md, Reliability).

A kill is played in-process by an exception nothing of ours catches (nothing runs after a real SIGKILL either);
the slow test kills a real training process with SIGKILL in the middle of a save."""

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ks_runtime.core.errors import OutputError
from ks_train import checkpoint
from ks_train.config import load_config
from ks_train.data.clips import ClipBatchBuilder
from ks_train.trainer import Trainer, TrainingError
from tests.train.test_trainer import FAST, toy

ROOT = Path(__file__).resolve().parents[2]


class Killed(BaseException):
    """SIGKILL, in-process."""


def trainer(out, *extra, **options):
    return Trainer(
        load_config("synth-cpu", FAST + list(extra)), out, device="cpu", dataset=toy(), progress=False, **options
    )


def scripted_f1(monkeypatch, scores):
    """Trainer.evaluate reports mean F1 scores[epoch], so which epochs write best.pt is known (and no time is spent)."""

    def evaluate(self, sequences=None, policy=None):
        mean = scores[self.epoch]
        return SimpleNamespace(mean=mean, mean_floor=0.3, f1=np.full(len(self.columns), mean))

    monkeypatch.setattr(Trainer, "evaluate", evaluate)


def fail_once_saving(monkeypatch, name, epoch, error):
    """torch.save raises `error` once, half-way through writing `name` of `epoch`."""
    real, failed = torch.save, []

    def save(obj, f, *args, **kwargs):
        if f".{name}.tmp" in str(getattr(f, "name", f)) and obj["epoch"] == epoch and not failed:
            failed.append(name)
            with open(getattr(f, "name", f), "ab") as handle:
                handle.write(b"half a checkpoint")
            raise error
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


def metric_epochs(out):
    return [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def saved(out, name):
    return torch.load(out / name, weights_only=True)


def dead_pid():
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def resume_and_finish(out):
    resumed = trainer(out)
    resumed.resume(out)
    return resumed.fit()


def test_a_kill_while_saving_last_pt_leaves_no_epoch_twice_in_metrics_after_resume(tmp_path, monkeypatch):
    scripted_f1(monkeypatch, [0.2, 0.4])
    fail_once_saving(monkeypatch, "last.pt", epoch=2, error=Killed())
    with pytest.raises(Killed):
        trainer(tmp_path).fit()
    assert saved(tmp_path, "last.pt")["epoch"] == 1
    assert [r["epoch"] for r in resume_and_finish(tmp_path)] == [1, 2]
    assert metric_epochs(tmp_path) == [1, 2]
    assert saved(tmp_path, "best.pt")["metrics"]["mean_f1"] == saved(tmp_path, "last.pt")["best_f1"] == 0.4


def test_a_kill_while_saving_best_pt_never_leaves_last_pt_naming_a_best_not_on_disk(tmp_path, monkeypatch):
    scripted_f1(monkeypatch, [0.2, 0.4])
    fail_once_saving(monkeypatch, "best.pt", epoch=2, error=Killed())
    with pytest.raises(Killed):
        trainer(tmp_path).fit()
    assert saved(tmp_path, "best.pt")["metrics"]["mean_f1"] == saved(tmp_path, "last.pt")["best_f1"] == 0.2
    resume_and_finish(tmp_path)
    assert saved(tmp_path, "best.pt")["metrics"]["mean_f1"] == saved(tmp_path, "last.pt")["best_f1"] == 0.4
    assert metric_epochs(tmp_path) == [1, 2]


def test_a_resume_without_the_best_pt_its_checkpoint_records_writes_it_again(tmp_path, monkeypatch, caplog):
    scripted_f1(monkeypatch, [0.4, 0.2])
    trainer(tmp_path).fit(until_epoch=1)
    (tmp_path / "best.pt").unlink()
    with caplog.at_level("WARNING", logger="ks_train.trainer"):
        resume_and_finish(tmp_path)
    assert "best.pt: missing, though the checkpoint records a best mean F1 of 0.4000" in caplog.text
    assert saved(tmp_path, "best.pt")["metrics"]["mean_f1"] == saved(tmp_path, "last.pt")["best_f1"] == 0.2


def test_temporaries_of_killed_saves_are_removed_at_the_next_start_and_logged(tmp_path, caplog):
    dead, alive = dead_pid(), os.getppid()
    stale = [tmp_path / f".last.pt.tmp{dead}", tmp_path / f".metrics.jsonl.tmp{dead}"]
    kept = [tmp_path / f".best.pt.tmp{alive}", tmp_path / "notes.txt"]  # a live process's save; not ours at all
    for path in stale + kept:
        path.write_bytes(b"half a file")
    with caplog.at_level("WARNING", logger="ks_train.checkpoint"):
        trainer(tmp_path, "train.epochs=1").fit()
    assert not any(path.exists() for path in stale) and all(path.exists() for path in kept)
    assert f".last.pt.tmp{dead}: removed, the temporary of a save that process {dead}" in caplog.text


def test_a_fresh_run_over_an_old_folder_keeps_only_its_own_metrics(tmp_path, caplog):
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3}\n')
    with caplog.at_level("WARNING", logger="ks_train.trainer"):
        trainer(tmp_path, "train.epochs=1").fit()
    assert metric_epochs(tmp_path) == [1] and "dropped 3 line(s)" in caplog.text


def test_a_full_disk_at_a_save_names_the_file_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    scripted_f1(monkeypatch, [0.2, 0.4])
    fail_once_saving(monkeypatch, "best.pt", epoch=2, error=OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    message = (
        r"best.pt: cannot write it \(no space left on device, \d+ MiB free on .*\); the previous best.pt is intact. "
        r"Epoch 2 was trained but is not saved: make room, then continue with --resume "
    )
    with pytest.raises(OutputError, match=message):
        trainer(tmp_path).fit()
    assert checkpoint.load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    assert checkpoint.load_checkpoint(tmp_path / "best.pt")["epoch"] == 1
    assert not list(tmp_path.glob(".*tmp*")) and metric_epochs(tmp_path) == [1]


def test_a_write_error_torch_wraps_still_names_its_cause():
    wrapped = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    wrapped.__context__ = OSError(errno.ENOSPC, "No space left on device")
    assert checkpoint.write_failure(wrapped, Path("/")).startswith("no space left on device, ")
    assert checkpoint.write_failure(RuntimeError("bad"), Path("/")) == "bad"


def test_a_dataloader_worker_that_hangs_is_an_error_after_the_timeout(tmp_path, monkeypatch):
    def build_slowly(self, items, epoch, batch):
        time.sleep(60)

    monkeypatch.setattr(ClipBatchBuilder, "build", build_slowly)  # the worker, forked, builds with it
    run = trainer(tmp_path, "train.workers=1", loader_timeout=1)
    started = time.monotonic()
    with pytest.raises(TrainingError, match=r"epoch 1, batch 0: DataLoader timed out after 1 seconds\. .*workers=0"):
        run.fit()
    assert time.monotonic() - started < 30
    assert not (tmp_path / "last.pt").exists()


def test_a_dataloader_worker_that_dies_is_an_error_naming_the_batch(tmp_path, monkeypatch):
    def build_and_die(self, items, epoch, batch):
        os.kill(os.getpid(), signal.SIGKILL)

    monkeypatch.setattr(ClipBatchBuilder, "build", build_and_die)
    with pytest.raises(TrainingError, match=r"epoch 1, batch 0: DataLoader worker \(pid.*A DataLoader worker died"):
        trainer(tmp_path, "train.workers=1", loader_timeout=60).fit()


def test_a_negative_loader_timeout_is_refused(tmp_path):
    from ks_runtime.core.errors import ConfigError

    with pytest.raises(ConfigError, match="loader timeout -1: must be >= 0 seconds"):
        trainer(tmp_path, loader_timeout=-1)


KILLED_RUN = """
import os, signal, sys, torch
from ks_train.config import load_config
from ks_train.trainer import Trainer
from tests.train.test_trainer import FAST, toy

real = torch.save

def save(obj, f, *args, **kwargs):
    real(obj, f, *args, **kwargs)
    if ".last.pt.tmp" in str(getattr(f, "name", f)) and obj["epoch"] == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # written to its temporary, never renamed

torch.save = save
Trainer(load_config("synth-cpu", FAST), sys.argv[1], device="cpu", dataset=toy(), progress=False).fit()
"""


@pytest.mark.slow
def test_a_run_killed_with_sigkill_in_a_save_resumes_into_a_consistent_folder(tmp_path, caplog):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(KILLED_RUN), str(tmp_path)], cwd=ROOT, env=env)
    assert done.returncode == -signal.SIGKILL
    assert len(list(tmp_path.glob(".last.pt.tmp*"))) == 1 and saved(tmp_path, "last.pt")["epoch"] == 1
    with caplog.at_level("WARNING", logger="ks_train.checkpoint"):
        resume_and_finish(tmp_path)
    assert "the temporary of a save that process" in caplog.text and not list(tmp_path.glob(".*tmp*"))
    assert metric_epochs(tmp_path) == [1, 2]
    best, last = saved(tmp_path, "best.pt"), saved(tmp_path, "last.pt")
    assert last["epoch"] == 2 and best["metrics"]["mean_f1"] == last["best_f1"]
