"""Every numeric config field has a range, checked when the config is read: a bad value is a ConfigError naming
`section.field`, the value and the range, raised before anything is written."""

import math

import pytest

from ks_runtime.core.errors import ConfigError
from ks_train import config, configio
from ks_train.config import ExperimentConfig, load_config
from ks_train.model import ks
from ks_train.trainer import Trainer
from tests.train.test_trainer import FAST, toy


def test_every_numeric_field_has_exactly_one_range():
    ranges = {**config.RANGES, **{f"model.{name}": allowed for name, allowed in ks.RANGES.items()}}
    assert sorted(ranges) == sorted(configio.numeric_fields(ExperimentConfig))
    for profile in ("synth-cpu", "paper-r50", "demo"):
        configio.check_ranges(load_config(profile), ranges)  # every default lies in its range


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lr=-1", r"train.lr=-1.0 is out of range; allowed: \(0, inf\)"),
        ("train.lr=0", r"train.lr=0.0 is out of range; allowed: \(0, inf\)"),
        ("train.lr=NaN", r"train.lr=nan is out of range"),
        ("train.lr=Infinity", r"train.lr=inf is out of range"),
        ("train.batch_size=0", r"train.batch_size=0 is out of range; allowed: \[1, inf\)"),
        ("train.epochs=-3", r"train.epochs=-3 is out of range; allowed: \[1, inf\)"),
        ("train.batches_per_epoch=-1", r"train.batches_per_epoch=-1 .*\[0, inf\) \(0: one pass over the labelled"),
        ("train.eval_every=0", r"train.eval_every=0 is out of range"),
        ("train.warmup_fraction=1.5", r"train.warmup_fraction=1.5 is out of range; allowed: \[0, 1\]"),
        ("train.augment.flip_p=2", r"train.augment.flip_p=2.0 is out of range; allowed: \[0, 1\]"),
        ("train.seed=-1", r"train.seed=-1 is out of range"),
        ("data.label_ratio=0", r"data.label_ratio=0.0 is out of range; allowed: \(0, 1\]"),
        ("data.fold=0", r"data.fold=0 is out of range; allowed: \[1, inf\)"),
        ("data.image_size=4", r"data.image_size=4 is out of range; allowed: \[8, inf\)"),
        ("data.synth_nuisance.jpeg_prob=-0.1", r"data.synth_nuisance.jpeg_prob=-0.1 is out of range"),
        ("loss.l_pl=-1", r"loss.l_pl=-1.0 is out of range; allowed: \[0, inf\)"),
        ("loss.gate_clips=1", r"loss.gate_clips=1 is out of range; allowed: \[2, inf\)"),
        ("model.clip_stride=-1", r"model.clip_stride=-1 is out of range; allowed: \[0, inf\) \(0: the label spacing"),
        ("model.dropout=1", r"model.dropout=1.0 is out of range; allowed: \[0, 1\)"),
        ("model.sa_heads=0", r"model.sa_heads=0 is out of range"),
        ("std=[0.2, 0, 0.2]", r"std\[1\]=0.0 is out of range; allowed: \(0, inf\)"),
    ],
)
def test_a_value_out_of_range_names_the_field_the_value_and_the_range(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("synth-cpu", [override])


def test_mean_and_std_need_three_values():
    with pytest.raises(ConfigError, match="mean and std need three values each"):
        load_config("synth-cpu", ["mean=[0.5]"])


def test_ranges_read_intervals_with_open_and_closed_ends():
    assert 0 in configio.Range("[0, 1)") and 1 not in configio.Range("[0, 1)")
    assert 0 not in configio.Range("(0, 1]") and 1 in configio.Range("(0, 1]")
    assert 10**9 in configio.Range("[1, inf)") and math.inf not in configio.Range("[1, inf)")
    assert math.nan not in configio.Range("[0, inf)")
    assert str(configio.Range("[0, inf)", "0: off")) == "[0, inf) (0: off)"


def test_a_fold_the_dataset_does_not_have_names_the_dataset_before_training(tmp_path):
    cfg = load_config("synth-cpu", FAST + ["data.fold=7"])
    with pytest.raises(ConfigError, match=r"data.fold=7: dataset toy has 3 folds \(1..3\)"):
        Trainer(cfg, tmp_path / "run", device="cpu", dataset=toy(), progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("until", [0, -1])
def test_until_epoch_below_one_is_refused(tmp_path, until):
    trainer = Trainer(load_config("synth-cpu", FAST), tmp_path / "run", device="cpu", dataset=toy(), progress=False)
    with pytest.raises(ConfigError, match=f"until_epoch={until}: must be >= 1"):
        trainer.fit(until_epoch=until)
    assert not (tmp_path / "run").exists()


def test_fit_passes_epochs_zero_on_to_the_range_check():
    import argparse

    from ks_train.commands.fit import overrides_from_args, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["fit", "--epochs", "0", "--out", "x"])
    with pytest.raises(ConfigError, match=r"train.epochs=0 is out of range"):
        load_config("synth-cpu", overrides_from_args(args))
