"""FP16 ONNX variants for GPU providers: every float tensor in half precision, inputs and outputs kept float32.

Our own converter over the `onnx` API (onnxconverter-common's and onnxruntime's copies both mis-handle this
model: a stale Cast type in the head, unsorted input casts, a loop on blocked Casts). Initialisers, Constant
values and Cast targets become float16; graph inputs and outputs stay float32 behind one Cast each, so the
runtime feeds and reads the same tensors as from the FP32 graphs; ops in `block` run in float32 between Casts.
The variant is then run beside its FP32 graph in onnxruntime on the CPU and must agree within FP16_PROB_TOL
(ks_export.parity's comparison).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ks_export import ExportError
from ks_export.parity import Tolerance, compare
from ks_runtime.core.bundle import CLIPS, FRAMES, KEY_SLOT, SA_LOGITS, STUDENT_LOGITS
from ks_runtime.engine.ort_graphs import open_session

log = logging.getLogger(__name__)

FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
FP16_MAX = 65504.0  # largest finite float16
FP16_TINY = 2.0**-24  # smallest positive (subnormal) float16; smaller non-zero weights are raised to it
FP16_PROB_TOL = 2e-3  # |probs_fp16 - probs_fp32| on the CPU: the variant is refused above it
FP16_TOLERANCE = Tolerance(atol=FP16_PROB_TOL)
# Ops kept in float32 by default: no float16 kernel in onnxruntime's CPU provider or TensorRT, or unsafe in it.
DEFAULT_BLOCK = ("Range", "CumSum", "TopK", "NonMaxSuppression", "RoiAlign", "RandomNormalLike", "RandomUniformLike")
# Inputs that the op definitions require to be float32 whatever the data type (op -> input indices).
FLOAT32_INPUTS = {"Resize": (2,), "Upsample": (1,)}


@dataclass
class Fp16Conversion:
    """What the converter did: float16 initialisers, values clamped into float16's range, Casts added."""

    initializers: int = 0
    clamped: int = 0
    casts: int = 0
    blocked: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "tool": "ks_export.fp16.to_float16",
            "keep_io_types": True,
            "initializers_fp16": self.initializers,
            "values_clamped": self.clamped,
            "casts_added": self.casts,
            "blocked_nodes": self.blocked,
        }


def half_array(values: np.ndarray) -> tuple[np.ndarray, int]:
    """float32 -> float16 with magnitudes clamped to [FP16_TINY, FP16_MAX] (sign kept, zeros stay zero);
    returns the array and how many values were clamped."""
    a = np.asarray(values, np.float32)
    magnitude = np.abs(a)
    big = magnitude > FP16_MAX
    tiny = (magnitude > 0) & (magnitude < FP16_TINY)
    clamped = np.where(big, np.sign(a) * FP16_MAX, np.where(tiny, np.sign(a) * FP16_TINY, a))
    return clamped.astype(np.float16), int(big.sum() + tiny.sum())


def _half_tensor(tensor: TensorProto, stats: Fp16Conversion) -> TensorProto:
    half, clamped = half_array(numpy_helper.to_array(tensor))
    stats.clamped += clamped
    return numpy_helper.from_array(half, tensor.name)


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """The element type of every tensor of the main graph, from onnx shape inference."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as error:  # InferenceError and friends
        raise ExportError(f"fp16: onnx shape inference failed ({type(error).__name__}: {error})") from None
    graph = inferred.graph
    types = {t.name: t.data_type for t in graph.initializer}
    types.update({v.name: v.type.tensor_type.elem_type for v in (*graph.input, *graph.output, *graph.value_info)})
    return types


def to_float16(model: onnx.ModelProto, block: Sequence[str] = DEFAULT_BLOCK) -> tuple[onnx.ModelProto, Fp16Conversion]:
    """A float16 copy of `model` with float32 inputs and outputs; ops named in `block` compute in float32."""
    _refuse_subgraphs(model.graph)
    converter = _Converter(model, block)
    initializers = converter.half_initializers()
    for index, source in enumerate(model.graph.node):
        converter.convert_node(index, source)
    converter.cast_outputs_back()
    return _assemble(model, converter.nodes, initializers), converter.stats


def _refuse_subgraphs(graph: onnx.GraphProto) -> None:
    for node in graph.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise ExportError(f"fp16: node {node.name!r} ({node.op_type}) has a subgraph; not supported")


class _Converter:
    """One conversion's state: which nodes stay float32, the precision each float tensor is produced in
    ("native"; other precisions are Casts of it), the Casts added so far, and the nodes written."""

    def __init__(self, model: onnx.ModelProto, block: Sequence[str]) -> None:
        self.graph = model.graph
        self.types = _elem_types(model)
        self.stats = Fp16Conversion()
        # Nodes by index: protobuf hands out a new Python wrapper on each access, so id() is no identity.
        self.blocked = {i for i, n in enumerate(self.graph.node) if n.op_type in block}
        self.stats.blocked = [self.graph.node[i].name for i in sorted(self.blocked)]
        self.consumers: dict[str, list[int]] = {}
        for i, node in enumerate(self.graph.node):
            for name in node.input:
                self.consumers.setdefault(name, []).append(i)
        self.outputs = {o.name for o in self.graph.output}
        self.native: dict[str, int] = {v.name: FLOAT for v in self.graph.input if v.type.tensor_type.elem_type == FLOAT}
        # A graph output computed in float16 is renamed inside the graph and cast back to float32 under its name.
        # In the graph's output order, so that the same graph always gives the same bytes.
        self.renamed = {o.name: f"{o.name}__fp16" for o in self.graph.output if self.types.get(o.name) == FLOAT}
        self.nodes: list[onnx.NodeProto] = []
        self.casts: dict[tuple[str, int], str] = {}

    def half_initializers(self) -> list[TensorProto]:
        """The initialisers, float32 ones in float16 unless only float32 (blocked) nodes read them."""
        initializers = []
        for tensor in self.graph.initializer:
            users = self.consumers.get(tensor.name, [])
            if tensor.data_type == FLOAT and (tensor.name in self.outputs or any(i not in self.blocked for i in users)):
                tensor = _half_tensor(tensor, self.stats)
                self.stats.initializers += 1
                self.native[tensor.name] = HALF
            elif tensor.data_type == FLOAT:
                self.native[tensor.name] = FLOAT
            initializers.append(tensor)
        return initializers

    def version(self, name: str, want: int) -> str:
        """`name` in precision `want`, adding a Cast before the current node the first time it is needed."""
        if self.native[name] == want:
            return name
        key = (name, want)
        if key not in self.casts:
            self.casts[key] = f"{name}__{'fp32' if want == FLOAT else 'fp16'}"
            self.nodes.append(
                helper.make_node("Cast", [name], [self.casts[key]], name=f"cast_{self.casts[key]}", to=want)
            )
            self.stats.casts += 1
        return self.casts[key]

    def convert_node(self, index: int, source: onnx.NodeProto) -> None:
        """Append a copy of node `index` reading each float input in the precision it computes in."""
        node = onnx.NodeProto()
        node.CopyFrom(source)
        is_blocked = index in self.blocked
        for i, name in enumerate(node.input):
            name = self.renamed.get(name, name)
            if name and name in self.native:
                want = FLOAT if is_blocked or i in FLOAT32_INPUTS.get(node.op_type, ()) else HALF
                name = self.version(name, want)
            node.input[i] = name
        if not is_blocked:
            _retype_attributes(node, self.stats)
        for i, name in enumerate(node.output):
            if self.types.get(name) == FLOAT:
                node.output[i] = self.renamed.get(name, name)
                self.native[node.output[i]] = FLOAT if is_blocked else HALF
        self.nodes.append(node)

    def cast_outputs_back(self) -> None:
        """Graph outputs back to float32 under their own names."""
        for name, inner in self.renamed.items():
            if self.native[inner] == FLOAT:
                self.nodes.append(helper.make_node("Identity", [inner], [name], name=f"out_{name}"))
            else:
                self.nodes.append(helper.make_node("Cast", [inner], [name], name=f"cast_out_{name}", to=FLOAT))
                self.stats.casts += 1


def _assemble(model: onnx.ModelProto, nodes: list[onnx.NodeProto], initializers: list[TensorProto]) -> onnx.ModelProto:
    """`model` with the converted nodes and initialisers, marked fp16, checked by onnx.checker."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:], out.graph.initializer[:], out.graph.value_info[:]  # stale float32 value types
    out.graph.node.extend(nodes)
    out.graph.initializer.extend(initializers)
    helper.set_model_props(out, {**{p.key: p.value for p in model.metadata_props}, "ks_precision": "fp16"})
    try:
        onnx.checker.check_model(out, full_check=True)
    except Exception as error:  # ValidationError / InferenceError
        raise ExportError(f"fp16: the converted graph fails onnx.checker ({type(error).__name__}: {error})") from None
    return out


def _retype_attributes(node: onnx.NodeProto, stats: Fp16Conversion) -> None:
    """float32 constants and Cast targets inside a node become float16."""
    for attr in node.attribute:
        if node.op_type == "Cast" and attr.name == "to" and attr.i == FLOAT:
            attr.i = HALF
        elif node.op_type in ("Constant", "ConstantOfShape") and attr.name == "value" and attr.t.data_type == FLOAT:
            attr.t.CopyFrom(_half_tensor(attr.t, stats))
        elif node.op_type == "Constant" and attr.name in ("value_float", "value_floats"):
            values = np.asarray(attr.f if attr.name == "value_float" else list(attr.floats), np.float32)
            half, clamped = half_array(values)
            stats.clamped += clamped
            node.attribute.remove(attr)
            node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(half)))
            return


def convert_file(fp32_path: Path, fp16_path: Path, block: Sequence[str] = DEFAULT_BLOCK) -> Fp16Conversion:
    """Write the float16 variant of an ONNX file; returns what was converted (for the manifest)."""
    model, stats = to_float16(onnx.load(str(fp32_path)), block)
    onnx.save(model, str(fp16_path))
    log.info(
        "%s: %d initialisers in float16, %d values clamped, %d casts",
        fp16_path.name,
        stats.initializers,
        stats.clamped,
        stats.casts,
    )
    return stats


# --- verification against FP32 on the CPU ----------------------------------------------------------------------


@dataclass(frozen=True)
class Fp16Row:
    """The comparisons of an FP16 graph with its FP32 graph on one kind of input, for one output: the max errors
    over them, and whether all passed (`failure`: the report line of the first that did not)."""

    graph: str
    inputs: str
    output: str
    max_abs: float
    max_rel: float
    tolerance: Tolerance | None  # None: reported, not judged (logits; only the probabilities are judged)
    ok: bool = True
    failure: str = ""


@dataclass
class Fp16Report:
    rows: list[Fp16Row] = field(default_factory=list)
    provider: str = "CPUExecutionProvider"

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    def add(
        self,
        graph: str,
        inputs: str,
        output: str,
        actual: np.ndarray,
        reference: np.ndarray,
        tolerance: Tolerance | None,
    ) -> None:
        """Record one comparison, merged (max errors) into the row of the same graph, inputs and output."""
        parity = compare(output, actual, reference, tolerance)
        row = Fp16Row(
            graph,
            inputs,
            output,
            parity.max_abs,
            parity.max_rel,
            tolerance,
            parity.ok,
            "" if parity.ok else parity.report(),
        )
        for i, old in enumerate(self.rows):
            if (old.graph, old.inputs, old.output) == (graph, inputs, output):
                self.rows[i] = Fp16Row(
                    graph,
                    inputs,
                    output,
                    max(old.max_abs, row.max_abs),
                    max(old.max_rel, row.max_rel),
                    tolerance,
                    old.ok and row.ok,
                    old.failure or row.failure,
                )
                return
        self.rows.append(row)

    def worst(self, graph_prefix: str) -> float:
        """The largest judged error of the graphs whose name starts with `graph_prefix` ("encoder_fp16")."""
        return max(
            (r.max_abs for r in self.rows if r.graph.startswith(graph_prefix) and r.tolerance is not None), default=0.0
        )

    def table(self) -> str:
        lines = [f"{'graph':<26}{'inputs':<10}{'output':<16}{'max abs':>10}{'max rel':>10}  result"]
        for r in self.rows:
            result = "info" if r.tolerance is None else ("ok" if r.ok else f"FAIL ({r.tolerance})")
            lines.append(f"{r.graph:<26}{r.inputs:<10}{r.output:<16}{r.max_abs:>10.1e}{r.max_rel:>10.1e}  {result}")
        lines.append(
            f"FP16 against FP32, both in onnxruntime ({self.provider}); probabilities judged at "
            f"{FP16_PROB_TOL:.0e} absolute; {'PASS' if self.ok else 'FAIL'}"
        )
        lines += [f"  {r.graph} on {r.inputs} inputs: {r.failure}" for r in self.rows if r.failure]
        return "\n".join(lines)

    def summary(self) -> dict:
        return {
            "provider": self.provider,
            "tolerance": {"probs_abs": FP16_PROB_TOL},
            "passed": self.ok,
            "rows": [
                {
                    "graph": r.graph,
                    "inputs": r.inputs,
                    "output": r.output,
                    "max_abs": r.max_abs,
                    "max_rel": r.max_rel,
                    "judged": r.tolerance is not None,
                }
                for r in self.rows
            ],
        }


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def verify_fp16(
    paths: dict[str, Path], fp16_paths: dict[str, Path], real_frames: np.ndarray, clip_len: int, seed: int = 0
) -> Fp16Report:
    """Run the FP16 encoder and head beside the FP32 ones in onnxruntime on the CPU, on random and real inputs.

    real_frames: preprocessed frames [N, 3, S, S], N >= clip_len + 1, consecutive frames of one video.
    Judged at every key slot: the head's probabilities (FP16 head on FP32 inputs), the whole FP16 encoder ->
    FP16 head chain, the FP16 clip graph when given, and sigmoid(S_a); the encoder's logits are reported.
    """
    n, report = clip_len, Fp16Report()
    rng = np.random.default_rng(seed)
    run = _sessions(paths, fp16_paths)
    real = np.ascontiguousarray(real_frames, np.float32)
    clips = np.stack([real[0:n], real[1 : n + 1]]).reshape(2 * n, *real.shape[1:])  # two clips, (2n, 3, S, S)
    (sa, students), (sa16, students16) = _compare_encoders(run, report, rng, clips)
    heads = {
        "fp32": (sa.reshape(2, n, -1), students.reshape(2, n, n, -1)),  # (2, n, U), (2, n, n, U)
        "fp16": (sa16.reshape(2, n, -1), students16.reshape(2, n, n, -1)),
    }
    for slot in range(n):
        _compare_heads(run, report, rng, heads, slot)
        if "clip" in fp16_paths:
            _compare_clips(run, report, rng, clips.reshape(2, n, *real.shape[1:]), slot)  # (2, n, 3, S, S)
    return report


def _sessions(paths: dict[str, Path], fp16_paths: dict[str, Path]) -> dict[str, Callable]:
    """The `run` of an onnxruntime session per graph: "fp32_encoder", ..., "fp16_clip"."""
    return {
        key: open_session(p).run
        for key, p in [
            *(("fp32_" + r, p) for r, p in paths.items()),
            *(("fp16_" + r, p) for r, p in fp16_paths.items()),
        ]
    }


def _compare_encoders(
    run: dict[str, Callable], report: Fp16Report, rng: np.random.Generator, clips: np.ndarray
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The FP16 encoder against the FP32 one on random frames, then on `clips`: the logits reported,
    sigmoid(S_a) judged. Returns the FP32 and the FP16 outputs on `clips` ((S_a, student logits) each)."""
    noise = rng.standard_normal((3, *clips.shape[1:])).astype(np.float32)
    encoded = {}
    for label, frames in (("random", noise), ("SynthAU", clips)):
        ref = run["fp32_encoder"](None, {FRAMES: frames})
        got = run["fp16_encoder"](None, {FRAMES: frames})
        for name, a, r in zip((SA_LOGITS, STUDENT_LOGITS), got, ref, strict=True):
            report.add("encoder_fp16", label, name, a, r, None)
        report.add("encoder_fp16", label, "sigmoid(sa)", _sigmoid(got[0]), _sigmoid(ref[0]), FP16_TOLERANCE)
        encoded[label] = (ref, got)
    return encoded["SynthAU"]


def _compare_heads(
    run: dict[str, Callable],
    report: Fp16Report,
    rng: np.random.Generator,
    heads: dict[str, tuple[np.ndarray, np.ndarray]],
    slot: int,
) -> None:
    """At key slot `slot`, judged on the probabilities: the FP16 head against the FP32 one on random logits and
    on the FP32 encoder's, and the FP16 encoder -> FP16 head chain against the FP32 one."""
    (_, n, u), slots = heads["fp32"][0].shape, np.full(2, slot, np.int64)
    random_feeds = {
        SA_LOGITS: (2 * rng.standard_normal((3, n, u))).astype(np.float32),
        STUDENT_LOGITS: (2 * rng.standard_normal((3, n, n, u))).astype(np.float32),
        KEY_SLOT: np.full(3, slot, np.int64),
    }
    report.add(
        "head_fp16",
        "random",
        "probs",
        run["fp16_head"](None, random_feeds)[0],
        run["fp32_head"](None, random_feeds)[0],
        FP16_TOLERANCE,
    )
    feeds32 = {SA_LOGITS: heads["fp32"][0], STUDENT_LOGITS: heads["fp32"][1], KEY_SLOT: slots}
    feeds16 = {SA_LOGITS: heads["fp16"][0], STUDENT_LOGITS: heads["fp16"][1], KEY_SLOT: slots}
    reference = run["fp32_head"](None, feeds32)[0]
    report.add("head_fp16", "SynthAU", "probs", run["fp16_head"](None, feeds32)[0], reference, FP16_TOLERANCE)
    report.add(
        "encoder_fp16->head_fp16", "SynthAU", "probs", run["fp16_head"](None, feeds16)[0], reference, FP16_TOLERANCE
    )


def _compare_clips(
    run: dict[str, Callable], report: Fp16Report, rng: np.random.Generator, clips: np.ndarray, slot: int
) -> None:
    """At key slot `slot`, the FP16 clip graph against the FP32 one on random clips and on `clips` (2, n, 3, S, S)."""
    slots = np.full(2, slot, np.int64)
    clip_feeds = [
        ("random", {CLIPS: rng.standard_normal(clips.shape).astype(np.float32)}),
        ("SynthAU", {CLIPS: clips}),
    ]
    for label, feeds in clip_feeds:
        feeds = {**feeds, KEY_SLOT: slots}
        report.add(
            "clip_fp16",
            label,
            "probs",
            run["fp16_clip"](None, feeds)[0],
            run["fp32_clip"](None, feeds)[0],
            FP16_TOLERANCE,
        )
