"""`make demo` (ks_export.demo): the machine and plan lines first, the plan's schedule under the user's --set, the
failure when L_PL never runs, and (slow) the whole demo on SynthAU `tiny`."""

import pytest

from ks_export import demo
from ks_train.machine import SHORT

# SynthAU `tiny` at 64 px, two short epochs: seconds, not minutes. They come after the plan's schedule.
TINY = [
    "data.synth_size=tiny",
    "data.image_size=64",
    "train.workers=0",
    "train.batches_per_epoch=2",
    "train.epochs=2",
    "train.eval_every=1",
    "train.batch_size=4",
    "train.unlabelled_per_batch=2",
]


def sets(*overrides: str) -> list[str]:
    return [arg for o in overrides for arg in ("--set", o)]


def test_the_plan_comes_from_the_environment_or_the_flag(monkeypatch):
    monkeypatch.delenv("KS_DEMO_PLAN", raising=False)
    assert demo.parse_args([]).plan == "auto"
    monkeypatch.setenv("KS_DEMO_PLAN", "fp32")
    assert demo.parse_args([]).plan == "fp32"
    assert demo.parse_args(["--plan", "bf16"]).plan == "bf16"


def test_the_machine_and_the_plan_are_printed_first(capsys):
    plan = demo.machine_plan("fp32")
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "== Machine" and out[1].startswith("this CPU: ")
    assert out[2].startswith("plan: KS_DEMO_PLAN=fp32 (whatever the flags): fp32 training; demo schedule 'demo-fp32'")
    assert "expected ~" in out[2] and "torch thread" in out[2]
    assert plan.schedule == SHORT and "train.amp=false" in plan.overrides()


def test_epoch_rows_with_and_without_an_evaluation():
    row = demo.epoch_row(
        {
            "epoch": 3,
            "loss": 1.23456,
            "L_PL": 0.25,
            "ppl_accept_rate": 0.8,
            "pl_acc_accepted": 0.7,
            "pl_acc_all": 0.65,
            "mean_f1": 0.4567,
        }
    )
    assert row == (
        "epoch  3: loss 1.235  L_PL 0.250  gate accepts 80.0%  pseudo labels right: accepted 0.700 all 0.650  "
        "test F1 0.457"
    )
    assert demo.epoch_row({"epoch": 1, "loss": 2.0}).endswith("accepted nan all nan  test F1   -  ")


def test_a_schedule_without_pseudo_labels_fails_before_the_export(tmp_path, capsys):
    code = demo.main(
        ["--out", str(tmp_path), "--plan", "fp32", *sets(*TINY, "train.epochs=1", "train.warmup_fraction=1.0")]
    )
    assert code == 1
    assert "L_PL never ran" in capsys.readouterr().err
    assert not (tmp_path / "bundle").exists()


@pytest.mark.slow
def test_the_whole_demo_on_tiny(tmp_path, capsys):
    assert demo.main(["--out", str(tmp_path), "--plan", "fp32", *sets(*TINY, "train.warmup_fraction=0.5")]) == 0
    out = capsys.readouterr().out
    assert "schedule demo-fp32" in out and "2 epochs of 2 steps" in out and "fp32)" in out
    assert "mean F1" in out and "whole demo" in out
    assert (tmp_path / "bundle" / "manifest.json").is_file() and (tmp_path / "ks" / "last.pt").is_file()
