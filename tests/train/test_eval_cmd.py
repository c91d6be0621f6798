"""`ks-train eval`: dense testing of a saved run, with the fusion rule overridable."""

import json

from ks_train.cli import main


def test_eval_scores_each_branch_and_reports_the_fusion(tmp_path, capsys):
    run = tmp_path / "run"
    quick = [
        "--set",
        "data.image_size=32",
        "--set",
        "train.batches_per_epoch=2",
        "--set",
        "train.batch_size=4",
        "--set",
        'data.synth_size="tiny"',
        "--set",
        "train.workers=0",
    ]
    assert main(["fit", "--config", "synth-cpu", "--epochs", "1", "--no-progress", *quick, "--out", str(run)]) == 0
    capsys.readouterr()
    results = {}
    for fusion in ("sa", "tt", "mean"):
        assert main(["eval", "--ckpt", str(run), "--fusion", fusion, "--no-pseudo", "--json"]) == 0
        results[fusion] = json.loads(capsys.readouterr().out)
    assert {r["fusion"] for r in results.values()} == {"sa", "tt", "mean"}
    assert all(0.0 <= r["mean_f1"] <= 1.0 for r in results.values())
    # Each branch scores its own probabilities, so an untrained S_a and TT do not agree on every AU.
    assert results["sa"]["per_au"] != results["tt"]["per_au"]
