"""`data.feeding` (paper | strided) picks how clips are cut, mapped onto model.clip_stride; a contradiction between
the two is refused, and model.clip_stride alone keeps working."""

import json

import pytest

from ks_runtime.core.errors import ConfigError
from ks_train import checkpoint
from ks_train.config import FEEDING_STRIDES, SYNTH_CPU_FEEDING, DataConfig, ExperimentConfig, load_config
from ks_train.model.ks import KSConfig
from ks_train.trainer import Trainer
from tests.train.test_trainer import toy

FAST = [
    "data.image_size=32",
    "data.every_k=3",
    "train.epochs=1",
    "train.batches_per_epoch=2",
    "train.workers=0",
    "train.batch_size=2",
    "train.unlabelled_per_batch=1",
    "train.warmup_fraction=0.0",
]


def test_profiles_keep_their_feeding():
    assert SYNTH_CPU_FEEDING == "paper" and FEEDING_STRIDES == {"paper": 1, "strided": 0}
    for profile, stride in (("synth-cpu", 1), ("demo", 1), ("paper-r50", 1)):
        cfg = load_config(profile)
        assert (cfg.model.clip_stride, cfg.data.feeding) == (stride, ""), profile


@pytest.mark.parametrize(
    "profile, feeding, stride",
    [("synth-cpu", "paper", 1), ("demo", "strided", 0), ("paper-r50", "strided", 0), ("paper-r50", "paper", 1)],
)
def test_a_feeding_sets_the_clip_stride(profile, feeding, stride):
    cfg = load_config(profile, [f"data.feeding={feeding}"])
    assert (cfg.data.feeding, cfg.model.clip_stride) == (feeding, stride)
    both = load_config(profile, [f"data.feeding={feeding}", f"model.clip_stride={stride}"])  # agreeing: fine
    assert both.model.clip_stride == stride


def test_clip_stride_alone_keeps_working_and_replaces_a_files_feeding(tmp_path):
    assert load_config("synth-cpu", ["model.clip_stride=1"]).model.clip_stride == 1
    assert load_config("paper-r50", ["model.clip_stride=4"]).model.clip_stride == 4
    path = tmp_path / "paper.json"
    path.write_text(json.dumps(load_config("synth-cpu", ["data.feeding=paper"]).to_dict()))
    assert load_config(str(path)).model.clip_stride == 1
    cfg = load_config(str(path), ["model.clip_stride=0"])
    assert (cfg.data.feeding, cfg.model.clip_stride) == ("", 0)


def test_a_contradiction_is_refused_naming_both_fields(tmp_path):
    with pytest.raises(ConfigError, match=r"data.feeding='paper' means model.clip_stride=1 \(adjacent frames\), "):
        load_config("synth-cpu", ["data.feeding=paper", "model.clip_stride=0"])
    with pytest.raises(ConfigError, match=r"means model.clip_stride=0 \(the label spacing, k = 10 here\), but "):
        load_config("paper-r50", ["data.feeding=strided", "model.clip_stride=1", "data.label_ratio=0.1"])
    with pytest.raises(ConfigError, match="model.clip_stride is 3: set one of the two, or both alike"):
        ExperimentConfig(data=DataConfig(feeding="strided", every_k=4), model=KSConfig(clip_stride=3))
    data = load_config("synth-cpu", ["data.feeding=paper"]).to_dict()
    data["model"]["clip_stride"] = 2
    path = tmp_path / "contradiction.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="data.feeding='paper'"):
        load_config(str(path))


def test_an_unknown_feeding_is_refused():
    with pytest.raises(ConfigError, match=r"data.feeding must be one of \('paper', 'strided'\)"):
        load_config("synth-cpu", ["data.feeding=adjacent"])


def test_strided_feeding_resolves_to_the_label_spacing_and_is_saved(tmp_path):
    # k is 3: the trainer resolves clip_stride 0 to 3, which strided feeding accepts, and so does a resumed run.
    assert ExperimentConfig(data=DataConfig(feeding="strided", every_k=3), model=KSConfig(clip_stride=3))
    cfg = load_config("paper-r50", FAST + ["model.backbone=tiny", "data.feeding=strided"])
    trainer = Trainer(cfg, tmp_path, device="cpu", dataset=toy(), progress=False)
    assert trainer.cfg.model.clip_stride == trainer.method.clip_stride == 3
    trainer.fit()
    saved = checkpoint.load_checkpoint(tmp_path / "last.pt")["config"]
    assert (saved["data"]["feeding"], saved["model"]["clip_stride"]) == ("strided", 3)
    assert ExperimentConfig.from_dict(saved).model.clip_stride == 3
