"""Edits of an exported INT8 bundle that make its INT8 encoder compute something else, re-hashed as if exported
that way: what a CPU whose integer kernels sum differently would do to the same file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from ks_runtime.core import bundle as B


def edit_manifest(root: Path, change) -> None:
    """Apply `change` to the manifest's JSON and write it back."""
    data = json.loads((root / B.MANIFEST).read_text())
    change(data)
    (root / B.MANIFEST).write_text(json.dumps(data))


def rehash(root: Path, name: str) -> None:
    """Record a file's new sha256 in the manifest."""
    edit_manifest(root, lambda data: data["files"].update({name: B.sha256_file(root / name)}))


def scale_output_dequantize(root: Path, factor: float) -> None:
    """Multiply the scale of the DequantizeLinear nodes that produce the INT8 encoder's outputs by `factor` (a new
    initialiser: the QuantizeLinear before each keeps the old one), so every logit is `factor` times too large."""
    name = json.loads((root / B.MANIFEST).read_text())["variants"][B.ENCODER_INT8]["file"]
    model = onnx.load(str(root / name))
    outputs = {o.name for o in model.graph.output}
    initializers = {t.name: t for t in model.graph.initializer}
    edited = 0
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.output[0] in outputs:
            scale = numpy_helper.to_array(initializers[node.input[1]]) * np.float32(factor)
            node.input[1] = f"{node.input[1]}_edited"
            model.graph.initializer.append(numpy_helper.from_array(scale.astype(np.float32), node.input[1]))
            edited += 1
    assert edited, f"{name}: no DequantizeLinear produces an output"
    onnx.save(model, str(root / name))
    rehash(root, name)
