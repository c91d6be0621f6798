"""`ks-run run` and `ks-run report` on the session's small bundle give what the spellings from before the
subcommands give (`ks-run BUNDLE --input ...`, `ks-run BUNDLE --policy-report ...`); -q prints no summary."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ks_runtime.cli import main
from ks_runtime.io.table import read_results_csv

SPEC = "synthau:tiny:S02:T1"
TIMING = ("seconds", "fps", "latency_ms")  # the clock's, different on every run


def json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def report_json(out: str) -> dict:
    """The JSON `report --json` prints (indented) after the Markdown table."""
    return json.loads(out[out.index("\n{") + 1 :])


def without_timing(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in TIMING and k not in ("csv", "plot", "overlay")}


@pytest.mark.parametrize(
    "spelling",
    [
        ["run", "{bundle}", "--input", SPEC],
        ["run", "--bundle", "{bundle}", "-i", SPEC],
        ["-v", "run", "{bundle}", "--input", SPEC],
    ],
)
def test_run_gives_what_the_old_spelling_gives(bundle, tmp_path, capsys, spelling):
    common = ["--policy", "center", "--batch-size", "3", "--no-progress", "--json"]
    assert main([str(bundle), "--input", SPEC, *common, "--csv", str(tmp_path / "old.csv")]) == 0
    old = json_lines(capsys.readouterr().out)
    argv = [str(bundle) if arg == "{bundle}" else arg for arg in spelling]
    assert main([*argv, *common, "--csv", str(tmp_path / "new.csv")]) == 0
    new = json_lines(capsys.readouterr().out)
    assert len(old) == len(new) == 1 and without_timing(old[0]) == without_timing(new[0])
    assert old[0]["frames"] > 0 and old[0]["mean_f1"] is not None
    pd.testing.assert_frame_equal(read_results_csv(tmp_path / "old.csv"), read_results_csv(tmp_path / "new.csv"))


def test_quiet_prints_no_summary_and_still_writes_the_csv(bundle, tmp_path, capsys):
    assert main(["-q", "run", str(bundle), "--input", SPEC, "--csv", str(tmp_path / "q.csv")]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert len(read_results_csv(tmp_path / "q.csv")) > 0
    assert main([str(bundle), "--input", SPEC, "--csv", str(tmp_path / "q.csv"), "-q"]) == 0  # the old place
    assert capsys.readouterr().out == ""
    assert main([str(bundle), "--input", SPEC, "--csv", str(tmp_path / "q.csv"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"{SPEC}: " in out and "fps" in out


def test_report_gives_what_policy_report_gives(bundle, tmp_path, capsys):
    quick = ["--input", SPEC, "--no-progress", "--json"]
    assert (
        main(
            [
                str(bundle),
                "--policy-report",
                *quick,
                "--report-latency-frames",
                "8",
                "--report-sequences",
                "1",
                "--report-out",
                str(tmp_path / "old.md"),
            ]
        )
        == 0
    )
    old = report_json(capsys.readouterr().out)
    assert (
        main(
            [
                "report",
                str(bundle),
                *quick,
                "--latency-frames",
                "8",
                "--sequences",
                "1",
                "--out",
                str(tmp_path / "new.md"),
            ]
        )
        == 0
    )
    new = report_json(capsys.readouterr().out)
    f1 = {row["policy"]: row["mean_f1"] for row in old["rows"]}
    assert f1 == {row["policy"]: row["mean_f1"] for row in new["rows"]}
    assert set(f1) == {"last", "center", "shift", "ensemble"}
    assert {k: v for k, v in old.items() if k != "rows"} == {k: v for k, v in new.items() if k != "rows"}
    for name in ("old.md", "new.md"):
        assert "| ensemble | 2 frames" in (tmp_path / name).read_text()


def test_report_refuses_run_only_flags_and_run_refuses_report_flags(bundle, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["report", str(bundle), "--csv", "x.csv"])
    assert exit_.value.code == 2 and "unrecognized arguments: --csv" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(bundle), "--input", SPEC, "--sequences", "1"])
    assert exit_.value.code == 2 and "unrecognized arguments: --sequences 1" in capsys.readouterr().err


def test_a_usage_error_names_the_subcommand(bundle, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(bundle), "--bundle", str(bundle), "--input", SPEC])
    assert exit_.value.code == 2 and "ks-run run: error: give the bundle once" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["report"])
    assert exit_.value.code == 2 and "ks-run report: error: a model bundle is required" in capsys.readouterr().err
