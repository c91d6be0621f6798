"""`ks-train eval`: dense testing of a saved run, with the fusion rule overridable, and the pseudo-label analysis."""

import json

import pytest

from ks_train.cli import main

QUICK = [
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


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A one-epoch synth-cpu run: strided feeding (clip_stride resolved to the label spacing, 10)."""
    out = tmp_path_factory.mktemp("eval") / "run"
    strided = ["--set", 'data.feeding="strided"']
    assert (
        main(["fit", "--config", "synth-cpu", "--epochs", "1", "--no-progress", *QUICK, *strided, "--out", str(out)])
        == 0
    )
    return out


def test_eval_scores_each_branch_and_reports_the_fusion(run, capsys):
    capsys.readouterr()
    results = {}
    for fusion in ("sa", "tt", "mean"):
        assert main(["eval", "--ckpt", str(run), "--fusion", fusion, "--no-pseudo", "--json"]) == 0
        results[fusion] = json.loads(capsys.readouterr().out)
    assert {r["fusion"] for r in results.values()} == {"sa", "tt", "mean"}
    assert all(0.0 <= r["mean_f1"] <= 1.0 for r in results.values())
    # Each branch scores its own probabilities, so an untrained S_a and TT do not agree on every AU.
    assert results["sa"]["per_au"] != results["tt"]["per_au"]


def test_the_pseudo_label_analysis_of_a_strided_run_scores_clips_between_labels(run, capsys):
    capsys.readouterr()
    assert main(["eval", "--ckpt", str(run), "--json"]) == 0
    analysis = json.loads(capsys.readouterr().out)["pseudo_labels"]
    assert analysis["keys"] == "frames between labels"
    assert analysis["clips"] > 0 and analysis["labels_scored"] > 0  # around labelled keys it would have none
    assert 0 <= analysis["accuracy_naive"] <= 1 and 0 <= analysis["accepted_fraction"] <= 1
    assert main(["eval", "--ckpt", str(run)]) == 0
    assert f"({analysis['clips']} clips keyed on frames between labels, " in capsys.readouterr().out


def test_a_paper_fed_run_with_the_sequence_gate_is_analysed_around_its_labelled_keys(tmp_path, capsys):
    out = tmp_path / "run"
    gate = ["--set", 'loss.gate="sequence"']
    assert (
        main(["fit", "--config", "synth-cpu", "--epochs", "1", "--no-progress", *QUICK, *gate, "--out", str(out)]) == 0
    )
    capsys.readouterr()
    assert main(["eval", "--ckpt", str(out), "--json"]) == 0
    analysis = json.loads(capsys.readouterr().out)["pseudo_labels"]
    assert analysis["keys"] == "labelled frames" and analysis["clips"] > 0
    assert 0 <= analysis["accepted_fraction"] <= 1 and 0 <= analysis["accuracy_naive"] <= 1
