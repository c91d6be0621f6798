"""One torch module -> one checked ONNX file: the dynamo exporter (legacy fallback), onnx.checker, onnxslim.

The simplified graph replaces the exported one only when onnxruntime gives the same outputs for both.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from ks_export import ExportError
from ks_export.parity import Tolerance, compare_outputs
from ks_runtime.core.bundle import BATCH

log = logging.getLogger(__name__)

# 18 is the opset torch's dynamo exporter translates to natively (no version conversion step), and it runs on
# onnxruntime >= 1.14, which covers the older builds on embedded boxes; LayerNormalization needs >= 17.
DEFAULT_OPSET = 18
MIN_OPSET = 17
SIMPLIFY_ATOL = 1e-6  # "the outputs stay equal": float noise from reordered arithmetic, no more


@dataclass(frozen=True)
class ExportedGraph:
    """What happened to one graph: which exporter wrote it and what the simplifier did."""

    role: str
    path: Path
    exporter: str  # "dynamo" or "legacy"
    simplifier: str  # e.g. "onnxslim: 171 -> 160 nodes" or why it was not kept
    opset: int


def _probe_model(opset: int) -> bytes:
    x, y = (onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [1]) for name in "xy")
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "probe", [x], [y])
    return onnx.helper.make_model(
        graph, opset_imports=[onnx.helper.make_opsetid("", opset)], ir_version=8
    ).SerializeToString()


@functools.lru_cache(maxsize=1)
def max_ort_opset() -> int:
    """The highest default-domain opset the installed onnxruntime loads (it refuses newer ones outright)."""
    options = ort.SessionOptions()
    options.log_severity_level = 4
    for opset in range(onnx.defs.onnx_opset_version(), MIN_OPSET - 1, -1):
        try:
            ort.InferenceSession(_probe_model(opset), sess_options=options, providers=["CPUExecutionProvider"])
            return opset
        except Exception:  # onnxruntime's own error types: "Opset N is under development..."
            continue
    raise ExportError(f"onnxruntime {ort.__version__} loads no opset >= {MIN_OPSET}")


def resolve_opset(opset: int | None) -> int:
    """The opset to export at: DEFAULT_OPSET, or `opset` if onnx and the installed onnxruntime both know it."""
    if opset is None:
        return min(DEFAULT_OPSET, max_ort_opset())
    if opset < MIN_OPSET:
        raise ExportError(f"--opset {opset}: the model needs opset >= {MIN_OPSET} (LayerNormalization)")
    if opset > max_ort_opset():  # never above onnx's own newest opset: the probe does not go higher
        raise ExportError(
            f"--opset {opset}: the installed onnxruntime {ort.__version__} runs opsets up to "
            f"{max_ort_opset()} (onnx {onnx.__version__} knows up to {onnx.defs.onnx_opset_version()}); "
            f"export at {max_ort_opset()} or lower, or upgrade onnxruntime"
        )
    return opset


def model_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), -1)


EXPORTER_LOGGERS = ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "onnx_ir", "onnxslim")


@contextmanager
def quiet_loggers(names: Sequence[str] = EXPORTER_LOGGERS, level: int = logging.ERROR):
    """Silence third-party chatter (missing torchvision ops, pass-by-pass INFO, deprecations) for a block;
    errors still raise and still log."""
    noisy = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in noisy]
    for logger in noisy:
        logger.setLevel(level)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, old in zip(noisy, levels, strict=True):
            logger.setLevel(old)


def _export_dynamo(module: nn.Module, args: tuple[torch.Tensor, ...], path: Path, opset: int) -> None:
    batch = torch.export.Dim(BATCH, min=1)
    with quiet_loggers():
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=True,
            opset_version=opset,
            verbose=False,
            input_names=list(module.input_names),
            output_names=list(module.output_names),
            dynamic_shapes={name: {0: batch} for name in module.input_names},
            external_data=False,
        )
    written = model_opset(onnx.load(str(path), load_external_data=False))
    if written != opset:
        raise ExportError(f"{path}: the dynamo exporter wrote opset {written}, not the requested {opset}")


def _export_legacy(module: nn.Module, args: tuple[torch.Tensor, ...], path: Path, opset: int) -> None:
    axes = {name: {0: BATCH} for name in (*module.input_names, *module.output_names)}
    with quiet_loggers():
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=False,
            opset_version=opset,
            do_constant_folding=True,
            input_names=list(module.input_names),
            output_names=list(module.output_names),
            dynamic_axes=axes,
        )


def export_module(
    module: nn.Module, args: tuple[torch.Tensor, ...], path: Path, opset: int, exporter: str = "dynamo"
) -> str:
    """Export `module` (eval mode, inputs with a batch of >= 2) to `path`; returns the exporter that worked."""
    if module.training:
        raise ExportError(f"{path}: refusing to export a module in training mode (dropout would be on)")
    if exporter not in ("dynamo", "legacy"):
        raise ValueError(f"exporter must be 'dynamo' or 'legacy', got {exporter!r}")
    if exporter == "dynamo":
        try:
            _export_dynamo(module, args, path, opset)
            return "dynamo"
        except Exception as error:  # torch.export raises many types; the legacy exporter is the documented fallback
            log.warning(
                "%s: the dynamo exporter failed (%s: %s); falling back to the legacy TorchScript exporter",
                path,
                type(error).__name__,
                str(error).strip().splitlines()[0][:300] if str(error) else "",
            )
    try:
        _export_legacy(module, args, path, opset)
    except Exception as error:
        raise ExportError(f"{path}: the legacy exporter failed too ({type(error).__name__}: {error})") from error
    return "legacy"


def check_graph(path: Path, opset: int) -> onnx.ModelProto:
    """onnx.checker (full, with shape inference) and the opset; a failure names the file."""
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
    except Exception as error:  # onnx raises ValidationError, DecodeError, InferenceError...
        raise ExportError(f"{path}: onnx.checker rejects the graph ({type(error).__name__}: {error})") from None
    if model_opset(model) != opset:
        raise ExportError(f"{path}: opset {model_opset(model)}, expected {opset}")
    return model


def io_signature(model: onnx.ModelProto) -> list[tuple[str, list]]:
    """(name, dims) of every graph input and output; symbolic dims by name."""

    def dims(value) -> list:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    return [(v.name, dims(v)) for v in (*model.graph.input, *model.graph.output)]


def same_signature(original: onnx.ModelProto, simplified: onnx.ModelProto) -> bool:
    """Same tensor names and ranks, the batch axis still dynamic; a symbolic non-batch dim may become a number
    (the legacy exporter leaves some, e.g. [B, 'Addsa_logits_dim_1'], which the simplifier resolves)."""
    before, after = io_signature(original), io_signature(simplified)
    if [name for name, _ in before] != [name for name, _ in after]:
        return False
    for (_, a_dims), (_, b_dims) in zip(before, after, strict=True):
        if len(a_dims) != len(b_dims) or (a_dims and not isinstance(b_dims[0], str)):
            return False
        for a, b in zip(a_dims, b_dims, strict=True):
            if a != b and not (isinstance(a, str) and (isinstance(b, str) or b > 0)):
                return False
    return True


def run_onnx(model: onnx.ModelProto | Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, feeds)


def simplify_if_equal(path: Path, feeds: Sequence[dict[str, np.ndarray]], atol: float = SIMPLIFY_ATOL) -> str:
    """Run onnxslim on `path`; keep the result only if its inputs, outputs and their values stay the same."""
    import onnxslim  # deferred: onnxslim (the export extra; only the export's simplification step needs it)

    original = onnx.load(str(path))
    try:
        with quiet_loggers():
            slim = onnxslim.slim(original)
    except Exception as error:  # a simplifier bug must not fail the export: the exported graph is kept
        log.warning("%s: onnxslim failed (%s); keeping the exported graph", path, error)
        return f"onnxslim failed ({type(error).__name__}); kept the exported graph"
    before, after = len(original.graph.node), len(slim.graph.node)
    if not same_signature(original, slim) or model_opset(slim) != model_opset(original):
        log.warning("%s: onnxslim changed the graph's inputs, outputs or opset; keeping the exported graph", path)
        return "onnxslim changed the signature; not kept"
    names = [o.name for o in original.graph.output]
    checks = [
        parity
        for feed in feeds
        for parity in compare_outputs(
            dict(zip(names, run_onnx(slim, feed), strict=True)),
            dict(zip(names, run_onnx(original, feed), strict=True)),
            Tolerance(atol=atol),
        )
    ]
    worst = max((parity.max_abs for parity in checks), default=0.0)
    failed = [parity for parity in checks if not parity.ok]
    if failed:
        log.warning("%s: onnxslim's graph differs (%s); keeping the exported graph", path, failed[0].report())
        return f"onnxslim not kept (outputs differ by {worst:.2g})"
    onnx.save(slim, str(path))
    return f"onnxslim: {before} -> {after} nodes, outputs equal (max diff {worst:.1g})"
