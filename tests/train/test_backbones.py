"""Tests for ks_train/model/backbones.py: registry, shapes, torchvision layout, and checkpoint loading."""

from pathlib import Path

import pytest
import torch

from ks_runtime.core.errors import CheckpointError, ConfigError
from ks_train.model.backbones import (
    BACKBONES,
    Backbone,
    create_backbone,
    load_backbone_weights,
    strip_prefixes,
)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def randomise_bn_stats(module: torch.nn.Module, seed: int) -> None:
    """Give BN buffers non-default values so a round trip that skips them would show."""
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


def test_registry_holds_the_three_backbones():
    assert {"resnet18", "resnet50", "tiny"} <= set(BACKBONES)


@pytest.mark.parametrize(
    ("name", "size", "batch", "channels"),
    [
        ("tiny", 64, 2, 256),
        ("tiny", 96, 2, 256),
        ("resnet18", 64, 2, 512),
        ("resnet18", 96, 2, 512),
        ("resnet50", 64, 1, 2048),
    ],
)
def test_output_is_pooled_features(name, size, batch, channels):
    torch.manual_seed(0)
    model = create_backbone(name).eval()
    assert isinstance(model, Backbone)
    assert model.out_channels == channels
    with torch.no_grad():
        out = model(torch.randn(batch, 3, size, size))
    assert out.shape == (batch, channels)
    assert torch.isfinite(out).all()


def test_trunk_parameter_counts_match_torchvision_without_fc():
    # torchvision: resnet18 11,689,512 - fc (512*1000 + 1000); resnet50 25,557,032 - fc (2048*1000 + 1000)
    assert n_params(create_backbone("resnet18")) == 11_176_512
    assert n_params(create_backbone("resnet50")) == 23_508_032


def test_tiny_is_small_and_trains():
    model = create_backbone("tiny")
    assert n_params(model) < 2_000_000
    out = model(torch.randn(4, 3, 96, 96))
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_resnet_names_follow_torchvision_layout():
    keys = set(create_backbone("resnet18").state_dict())
    for key in (
        "conv1.weight",
        "bn1.running_var",
        "layer1.0.conv1.weight",
        "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.num_batches_tracked",
        "layer4.1.bn2.bias",
    ):
        assert key in keys
    assert "layer1.0.downsample.0.weight" not in keys  # layer1 of a BasicBlock ResNet keeps 64 channels
    assert not any(k.startswith("fc.") for k in keys)
    assert "layer4.2.conv3.weight" in create_backbone("resnet50").state_dict()


def test_unknown_name_raises_value_error_listing_names():
    with pytest.raises(ValueError, match="resnet18") as info:
        create_backbone("vgg16")
    assert "vgg16" in str(info.value) and "tiny" in str(info.value)
    assert isinstance(info.value, ConfigError)  # so the CLI turns it into one line


def test_kwargs_reach_the_factory():
    default = create_backbone("resnet18")
    zeroed = create_backbone("resnet18", zero_init_residual=True)
    assert torch.all(zeroed.layer1[0].bn2.weight == 0) and torch.all(zeroed.layer4[1].bn2.weight == 0)
    assert torch.all(default.layer1[0].bn2.weight == 1)
    assert torch.all(zeroed.bn1.weight == 1)  # only the last BN of each block
    narrow = create_backbone("tiny", widths=(8, 16, 32), depths=(1, 1, 1))
    assert narrow.out_channels == 32
    assert narrow(torch.randn(2, 3, 64, 64)).shape == (2, 32)


def test_strip_prefixes():
    assert strip_prefixes("module.backbone.layer1.0.conv1.weight") == "layer1.0.conv1.weight"
    assert strip_prefixes("conv1.weight") == "conv1.weight"
    assert strip_prefixes("head.backbone.x") == "head.backbone.x"  # only leading prefixes


def test_load_round_trip_strips_prefix_and_drops_fc(tmp_path: Path):
    torch.manual_seed(1)
    source = create_backbone("tiny")
    randomise_bn_stats(source, seed=1)
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    state["module.fc.weight"] = torch.zeros(10, 256)
    state["module.fc.bias"] = torch.zeros(10)
    path = tmp_path / "tiny.pth"
    torch.save({"state_dict": state, "epoch": 3}, path)

    torch.manual_seed(2)
    target = create_backbone("tiny")
    report = load_backbone_weights(target, path)

    assert report.path == path
    assert report.loaded == len(source.state_dict())
    assert report.missing == [] and report.unexpected == []
    assert sorted(report.dropped) == ["module.fc.bias", "module.fc.weight"]
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_load_reports_missing_and_unexpected_keys(tmp_path: Path):
    torch.manual_seed(3)
    source = create_backbone("tiny")
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("stages.3.")}
    state["head.weight"] = torch.ones(3)
    path = tmp_path / "partial.pt"
    torch.save({"model": state}, path)  # the other common nesting

    torch.manual_seed(4)
    target = create_backbone("tiny")
    before = {k: v.clone() for k, v in target.state_dict().items()}
    report = load_backbone_weights(target, path)

    expected_missing = sorted(k for k in before if k.startswith("stages.3.") and "num_batches" not in k)
    assert sorted(report.missing) == expected_missing
    assert report.unexpected == ["head.weight"]
    assert report.loaded == len(state) - 1
    assert torch.equal(target.stages[3][0][0].weight, before["stages.3.0.0.weight"])  # left as initialised
    assert torch.equal(target.stages[0][0][0].weight, source.stages[0][0][0].weight)


def test_truncated_file_raises_checkpoint_error_naming_it(tmp_path: Path):
    path = tmp_path / "cut.pth"
    torch.save(create_backbone("tiny").state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pth"):
        load_backbone_weights(create_backbone("tiny"), path)

    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(CheckpointError, match="notes.txt"):
        load_backbone_weights(create_backbone("tiny"), text)

    with pytest.raises(CheckpointError, match="absent.pth"):
        load_backbone_weights(create_backbone("tiny"), tmp_path / "absent.pth")


def test_file_without_tensors_raises_checkpoint_error(tmp_path: Path):
    path = tmp_path / "config_only.pt"
    torch.save({"config": {"lr": 0.1}}, path)
    with pytest.raises(CheckpointError, match="config_only.pt"):
        load_backbone_weights(create_backbone("tiny"), path)


def test_shape_mismatch_raises_checkpoint_error_naming_key(tmp_path: Path):
    path = tmp_path / "narrow.pth"
    torch.save(create_backbone("tiny", widths=(16, 32, 64, 128)).state_dict(), path)
    target = create_backbone("tiny")
    before = target.stages[0][0][0].weight.clone()
    with pytest.raises(CheckpointError, match=r"narrow\.pth.*stages\.0\.0\.0\.weight"):
        load_backbone_weights(target, path)
    assert torch.equal(target.stages[0][0][0].weight, before)  # nothing copied before the check failed
