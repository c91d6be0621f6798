"""CNN backbones shared by all frames of a clip: [B, 3, H, W] float -> global-average-pooled [B, C].

[R] (docs/model.md): ResNet-50 (C = 2048) matches the paper's parameter budget; ResNet-18 (512) and a tiny
CNN (256) are for CPU work. `create_backbone(name)` is the only call site. The ResNets keep torchvision's
parameter names (conv1, bn1, layer1.0.conv1, ..., layer4; no fc) so a local torchvision-style checkpoint
loads through `load_backbone_weights`. Nothing is downloaded: without `--init PATH` training starts
from scratch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from ks_runtime.core.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)


class Backbone(nn.Module):
    """A feature extractor: [B, 3, H, W] float -> [B, out_channels], pooled over space."""

    out_channels: int


class UnknownBackboneError(ConfigError, ValueError):
    """A backbone name that is not registered; a ConfigError for the CLI, a ValueError for callers."""


BackboneFactory = Callable[..., Backbone]
BACKBONES: dict[str, BackboneFactory] = {}


def register_backbone(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    """Decorator: make a backbone factory reachable as `create_backbone(name)`."""

    def decorate(factory: BackboneFactory) -> BackboneFactory:
        if name in BACKBONES:
            raise ValueError(f"backbone {name!r} is registered twice")
        BACKBONES[name] = factory
        return factory

    return decorate


def create_backbone(name: str, **kwargs) -> Backbone:
    """Build the backbone registered as `name`; kwargs go to its factory (e.g. zero_init_residual)."""
    if name not in BACKBONES:
        names = ", ".join(sorted(BACKBONES))
        raise UnknownBackboneError(f"unknown backbone {name!r}; choose one of: {names}")
    return BACKBONES[name](**kwargs)


# ----------------------------------------------------------------------------------------------------------
# ResNet (torchvision v1.5 layout: the stride of a Bottleneck sits on its 3x3 conv)


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual; ResNet-18/34's block."""

    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(in_ch, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4, with a residual; ResNet-50's block."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv1x1(in_ch, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, width * self.expansion)
        self.bn3 = nn.BatchNorm2d(width * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(Backbone):
    """ResNet trunk without fc: stem (7x7/2 conv, 3x3/2 max-pool), four stages, global average pool."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, int, int, int],
        zero_init_residual: bool = False,
    ):
        super().__init__()
        self.in_ch = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0], stride=1)
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.out_channels = 512 * block.expansion
        init_weights(self, zero_init_residual)

    def _make_layer(self, block: type[BasicBlock] | type[Bottleneck], width: int, blocks: int, stride: int):
        downsample = None
        if stride != 1 or self.in_ch != width * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.in_ch, width * block.expansion, stride), nn.BatchNorm2d(width * block.expansion)
            )
        modules = [block(self.in_ch, width, stride, downsample)]
        self.in_ch = width * block.expansion
        modules += [block(self.in_ch, width) for _ in range(1, blocks)]
        return nn.Sequential(*modules)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, H/4, W/4)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, C, H/32, W/32)
        return x.mean((2, 3))  # (B, C)


# ----------------------------------------------------------------------------------------------------------
# Tiny CNN for 64-112 px work on a 2-core CPU


def conv_bn_relu(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    return nn.Sequential(conv3x3(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class TinyCNN(Backbone):
    """Plain 3x3 conv-BN-ReLU stages, each opening with a stride-2 conv; no residuals, no pooling layers.

    Defaults (widths 32-64-128-256, depths 1-1-2-2): 1,126,944 parameters; a 96 px face ends at 6x6 with a
    receptive field of 79 px, and a forward+backward of 40 frames takes ~0.15 s on 2 CPU cores.
    """

    def __init__(
        self,
        widths: tuple[int, ...] = (32, 64, 128, 256),
        depths: tuple[int, ...] = (1, 1, 2, 2),
        zero_init_residual: bool = False,  # accepted so all backbones share kwargs; no residuals here
    ):
        super().__init__()
        if len(widths) != len(depths) or not widths or min(depths) < 1:
            raise ConfigError(f"tiny backbone: widths {widths} and depths {depths} must pair up, depths >= 1")
        stages, in_ch = [], 3
        for width, depth in zip(widths, depths, strict=True):
            convs = [conv_bn_relu(in_ch, width, stride=2)]
            convs += [conv_bn_relu(width, width, stride=1) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*convs))
            in_ch = width
        self.stages = nn.Sequential(*stages)
        self.out_channels = widths[-1]
        init_weights(self, zero_init_residual=False)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stages(x)  # (B, C, H / 2**stages, W / 2**stages)
        return x.mean((2, 3))  # (B, C)


def init_weights(model: nn.Module, zero_init_residual: bool = False) -> None:
    """Kaiming-normal (fan_out) convs, BN weight 1 / bias 0; optionally zero the last BN of each residual
    block, so every block starts as the identity (Goyal et al. 2017)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in model.modules():
            if isinstance(m, (BasicBlock, Bottleneck)):
                nn.init.zeros_(m.last_bn().weight)


@register_backbone("resnet18")
def resnet18(zero_init_residual: bool = False) -> ResNet:
    """ResNet-18 trunk, C = 512: 11,176,512 parameters."""
    return ResNet(BasicBlock, (2, 2, 2, 2), zero_init_residual)


@register_backbone("resnet50")
def resnet50(zero_init_residual: bool = False) -> ResNet:
    """ResNet-50 trunk, C = 2048: 23,508,032 parameters, the paper's budget [R]."""
    return ResNet(Bottleneck, (3, 4, 6, 3), zero_init_residual)


@register_backbone("tiny")
def tiny(
    widths: tuple[int, ...] = (32, 64, 128, 256),
    depths: tuple[int, ...] = (1, 1, 2, 2),
    zero_init_residual: bool = False,
) -> TinyCNN:
    """Tiny CNN, C = widths[-1] (256 by default), for CPU runs at 64-112 px."""
    return TinyCNN(tuple(widths), tuple(depths), zero_init_residual)


# ----------------------------------------------------------------------------------------------------------
# Loading a user's local checkpoint (--init PATH)

STRIP_PREFIXES = ("module.", "backbone.")  # DataParallel / DDP wrappers, and models holding a `.backbone`
WRAPPER_KEYS = ("state_dict", "model")  # Lightning / common training scripts nest the weights under these
DROP_PREFIXES = ("fc.",)  # the ImageNet classifier head; our backbones end at the pooled features


@dataclass
class LoadReport:
    """What `load_backbone_weights` did: how many tensors it copied and which names did not match."""

    path: Path
    loaded: int
    missing: list[str] = field(default_factory=list)  # in the backbone, not in the file: left as initialised
    unexpected: list[str] = field(default_factory=list)  # in the file, not in the backbone: ignored
    dropped: list[str] = field(default_factory=list)  # classifier keys (fc.*) removed on purpose


def strip_prefixes(key: str, prefixes: tuple[str, ...] = STRIP_PREFIXES) -> str:
    """Remove any leading wrapper prefixes, e.g. 'module.backbone.conv1.weight' -> 'conv1.weight'."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in prefixes:
            if key.startswith(prefix):
                key, stripped = key[len(prefix) :], True
    return key


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """torch.load a checkpoint and return its flat tensor state_dict; CheckpointError names the file."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, plain pickle, random bytes... torch raises many different types
        reason = f"{type(exc).__name__}: {exc}"
        raise CheckpointError(f"{path}: not a loadable torch checkpoint ({reason})") from exc
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not any(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: holds no state_dict (tensors, or a 'state_dict'/'model' entry)")
    return {k: v for k, v in obj.items() if isinstance(v, Tensor)}


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> LoadReport:
    """Copy matching weights from a local checkpoint into `backbone` (strict=False) and report the rest.

    Shape mismatches raise CheckpointError (file and first key) before anything is copied. BatchNorm's
    `num_batches_tracked` counters absent from older checkpoints are not reported as missing.
    """
    path = Path(path)
    raw = _read_state_dict(path)
    state, dropped = {}, []
    for key, value in raw.items():
        name = strip_prefixes(key)
        if name.startswith(DROP_PREFIXES):
            dropped.append(key)
        else:
            state[name] = value

    own = backbone.state_dict()
    mismatched = [k for k in state if k in own and state[k].shape != own[k].shape]
    if mismatched:
        first = mismatched[0]
        raise CheckpointError(
            f"{path}: shape mismatch at '{first}': checkpoint {tuple(state[first].shape)} vs backbone "
            f"{tuple(own[first].shape)} ({len(mismatched)} keys differ: another architecture?)"
        )

    result = backbone.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    report = LoadReport(path, sum(k in own for k in state), missing, list(result.unexpected_keys), dropped)
    log.info(
        "%s: loaded %d tensors into the backbone, dropped %d classifier keys",
        path,
        report.loaded,
        len(dropped),
    )
    if report.missing:
        log.warning(
            "%s: %d backbone keys not in the checkpoint, left as initialised: %s",
            path,
            len(report.missing),
            ", ".join(report.missing[:10]),
        )
    if report.unexpected:
        log.warning(
            "%s: %d checkpoint keys ignored: %s",
            path,
            len(report.unexpected),
            ", ".join(report.unexpected[:10]),
        )
    return report
