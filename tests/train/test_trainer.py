"""The training engine on a toy in-memory dataset: resume, checkpoints, NaN stops, evaluation."""

import json

import numpy as np
import pytest
import torch

from ks_export.graphs import load_ks_checkpoint
from ks_runtime.core.au import BP4D, DISFA
from ks_runtime.core.errors import CheckpointError, ConfigError
from ks_train import checkpoint
from ks_train.config import load_config
from ks_train.data.base import AUDataset, VideoSequence
from ks_train.trainer import Trainer, TrainingError, mixed_precision_dtype

FAST = [
    "data.image_size=32",
    "data.every_k=3",
    "train.epochs=2",
    "train.batches_per_epoch=3",
    "train.workers=0",
    "train.batch_size=2",
    "train.unlabelled_per_batch=1",
    "train.warmup_fraction=0.5",
]


def toy(au_set=BP4D, seed=0) -> AUDataset:
    rng = np.random.default_rng(seed)
    u = len(au_set)
    sequences = [
        VideoSequence(
            f"S{s}",
            "T1",
            rng.integers(0, 2, (24, u)).astype(np.int8),
            np.arange(24),
            frames=rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8),
        )
        for s in range(3)
    ]
    return AUDataset("toy", au_set, sequences, [["S0"], ["S1"], ["S2"]])


def weights(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_resume_continues_exactly(tmp_path):
    cfg = load_config("synth-cpu", FAST)
    straight = Trainer(cfg, tmp_path / "straight", device="cpu", dataset=toy(), progress=False)
    straight.fit()
    first = Trainer(cfg, tmp_path / "split", device="cpu", dataset=toy(), progress=False)
    first.fit(until_epoch=1)
    resumed = Trainer(cfg, tmp_path / "split", device="cpu", dataset=toy(), progress=False)
    resumed.resume(tmp_path / "split")
    history = resumed.fit()
    assert [r["epoch"] for r in history] == [1, 2]
    assert history[1]["semi_supervised"] and "L_PL" in history[1]
    a, b = weights(straight), weights(resumed)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    lines = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert {"L_A", "L_T", "L_SKD", "L_self", "ppl_accept_rate", "pl_acc_accepted", "mean_f1"} <= set(
        json.loads(lines[1])
    )


def test_checkpoints_load_with_weights_only_and_reject_mismatches(tmp_path):
    cfg = load_config("synth-cpu", FAST + ["train.epochs=1"])
    Trainer(cfg, tmp_path / "run", device="cpu", dataset=toy(), progress=False).fit()
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["au_columns"] == BP4D.columns and state["preprocess"]["size"] == 32
    assert (tmp_path / "run" / "best.pt").exists()
    assert not list((tmp_path / "run").glob(".*tmp*"))  # atomic: no temporary left behind

    other = Trainer(
        load_config("synth-cpu", FAST + ["model.sa_depth=1"]),
        tmp_path / "other",
        device="cpu",
        dataset=toy(),
        progress=False,
    )
    with pytest.raises(CheckpointError, match="another config.*model.sa_depth"):
        other.resume(tmp_path / "run")
    with pytest.raises(CheckpointError, match="trained on AUs .*AU23.* but the data has"):
        checkpoint.check_au_columns(checkpoint.load_checkpoint(tmp_path / "run"), DISFA.columns)
    narrow = Trainer(
        load_config("synth-cpu", FAST), tmp_path / "narrow", device="cpu", dataset=toy(DISFA), progress=False
    )
    with pytest.raises(CheckpointError, match="another config.*model.n_aus"):
        narrow.resume(tmp_path / "run")

    data = (tmp_path / "run" / "last.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        checkpoint.load_checkpoint(tmp_path / "truncated.pt")
    torch.save({"hello": 1}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a Knowledge-Spreader checkpoint"):
        checkpoint.load_checkpoint(tmp_path / "foreign.pt")


def test_a_nan_loss_stops_with_the_step_batch_and_term(tmp_path):
    cfg = load_config("synth-cpu", FAST)
    trainer = Trainer(cfg, tmp_path / "nan", device="cpu", dataset=toy(), progress=False)
    with torch.no_grad():
        trainer.model.spatial_teacher.classifier.bias.fill_(float("nan"))
    with pytest.raises(TrainingError, match=r"loss term \w+ is nan at epoch 1, batch 0"):
        trainer.fit()
    assert not (tmp_path / "nan" / "last.pt").exists()


def test_the_frame_baseline_trains_and_evaluates(tmp_path):
    cfg = load_config("synth-cpu", FAST + ['method="frame"', "train.epochs=1"])
    trainer = Trainer(cfg, tmp_path / "frame", device="cpu", dataset=toy(), progress=False)
    history = trainer.fit()
    assert "L_A" in history[0] and "L_PL" not in history[0] and 0 <= history[0]["mean_f1"] <= 1


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="train.epochs: expected an integer"):
        load_config("synth-cpu", ['train.epochs="ten"'])
    with pytest.raises(ConfigError, match="unknown field 'model.heads'"):
        load_config("synth-cpu", ["model.heads=4"])
    with pytest.raises(ConfigError, match="loss.positive_weighting must be one of"):
        load_config("synth-cpu", ['loss.positive_weighting="double"'])
    with pytest.raises(ConfigError, match="method must be one of"):
        load_config("synth-cpu", ['method="fixmatch"'])
    with pytest.raises(ConfigError, match=r"model.clip_stride=-1 is out of range; allowed: \[0, inf\) \(0: the label"):
        load_config("synth-cpu", ["model.clip_stride=-1"])
    with pytest.raises(ConfigError, match="no profile or config file"):
        load_config("nope")


@pytest.mark.parametrize("stride, every, want", [(0, 3, 3), (0, 1, 1), (2, 3, 2)])
def test_clip_stride_zero_means_the_label_spacing(tmp_path, stride, every, want):
    cfg = load_config("synth-cpu", FAST + [f"model.clip_stride={stride}", f"data.every_k={every}", "train.epochs=1"])
    trainer = Trainer(cfg, tmp_path, device="cpu", dataset=toy(), progress=False)
    assert trainer.cfg.model.clip_stride == want and trainer.method.clip_stride == want
    trainer.fit()
    saved = checkpoint.load_checkpoint(tmp_path / "last.pt")
    assert saved["config"]["model"]["clip_stride"] == want  # export and eval read the stride trained with


def test_a_clip_longer_than_every_video_is_warned_about(tmp_path, caplog):
    cfg = load_config("synth-cpu", FAST + ["model.clip_stride=0", "data.every_k=8"])  # reach 33 > 24 frames
    with caplog.at_level("WARNING", logger="ks_train.trainer"):
        Trainer(cfg, tmp_path, device="cpu", dataset=toy(), progress=False)
    assert "a clip reaches over 33 frames (n = 5, stride 8) but the longest training video has 24" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="ks_train.trainer"):
        Trainer(load_config("synth-cpu", FAST), tmp_path, device="cpu", dataset=toy(), progress=False)
    assert "a clip reaches" not in caplog.text


def test_mixed_precision_follows_the_device(monkeypatch):
    from ks_train import trainer as trainer_module

    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False, raising=False)
    assert trainer_module.mixed_precision_dtype(torch.device("cpu")) is None  # emulated bf16 is slower
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert trainer_module.mixed_precision_dtype(torch.device("cpu")) == torch.bfloat16


@pytest.mark.skipif(
    mixed_precision_dtype(torch.device("cpu")) is None,
    reason="this CPU has no native bf16 (AVX512-BF16 or AMX), so training stays in fp32",
)
def test_bf16_training_on_the_cpu_keeps_fp32_weights_and_finite_losses(tmp_path):
    trainer = Trainer(load_config("synth-cpu", FAST), tmp_path, device="cpu", dataset=toy(), progress=False)
    assert trainer.amp_dtype == torch.bfloat16
    before = weights(trainer)
    record = trainer.train_epoch()
    assert all(np.isfinite(v) for k, v in record.items() if k.startswith("L_"))
    after = weights(trainer)
    assert all(v.dtype == before[k].dtype for k, v in after.items())
    assert any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())
    off = Trainer(
        load_config("synth-cpu", FAST + ["train.amp=false"]),
        tmp_path / "off",
        device="cpu",
        dataset=toy(),
        progress=False,
    )
    assert off.amp_dtype is None


def test_the_sequence_gate_learns_from_the_kept_labels_prior_and_its_checkpoint_loads(tmp_path):
    cfg = load_config("synth-cpu", FAST + ['loss.gate="sequence"', 'data.feeding="paper"'])
    trainer = Trainer(cfg, tmp_path / "seq", device="cpu", dataset=toy(), progress=False)
    assert trainer.method.label_prior is not None and len(trainer.method.label_prior.base_rate) == len(BP4D)
    before = {k: v.clone() for k, v in trainer.model.label_gate.state_dict().items()}
    history = trainer.fit()
    assert "L_PL" in history[1] and 0 <= history[1]["ppl_accept_rate"] <= 1 and np.isfinite(history[1]["L_self"])
    after = trainer.model.label_gate.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # L_self reaches the gate
    assert load_ks_checkpoint(tmp_path / "seq").model.label_gate is not None


def test_the_sequence_gate_without_a_label_prior_says_what_is_missing(tmp_path):
    cfg = load_config("synth-cpu", FAST + ['loss.gate="sequence"', 'data.feeding="paper"'])
    trainer = Trainer(cfg, tmp_path / "seq", device="cpu", dataset=toy(), progress=False)
    trainer.method.label_prior = None
    with pytest.raises(RuntimeError, match="label prior"):
        trainer.fit()
