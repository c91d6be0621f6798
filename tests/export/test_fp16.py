"""ks_export/fp16.py: the FP16 converter on small hand-built graphs, and the bundle's graphs in FP16 verified
against FP32 in onnxruntime on the CPU (where the verification must also be able to fail)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from ks_export import ExportError
from ks_export.fp16 import FP16_MAX, FP16_PROB_TOL, FP16_TINY, convert_file, half_array, to_float16, verify_fp16
from ks_runtime.core.bundle import read_manifest
from ks_runtime.core.preprocess import to_network_input
from ks_runtime.synth.generate import SynthConfig, generate_sequence

F, H = TensorProto.FLOAT, TensorProto.FLOAT16


def small_model() -> onnx.ModelProto:
    """x [B, 4] float, idx [B] int64 -> y [B, 4]: Constant scale, MatMul, LayerNorm, Sigmoid, and a bool -> float
    Cast (as the head's one-hot of the key slot); two weights outside float16's range."""
    w = np.arange(16, dtype=np.float32).reshape(4, 4) / 10
    w[0, 0], w[1, 1] = 1e6, 1e-9  # clamped to 65504 and to float16's smallest subnormal
    nodes = [
        helper.make_node("Constant", [], ["two"], value_float=2.0),
        helper.make_node("Mul", ["x", "two"], ["x2"]),
        helper.make_node("MatMul", ["x2", "w"], ["h"]),
        helper.make_node("LayerNormalization", ["h", "scale", "bias"], ["n"], axis=-1, epsilon=1e-5),
        helper.make_node("Sigmoid", ["n"], ["s"]),
        helper.make_node("Equal", ["idx", "zero"], ["is0"]),
        helper.make_node("Cast", ["is0"], ["is0f"], to=F),
        helper.make_node("Unsqueeze", ["is0f", "axis1"], ["is0f2"]),
        helper.make_node("Add", ["s", "is0f2"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(np.full(4, 0.5, np.float32), "scale"),
        numpy_helper.from_array(np.zeros(4, np.float32), "bias"),
        numpy_helper.from_array(np.int64(0), "zero"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
    ]
    graph = helper.make_graph(
        nodes,
        "small",
        [
            helper.make_tensor_value_info("x", F, ["B", 4]),
            helper.make_tensor_value_info("idx", TensorProto.INT64, ["B"]),
        ],
        [helper.make_tensor_value_info("y", F, ["B", 4])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def run(model: onnx.ModelProto, feeds: dict) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


FEEDS = {
    "x": np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32) * 1e-3,
    "idx": np.array([0, 1, 0], np.int64),
}


def test_half_array_clamps_into_float16_range():
    half, clamped = half_array(np.array([1e6, -1e6, 1e-9, -1e-9, 0.0, 1.5], np.float32))
    assert half.dtype == np.float16 and clamped == 4
    np.testing.assert_array_equal(half.astype(np.float32), [FP16_MAX, -FP16_MAX, FP16_TINY, -FP16_TINY, 0, 1.5])


def test_everything_inside_is_float16_and_the_io_stays_float32():
    model, stats = to_float16(small_model())
    graph = model.graph
    assert [v.type.tensor_type.elem_type for v in (*graph.input, *graph.output)] == [F, TensorProto.INT64, F]
    assert {t.name: t.data_type for t in graph.initializer if t.name in ("w", "scale", "bias")} == dict.fromkeys(
        ("w", "scale", "bias"), H
    )
    casts = {n.output[0]: n.attribute[0].i for n in graph.node if n.op_type == "Cast"}
    assert casts == {"x__fp16": H, "is0f": H, "y": F}  # input up, the graph's own Cast retargeted, output down
    constant = next(n for n in graph.node if n.op_type == "Constant")
    assert constant.attribute[0].name == "value" and constant.attribute[0].t.data_type == H
    assert stats.initializers == 3 and stats.clamped == 2 and stats.casts == 2 and stats.blocked == []
    assert dict(p for p in ((m.key, m.value) for m in model.metadata_props))["ks_precision"] == "fp16"
    np.testing.assert_allclose(run(model, FEEDS), run(small_model(), FEEDS), atol=5e-3)


def test_blocked_ops_compute_in_float32_between_casts():
    model, stats = to_float16(small_model(), block=("LayerNormalization",))
    graph = model.graph
    norm = next(n for n in graph.node if n.op_type == "LayerNormalization")
    assert stats.blocked == [norm.name]
    assert norm.input[0] == "h__fp32" and norm.input[1:] == ["scale", "bias"]  # weights only it uses stay float32
    assert {t.name: t.data_type for t in graph.initializer}["scale"] == F
    after = next(n for n in graph.node if n.op_type == "Sigmoid")
    assert after.input[0] == "n__fp16"
    np.testing.assert_allclose(run(model, FEEDS), run(small_model(), FEEDS), atol=5e-3)


def test_subgraphs_are_refused():
    branch = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["z"])], "b", [], [helper.make_tensor_value_info("z", F, [1])]
    )
    node = helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("c", TensorProto.BOOL, []), helper.make_tensor_value_info("x", F, [1])],
        [helper.make_tensor_value_info("y", F, [1])],
    )
    with pytest.raises(ExportError, match="subgraph"):
        to_float16(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))


@pytest.fixture(scope="module")
def fp16_bundle(bundle, tmp_path_factory):
    """The session bundle's three graphs converted to FP16 beside copies of them, and real frames."""
    m = read_manifest(bundle)
    out = tmp_path_factory.mktemp("fp16")
    paths = {r: bundle / m.graphs[r].file for r in ("encoder", "head", "clip")}
    fp16 = {r: out / f"{r}.fp16.onnx" for r in paths}
    stats = {r: convert_file(paths[r], fp16[r]) for r in paths}
    frames = generate_sequence(
        SynthConfig(size="tiny", image_size=m.preprocess.size, frames=m.clip_len + 1, seed=2), 0, 0
    ).frames
    return m, paths, fp16, stats, to_network_input(frames, m.preprocess)


def test_the_bundle_graphs_in_fp16_agree_with_fp32_on_the_cpu(fp16_bundle):
    m, paths, fp16, stats, real = fp16_bundle
    for role, path in fp16.items():
        model = onnx.load(str(path))
        assert path.stat().st_size < 0.6 * paths[role].stat().st_size
        halves = [t for t in model.graph.initializer if t.data_type == H]
        assert stats[role].initializers == len(halves) > 0
    report = verify_fp16(paths, fp16, real, m.clip_len)
    assert report.ok, report.table()
    graphs = {(r.graph, r.inputs) for r in report.rows}
    assert {("head_fp16", "SynthAU"), ("encoder_fp16->head_fp16", "SynthAU"), ("clip_fp16", "random")} <= graphs
    assert all(r.max_abs <= FP16_PROB_TOL for r in report.rows if r.tolerance is not None)
    assert "PASS" in report.table() and report.summary()["passed"]


def test_fp16_verification_fails_a_wrong_graph(fp16_bundle, tmp_path):
    m, paths, fp16, _, real = fp16_bundle
    model = onnx.load(str(fp16["head"]))
    # Every fp16 weight 1.5x: one weight alone may be one the output hardly reads (a residual TT's fresh head).
    for weight in [t for t in model.graph.initializer if t.data_type == H]:
        scaled = (numpy_helper.to_array(weight) * 1.5).astype(np.float16)
        weight.CopyFrom(numpy_helper.from_array(scaled, weight.name))
    broken = tmp_path / "head.fp16.onnx"
    onnx.save(model, str(broken))
    report = verify_fp16(paths, {**fp16, "head": broken}, real, m.clip_len)
    assert not report.ok and "FAIL" in report.table()
    assert report.worst("head_fp16") > FP16_PROB_TOL
    assert "\n  head_fp16 on random inputs: probs: max abs " in report.table()
    assert "(atol 2e-3, rtol 0) FAIL at [" in report.table()
    assert not report.summary()["passed"]
