"""ks_export/flops.py: FLOPs (2 x multiply-adds) of hand-built ONNX graphs against counts worked out by hand."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from ks_export.flops import count_flops, einsum_macs, fix_input_shapes


def model_of(nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def weight(name, *shape):
    return numpy_helper.from_array(np.zeros(shape, np.float32), name)


def value(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def conv_model(batch="batch"):
    """x [B, 3, 8, 8] -> Conv 4x3x3x3, pad 1 -> [B, 4, 8, 8] -> Relu -> Conv 6x2x3x3, group 2, stride 2
    -> [B, 6, 4, 4]."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2], group=2),
    ]
    return model_of(
        nodes,
        [value("x", [batch, 3, 8, 8])],
        [value("y", None)],
        [weight("w1", 4, 3, 3, 3), weight("b1", 4), weight("w2", 6, 2, 3, 3)],
    )


def test_conv_by_hand():
    # conv 1: 4 x 8 x 8 outputs, each 3 x 3 x 3 = 27 MACs -> 6912 MACs; conv 2: 6 x 4 x 4 outputs, each
    # (4 / 2) x 3 x 3 = 18 MACs -> 1728 MACs. FLOPs = 2 x (6912 + 1728) = 17280 per image; Relu is not counted.
    count = count_flops(conv_model())
    assert count.total == 17280
    assert count.by_op == {"Conv": 17280}
    assert count.nodes == 2 and count.unresolved == ()
    assert count_flops(conv_model(), shapes={"x": [3, 3, 8, 8]}).total == 3 * 17280
    assert count_flops(conv_model(), default_dim=5).total == 5 * 17280
    assert count_flops(conv_model(batch=2)).total == 2 * 17280  # a fixed batch stays as the graph says


def test_matmul_gemm_einsum_by_hand():
    # MatMul [2, 5, 6] x [6, 7] -> [2, 5, 7]: 70 outputs x 6 = 420 MACs.
    # Gemm [2*5, 7] x B^T with B [3, 7] (transB) -> [10, 3]: 30 outputs x 7 = 210 MACs.
    # Einsum "bd,ndh->bnh" with b=10, d=3, n=4, h=2: 10 x 3 x 4 x 2 = 240 MACs.
    nodes = [
        helper.make_node("MatMul", ["a", "m"], ["mm"]),
        helper.make_node("Reshape", ["mm", "flat"], ["mm2"]),
        helper.make_node("Gemm", ["mm2", "g"], ["gm"], transB=1),
        helper.make_node("Einsum", ["gm", "e"], ["y"], equation="bd,ndh->bnh"),
    ]
    inits = [
        weight("m", 6, 7),
        numpy_helper.from_array(np.array([-1, 7], np.int64), "flat"),
        weight("g", 3, 7),
        weight("e", 4, 3, 2),
    ]
    count = count_flops(
        model_of(nodes, [value("a", ["batch", 5, 6])], [value("y", None)], inits), shapes={"a": [2, 5, 6]}
    )
    assert count.by_op == {"MatMul": 840, "Gemm": 420, "Einsum": 480}
    assert count.total == 2 * (420 + 210 + 240)
    assert count.unresolved == ()


def test_einsum_forms():
    assert einsum_macs("ij,jk->ik", [[2, 3], [3, 4]]) == 24
    assert einsum_macs("...ij,jk->...ik", [[5, 2, 3], [3, 4]]) == 5 * 24
    assert einsum_macs("ij->ji", [[2, 3]]) == 0  # a permutation multiplies nothing
    with pytest.raises(ValueError, match="operand"):
        einsum_macs("ij,jk->ik", [[2, 3, 1], [3, 4]])


def test_unknown_shapes_are_reported_not_guessed():
    # A MatMul whose second operand is a graph input of unknown rank cannot be counted.
    nodes = [helper.make_node("MatMul", ["a", "b"], ["y"])]
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, None)
    count = count_flops(model_of(nodes, [value("a", [2, 3]), b], [value("y", None)]))
    assert count.total == 0 and len(count.unresolved) == 1


def test_fix_input_shapes_checks_names_and_ranks():
    with pytest.raises(ValueError, match="unknown inputs"):
        fix_input_shapes(conv_model(), {"frames": [1, 3, 8, 8]})
    with pytest.raises(ValueError, match="rank"):
        fix_input_shapes(conv_model(), {"x": [1, 3, 8]})
    fixed = fix_input_shapes(conv_model(), {"x": [7, 3, 8, 8]})
    assert [d.dim_value for d in fixed.graph.input[0].type.tensor_type.shape.dim] == [7, 3, 8, 8]
    assert count_flops(fixed).total == 7 * 17280
