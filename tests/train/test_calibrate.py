"""`ks-train calibrate`: a run trains the frame model and appends one JSONL record per setting."""

import json

from ks_train.cli import main
from ks_train.commands.calibrate import SETTINGS, probe_subjects, table_rows


def test_probe_subjects_are_training_subjects_spread_over_the_split():
    train = [f"S{i:02d}" for i in range(11, 29)]
    assert probe_subjects(train + train) == {"S11", "S20", "S28"}


def test_a_calibration_run_appends_its_record(tmp_path):
    out = tmp_path / "calibration.jsonl"
    quick = ["--set", "data.image_size=64", "--set", "train.batches_per_epoch=4"]
    assert main(["calibrate", "easy", "--epochs", "1", "--size", "tiny", *quick, "--out", str(out)]) == 0
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["setting"] == "easy" and record["overrides"] == SETTINGS["easy"] + quick[1::2]
    assert record["size"] == "tiny" and "--size tiny --set data.image_size=64" in record["command"]
    (epoch,) = record["epochs"]
    assert 0.0 <= epoch["test_f1"] <= 1.0 and 0.0 < epoch["floor"] < 1.0
    assert record["best_test_f1"] == epoch["test_f1"]
    assert main(["calibrate", "--table", "--out", str(out)]) == 0
    (row,) = table_rows([record])
    assert row.startswith("| `easy` (") and f"{epoch['test_f1']:.3f}" in row and record["command"] in row
