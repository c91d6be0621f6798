"""FLOPs of an ONNX graph, counted from its nodes: 2 x the multiply-adds of Conv, ConvTranspose, Gemm, MatMul and
Einsum (and their integer / QLinear forms).

Shapes come from onnx.shape_inference once the inputs' dynamic dimensions are fixed. Every other op
(elementwise, pooling, normalisation, softmax, bias adds) is not counted, as CNN FLOP figures usually do; for the
models here they are well under 1% of the total. Torch-free: benchmarks and the runtime's tools can use it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

log = logging.getLogger(__name__)

# op type -> (index of the data input, index of the weight / second operand input)
CONV_OPS = {"Conv": (0, 1), "ConvInteger": (0, 1), "QLinearConv": (0, 3)}
MATMUL_OPS = {"MatMul": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3)}
COUNTED_OPS = (*CONV_OPS, "ConvTranspose", "Gemm", *MATMUL_OPS, "Einsum")


@dataclass(frozen=True)
class FlopCount:
    """FLOPs (2 x multiply-adds) of one graph at fixed input shapes, per op type, and the nodes that could not be
    counted because shape inference left a dimension unknown."""

    total: int
    by_op: dict[str, int] = field(default_factory=dict)
    nodes: int = 0
    unresolved: tuple[str, ...] = ()

    @property
    def gflops(self) -> float:
        return self.total / 1e9


def _dims(value: onnx.ValueInfoProto) -> list[int | None]:
    """A value's dimensions; None where unknown or symbolic."""
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        return []
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim]


def fix_input_shapes(
    model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]] | None = None, default_dim: int = 1
) -> onnx.ModelProto:
    """A copy of `model` whose graph inputs have concrete shapes: `shapes[name]` where given, else every symbolic
    or unknown dimension set to `default_dim` (the batch, for our graphs)."""
    shapes = dict(shapes or {})
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    initializers = {i.name for i in fixed.graph.initializer}
    for value in fixed.graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        if value.name in shapes:
            wanted = [int(d) for d in shapes.pop(value.name)]
            if len(wanted) != len(dims):
                raise ValueError(f"input {value.name!r} has rank {len(dims)}, the shape given is {wanted}")
        else:
            wanted = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else default_dim for d in dims]
        for dim, size in zip(dims, wanted, strict=True):
            dim.Clear()
            dim.dim_value = size
    if shapes:
        raise ValueError(
            f"shapes given for unknown inputs {sorted(shapes)}; the graph's inputs are "
            f"{[v.name for v in fixed.graph.input if v.name not in initializers]}"
        )
    return fixed


def _shape_map(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    graph = model.graph
    shapes = {v.name: _dims(v) for v in (*graph.input, *graph.value_info, *graph.output)}
    shapes.update({init.name: list(init.dims) for init in graph.initializer})
    return shapes


def _known(*shapes: list[int | None] | None) -> bool:
    return all(s is not None and len(s) > 0 and all(d is not None for d in s) for s in shapes)


def einsum_macs(equation: str, shapes: Sequence[Sequence[int]]) -> int:
    """Multiply-adds of an Einsum done as one product-and-sum: the product of every index's size (0 for a single
    operand, which only sums or permutes). `...` spans the broadcast of the operands' leading dimensions."""
    inputs = equation.replace(" ", "").split("->")[0].split(",")
    if len(inputs) != len(shapes):
        raise ValueError(f"einsum {equation!r}: {len(inputs)} operands in the equation, {len(shapes)} given")
    if len(inputs) < 2:
        return 0
    sizes: dict[str, int] = {}
    ellipsis: list[int] = []
    for term, shape in zip(inputs, shapes, strict=True):
        letters = term.replace("...", "")
        if "..." in term:
            span = len(shape) - len(letters)
            before = term.index("...")
            ell = list(shape[before : before + span])
            shape = [*shape[:before], *shape[before + span :]]
            ellipsis = list(np.broadcast_shapes(tuple(ellipsis), tuple(ell)))
        if len(letters) != len(shape):
            raise ValueError(f"einsum {equation!r}: operand {term!r} against shape {list(shape)}")
        for letter, size in zip(letters, shape, strict=True):
            sizes[letter] = max(sizes.get(letter, 1), int(size))  # broadcasting: 1 against n is n
    return int(np.prod(list(sizes.values()), dtype=np.int64) * np.prod(ellipsis, dtype=np.int64))


def node_macs(node: onnx.NodeProto, shapes: Mapping[str, list[int | None]]) -> int | None:
    """Multiply-adds of one node, or None when a shape it needs is unknown; 0 for ops that are not counted."""

    def shape(index: int) -> list[int | None] | None:
        return shapes.get(node.input[index]) if index < len(node.input) and node.input[index] else None

    out = shapes.get(node.output[0]) if node.output else None
    op = node.op_type
    if op in CONV_OPS:  # each output element: (C_in / group) x kernel multiply-adds
        weight = shape(CONV_OPS[op][1])
        return int(np.prod(out) * np.prod(weight[1:])) if _known(out, weight) else None
    if op == "ConvTranspose":  # each input element spreads over C_out / group x kernel outputs
        x, weight = shape(0), shape(1)
        return int(np.prod(x) * np.prod(weight[1:])) if _known(x, weight) else None
    if op == "Gemm":
        a = shape(0)
        trans_a = next((attr.i for attr in node.attribute if attr.name == "transA"), 0)
        if not _known(out, a):
            return None
        return int(np.prod(out) * a[0 if trans_a else 1])
    if op in MATMUL_OPS:
        a = shape(MATMUL_OPS[op][0])
        if not _known(out, a):
            return None
        return int(np.prod(out) * a[-1])  # out covers the broadcast batch; a 1-D `a` is [K]
    if op == "Einsum":
        operands = [shape(i) for i in range(len(node.input))]
        if not _known(*operands):
            return None
        equation = next(attr.s.decode() for attr in node.attribute if attr.name == "equation")
        return einsum_macs(equation, operands)
    return 0


def count_flops(
    model: onnx.ModelProto | Path | str, shapes: Mapping[str, Sequence[int]] | None = None, default_dim: int = 1
) -> FlopCount:
    """FLOPs (2 x multiply-adds) of the graph's counted ops at the given input shapes.

    shapes: input name -> concrete shape; inputs not named get every dynamic dimension set to `default_dim`.
    Nodes inside subgraphs (If, Loop) are not visited.
    """
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    fixed = fix_input_shapes(model, shapes, default_dim)
    inferred = onnx.shape_inference.infer_shapes(fixed, data_prop=True)
    known = _shape_map(inferred)
    total, by_op, counted, unresolved = 0, {}, 0, []
    for node in inferred.graph.node:
        if node.op_type not in COUNTED_OPS:
            continue
        macs = node_macs(node, known)
        if macs is None:
            unresolved.append(node.name or f"{node.op_type}->{node.output[0]}")
            continue
        counted += 1
        by_op[node.op_type] = by_op.get(node.op_type, 0) + 2 * macs
        total += 2 * macs
    if unresolved:
        log.warning(
            "%d %s node(s) left uncounted: shape inference could not give their shapes (%s ...)",
            len(unresolved),
            "/".join(COUNTED_OPS),
            ", ".join(unresolved[:3]),
        )
    return FlopCount(total, by_op, counted, tuple(unresolved))
