"""benchmarks/spread_table.py: finished runs only, means with standard errors, Welch differences, cached
branch scores."""

import json

import pytest

from benchmarks import spread_table


def fake_run(root, name, f1, epochs=8, last_epoch=8, method="ks", branches=None):
    path = root / name
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"method": method, "train": {"epochs": epochs}}))
    records = [{"epoch": e, "mean_f1": f1 - 0.01 * (last_epoch - e), "pl_acc_all": 0.7} for e in (2, last_epoch)]
    (path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    if branches:
        (path / "branches.json").write_text(json.dumps(branches))
    return path


def test_groups_take_finished_runs_and_give_means_standard_errors_and_differences(tmp_path, capsys):
    for seed, f1 in enumerate([0.50, 0.52]):
        fake_run(tmp_path, f"frame-s{seed}", f1, method="frame")
    for seed, f1 in enumerate([0.40, 0.44, 0.42]):
        fake_run(tmp_path, f"ks-s{seed}", f1, branches={"sa": f1 + 0.01, "tt": f1 - 0.01})
    fake_run(tmp_path, "ks-s9", 0.99, last_epoch=4)  # still training: left out
    args = ["--branches", "--group", f"frame={tmp_path}/frame-s*", "--group", f"ks={tmp_path}/ks-s*"]
    assert spread_table.main(args) == 0
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in capsys.readouterr().out.splitlines()}
    assert rows["frame"][1:3] == ["2", "0.510 ± 0.010"]
    assert rows["ks"][1:6] == ["3", "0.420 ± 0.012", "-0.090 ± 0.015", "0.430 ± 0.012", "0.410 ± 0.012"]
    assert rows["ks"][7] == "0.700 ± 0.000"


def test_a_group_with_no_finished_run_is_refused_by_name(tmp_path):
    fake_run(tmp_path, "ks-s0", 0.4, last_epoch=2)
    with pytest.raises(SystemExit, match="group 'ks'"):
        spread_table.main(["--group", f"ks={tmp_path}/ks-*"])
    with pytest.raises(SystemExit, match="NAME=GLOB"):
        spread_table.main(["--group", "no-equals-sign"])
