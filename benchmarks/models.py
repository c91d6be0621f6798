"""The models the benchmarks measure: untrained `paper-r50` and synth-cpu-sized bundles (exported once and cached
under benchmarks/.cache/, keyed by the code that makes them), the demo's trained synth-cpu bundle, and an
EAC-Net-sized VGG-16 AU detector for the parameter-size claim.

Speed does not depend on training, so the speed rows use untrained weights; accuracy rows use the model
`make demo` trains and are skipped when it has not been run.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from benchmarks.harness import CACHE, ROOT, code_key, quick
from ks_export.export import experiment_sequences, export_bundle
from ks_export.onnx_export import DEFAULT_OPSET, check_graph, export_module
from ks_runtime.core.bundle import read_manifest
from ks_runtime.core.errors import BundleError
from ks_train import __version__
from ks_train.checkpoint import save_checkpoint
from ks_train.config import ExperimentConfig, load_config
from ks_train.methods import create_method

log = logging.getLogger(__name__)

# What a bundle's export depends on: a change to any of these makes the cached bundle stale. RECIPE stands for
# this file's own recipe (untrained_checkpoint, cached_bundle, VGG16AU): bump it when changing them.
RECIPE = "1"
EXPORT_SOURCES = [
    "ks_export/*.py",
    "ks_train/model/*.py",
    "ks_train/config.py",
    "ks_train/checkpoint.py",
    "ks_train/methods.py",
    "ks_export/templates/*",
    "ks_runtime/core/*.py",
]
# The untrained bundles verify and calibrate on SynthAU `tiny` (at the profile's image size): the network is the
# profile's, and rendering the profile's own test part (SynthAU full at 224 px for paper-r50) would take minutes.
DATA_OVERRIDES = ["data.synth_size=tiny"]
CALIB_FRAMES = 32  # INT8 calibration frames; speed does not depend on how well the ranges fit
DEMO_BUNDLE = ROOT / "runs" / "demo" / "bundle"


def untrained_checkpoint(profile: str, path: Path, seed: int = 0) -> Path:
    """A checkpoint of a freshly initialised KS model of `profile`, in the format ks-export reads."""

    cfg = load_config(profile, DATA_OVERRIDES)
    # The trainer resolves clip_stride 0 (the label spacing); an untrained model has none: 10, the profiles' 10%.
    if cfg.model.clip_stride == 0:
        cfg = replace(cfg, model=replace(cfg.model, clip_stride=10))
    torch.manual_seed(seed)
    model = create_method(cfg).build_model().eval()
    state = {
        "config": cfg.to_dict(),
        "au_columns": list(cfg.synth.aus.columns),
        "preprocess": cfg.preprocess.to_dict(),
        "model": model.state_dict(),
        "metrics": {},
        "epoch": 0,
        "package_version": __version__,
        "dataset": {"name": "none: untrained, for speed measurements"},
    }
    save_checkpoint(state, path)
    return path


def cached_bundle(profile: str, int8: bool = True) -> Path:
    """The untrained `profile` bundle under benchmarks/.cache/<profile>-<code key>/, exported when missing or stale
    (ResNet-50 takes a few minutes on 2 cores: three dynamo exports, verification, INT8 calibration)."""
    folder = CACHE / f"{profile}-{'int8-' if int8 else ''}{code_key(EXPORT_SOURCES, RECIPE)}"
    bundle = folder / "bundle"
    if (bundle / "manifest.json").is_file():
        try:
            read_manifest(bundle)
            return bundle
        except BundleError as error:
            log.warning("cached bundle %s is unusable (%s); exporting again", bundle, error)
    for stale in CACHE.glob(f"{profile}-{'int8-' if int8 else ''}*"):
        if stale != folder and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    checkpoint = untrained_checkpoint(profile, folder / "untrained.pt")
    log.info("exporting an untrained %s bundle to %s", profile, bundle)
    export_bundle(checkpoint, bundle, int8=int8, triton=False, evaluate=False, calib=CALIB_FRAMES)
    return bundle


def checkpoint_of(bundle: Path) -> Path:
    """The untrained checkpoint a cached bundle was exported from."""
    return bundle.parent / "untrained.pt"


def demo_bundle() -> Path | None:
    """runs/demo/bundle when `make demo` has written it (KS_BENCH_DEMO_BUNDLE names another trained bundle)."""
    bundle = Path(os.environ.get("KS_BENCH_DEMO_BUNDLE") or DEMO_BUNDLE)
    return bundle if (bundle / "manifest.json").is_file() else None


def demo_test_set() -> SimpleNamespace:
    """The demo bundle with its test part as `ks-train eval` reads it: bundle, manifest, training config (cfg), AU
    columns, test sequences, their frames (videos) and labels; two sequences in quick mode. Skips the calling test
    when there is no demo bundle."""
    bundle = demo_bundle()
    if bundle is None:
        pytest.skip("no runs/demo/bundle: run `make demo` first (or set KS_BENCH_DEMO_BUNDLE)")
    manifest = read_manifest(bundle)
    cfg = ExperimentConfig.from_dict(manifest.raw["training"]["config"])
    columns = list(manifest.au_columns)
    test = experiment_sequences(cfg, columns, "test")[: 2 if quick() else None]
    return SimpleNamespace(
        bundle=bundle,
        manifest=manifest,
        cfg=cfg,
        columns=columns,
        videos=[s.load(np.arange(len(s))) for s in test],
        labels=np.concatenate([s.labels for s in test]),
    )


# --- the VGG-16 AU detector --------------------------------------------------------------------------------------

VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG16AU(nn.Module):
    """VGG-16 (Simonyan & Zisserman, configuration D) with a 12-AU sigmoid output: the per-frame backbone of
    EAC-Net and of the AU detectors the paper compares its parameter count with. frames (B, 3, 224, 224) -> (B, U)."""

    input_names = ("frames",)
    output_names = ("probs",)

    def __init__(self, n_aus: int = 12) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for spec in VGG16_LAYERS:
            if spec == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, spec, 3, padding=1), nn.ReLU(inplace=True)]
                channels = spec
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(4096, n_aus),
        )

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = self.features(frames)  # (B, 512, 7, 7) at 224 px
        return torch.sigmoid(self.classifier(x.flatten(1)))


def vgg16_onnx() -> Path:
    """The VGG-16 AU detector as ONNX (legacy exporter, dynamic batch), cached like the bundles (~540 MB)."""
    path = CACHE / f"vgg16-au-{code_key(['ks_export/onnx_export.py'], RECIPE)}.onnx"
    if path.is_file():
        return path
    for stale in CACHE.glob("vgg16-au-*.onnx"):
        stale.unlink(missing_ok=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = VGG16AU().eval()
    tmp = path.with_suffix(".partial")
    with torch.no_grad():
        export_module(model, (torch.randn(2, 3, 224, 224),), tmp, DEFAULT_OPSET, exporter="legacy")
    check_graph(tmp, DEFAULT_OPSET)
    tmp.replace(path)
    return path


def parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
