"""benchmarks/train_sweep.py: the grid's order, the summary of finished and stopped runs, and --tabulate's
means, differences and Welch standard errors (no training is run)."""

import argparse
import json
import statistics
from pathlib import Path

from benchmarks.train_sweep import Run, summarise, tabulate


def _summary(path, runs, setting=()):
    path.write_text(json.dumps({"set": list(setting), "runs": runs}))
    return path


def _run(method, seed, f1, finished=True):
    return {
        "name": f"{method}-0.1-s{seed}",
        "method": method,
        "labels": 0.1,
        "seed": seed,
        "finished": finished,
        "evals": [{"epoch": 8, "mean_f1": f1}],
    }


def test_tabulate_differences_and_standard_errors(tmp_path):
    ref = [0.50, 0.52, 0.48]
    other = [0.55, 0.53, 0.57, 0.60]
    a = _summary(
        tmp_path / "a.json", [_run("ks", s, 0.1) for s in range(2)] + [_run("frame", s, f) for s, f in enumerate(ref)]
    )
    b = _summary(
        tmp_path / "b.json",
        [_run("ks", s, f) for s, f in enumerate(other)] + [_run("ks", 9, 0.9, False)],
        ["model.clip_stride=10"],
    )
    rows = tabulate([f"{a}:frame", b]).splitlines()[2:]
    assert len(rows) == 2 and rows[0].startswith("| frame, defaults | 0.1 | 3 | 0.500 | 0.020 | +0.000 |")
    diff = statistics.mean(other) - statistics.mean(ref)
    se = (statistics.stdev(other) ** 2 / 4 + statistics.stdev(ref) ** 2 / 3) ** 0.5
    # the unfinished run (0.9) is left out of the mean
    assert rows[1] == (
        f"| ks, model.clip_stride=10 | 0.1 | 4 | {statistics.mean(other):.3f} | "
        f"{statistics.stdev(other):.3f} | {diff:+.3f} | {se:.3f} |"
    )


def test_summary_marks_unfinished_and_failed_runs(tmp_path):
    args = argparse.Namespace(config="demo", device="cpu", jobs=2, threads=1, set=[], methods=["ks"], labels=[0.1])
    done, stopped, failed = (Run("ks", 0.1, s, tmp_path / f"ks-0.1-s{s}") for s in range(3))
    for run, records in ((done, [0.4, 0.45]), (stopped, [0.3]), (failed, [])):
        run.out.mkdir()
        lines = [json.dumps({"epoch": 2 * (i + 1), "mean_f1": f}) for i, f in enumerate(records)]
        (run.out / "metrics.jsonl").write_text("\n".join([json.dumps({"epoch": 1, "loss": 1.0}), *lines]) + "\n")
    done.process = type("P", (), {"returncode": 0})()
    stopped.process, stopped.stopped = type("P", (), {"returncode": -15})(), True
    failed.process = type("P", (), {"returncode": 1})()
    table, data = summarise([done, stopped, failed], args)
    row = table.splitlines()[2]
    assert "| 1/3 | 0.450 / (0.300 at epoch 2, unfinished) / failed (ks-0.1-s2.log) | 0.450 | - |" in row
    assert [r["finished"] for r in data["runs"]] == [True, False, False]


def test_runs_carry_the_seed_and_settings():
    args = argparse.Namespace(config="demo", device="cuda", set=["model.clip_stride=10"])
    cmd = Run("frame", 0.02, 3, Path("out")).command(args)
    assert cmd[cmd.index("--labels") + 1] == "0.02" and "train.seed=3" in cmd and "model.clip_stride=10" in cmd
    assert cmd[cmd.index("--method") + 1] == "frame" and cmd[cmd.index("--device") + 1] == "cuda"


def test_tabulate_a_reference_cut_short_gives_no_difference(tmp_path):
    a = _summary(tmp_path / "a.json", [_run("frame", 0, 0.5), _run("frame", 1, 0.4, False)])
    b = _summary(tmp_path / "b.json", [_run("ks", s, f) for s, f in enumerate([0.5, 0.6])])
    rows = tabulate([a, b]).splitlines()[2:]
    assert rows == [
        "| frame, defaults | 0.1 | 1 | 0.500 | - | - | - |",
        "| ks, defaults | 0.1 | 2 | 0.550 | 0.071 | - | - |",
    ]
