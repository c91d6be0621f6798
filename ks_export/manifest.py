"""manifest.json, written: everything the runtime needs, what produced the bundle, and how it was checked.

The field layout is ks_runtime.core.bundle's (the reader; docs/bundle-format.md describes it); after writing,
the manifest is read back through that reader, so the writer can never produce a bundle the runtime refuses.
"""

from __future__ import annotations

import json
import math
import os
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import onnx
import onnxruntime
import torch

from ks_export.graphs import LoadedCheckpoint
from ks_runtime.core.au import AU_NAMES, au_set_from_numbers, parse_au_column
from ks_runtime.core.bundle import FORMAT, MANIFEST, Manifest, graph_specs, read_manifest, sha256_file
from ks_runtime.core.bundle_files import is_device_cache
from ks_runtime.core.policy import POLICIES, lookahead
from ks_runtime.synth.face import alignment_template
from ks_runtime.synth.generate import GENERATOR_VERSION
from ks_train import __version__ as ks_train_version

DEFAULT_POLICY = "last"  # streaming: no look-ahead, the lowest latency
PACKAGE = "knowledge-spreader"
DEFAULT_THRESHOLD = 0.5  # every AU's decision threshold until one is calibrated
THRESHOLDS_SOURCE = "default (0.5 each; not calibrated)"


def jsonable(value: Any) -> Any:
    """Plain JSON: tuples as lists, NaN and infinities as null (strict parsers reject NaN)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return jsonable(value.item())
    return value


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def history_summary(history: list[dict]) -> dict:
    """Epochs trained, the best and last test F1, and the last epoch's losses."""
    f1s = [r["mean_f1"] for r in history if isinstance(r.get("mean_f1"), float)]
    last = history[-1] if history else {}
    return jsonable(
        {
            "epochs": len(history),
            "best_mean_f1": max(f1s) if f1s else None,
            "last": {k: v for k, v in last.items() if k != "per_au_f1"},
        }
    )


def producer(exporters: dict[str, str], simplifier: dict[str, str]) -> dict:
    """The manifest's producer field: this package's version and the tools' that made the graphs."""
    installed = package_version(PACKAGE)
    return {
        "package": PACKAGE,
        "version": installed if installed != "not installed" else ks_train_version,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "onnxscript": package_version("onnxscript"),
        "onnxslim": package_version("onnxslim"),
        "exporters": exporters,
        "simplifier": simplifier,
    }


def manifest_version(clip_stride: int) -> int:
    """Version 1 for adjacent-frame bundles (readable by runtimes that predate strides), 2 for strided ones."""
    return 1 if clip_stride == 1 else 2


def build_manifest(
    ckpt: LoadedCheckpoint,
    opset: int,
    exporters: dict[str, str],
    simplifier: dict[str, str],
    verification: dict,
    variants: dict,
    serving: dict,
    checkpoint_sha256: str,
    policy: str = DEFAULT_POLICY,
    tensorrt: dict | None = None,
) -> dict:
    """The manifest as a dict; `files` is filled in by write_manifest. `tensorrt`: the trtexec recipe, batch
    profiles and engines (ks_export.tensorrt.tensorrt_manifest), read by ks_runtime.engine.trt."""
    cfg, state = ckpt.config, ckpt.state
    columns = list(state["au_columns"])
    n, u, stride = ckpt.clip_len, len(columns), cfg.model.clip_stride
    return jsonable(
        {
            "format": FORMAT,
            "format_version": manifest_version(stride),
            "model": model_section(ckpt, columns),
            "thresholds": [DEFAULT_THRESHOLD] * u,
            "thresholds_source": THRESHOLDS_SOURCE,
            "policy": {
                "default": policy,
                "lookahead": {p: lookahead(n, p, stride) for p in POLICIES},
                "trained_eval": cfg.train.eval_policy,
            },
            "preprocess": state.get("preprocess") or cfg.preprocess.to_dict(),
            # Where a raw frame's face detector puts the eyes, nose tip and mouth corners in the crop (fractions of
            # its side): the SynthAU crops' template, which every bundled model was trained on.
            "alignment": {"template": alignment_template(), "source": f"synthau-{GENERATOR_VERSION}"},
            "opset": opset,
            "graphs": {role: spec.to_dict() for role, spec in graph_specs(n, u, ckpt.size).items()},
            "variants": variants,
            "serving": serving,
            **({"tensorrt": tensorrt} if tensorrt is not None else {}),
            "training": training_section(ckpt, checkpoint_sha256),
            "producer": producer(exporters, simplifier),
            "verification": verification,
        }
    )


def model_section(ckpt: LoadedCheckpoint, columns: list[str]) -> dict:
    """The manifest's model field: the method, the AUs it predicts (by column and name), its clip and size."""
    cfg = ckpt.config
    numbers = [parse_au_column(c) for c in columns]
    au_set = cfg.data.au_set if cfg.data.dataset == "synth" else au_set_from_numbers(numbers).name
    return {
        "method": cfg.method,
        "au_set": au_set,
        "au_columns": columns,
        "au_names": [AU_NAMES.get(x, c) for x, c in zip(numbers, columns, strict=True)],
        "n_aus": len(columns),
        "clip_len": ckpt.clip_len,
        "clip_stride": cfg.model.clip_stride,
        "fusion": cfg.model.fusion,
        "backbone": cfg.model.backbone,
        "parameters": sum(p.numel() for p in ckpt.model.parameters()),
    }


def training_section(ckpt: LoadedCheckpoint, checkpoint_sha256: str) -> dict:
    """The manifest's training field: the checkpoint, its config, metrics and dataset, and a history summary."""
    state = ckpt.state
    return {
        "checkpoint": {
            "file": ckpt.path.name,
            "sha256": checkpoint_sha256,
            "epoch": state.get("epoch"),
            "package_version": state.get("package_version"),
        },
        "config": state["config"],
        "metrics": state.get("metrics", {}),
        "dataset": state.get("dataset", {}),
        "history": history_summary(state.get("history", [])),
    }


def hash_files(root: Path) -> dict[str, str]:
    """sha256 of every file under the bundle except the manifest itself and the TensorRT timing caches, by POSIX
    relative path. A timing cache is a build input the recipe rewrites on the device, never loaded to run, so the
    reader allows it unhashed (ks_runtime.core.bundle_files.is_device_cache)."""
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file()
        and p.name != MANIFEST
        and not p.name.startswith(".")
        and not is_device_cache(p.relative_to(root).as_posix())
    }


def write_manifest(root: Path, manifest: dict) -> Manifest:
    """Hash every file, write manifest.json atomically, and read it back through the runtime's reader."""
    manifest = {**manifest, "files": hash_files(root)}
    path = root / MANIFEST
    tmp = path.with_name(f".{MANIFEST}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(jsonable(manifest), indent=1, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return read_manifest(root)
