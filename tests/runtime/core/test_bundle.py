"""The manifest reader (ks_runtime/core/bundle.py) and the onnxruntime graphs (ks_runtime/engine/ort_graphs.py), on a
toy bundle built here from hand-written ONNX graphs whose maths numpy can redo (no torch, no export)."""

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ks_runtime.core import bundle as B
from ks_runtime.core.errors import BundleError
from ks_runtime.core.policy import POLICIES, clips_for_frame
from ks_runtime.core.preprocess import Preprocess, to_network_input
from ks_runtime.engine.ort_graphs import BundleGraphs

N, U, S = 3, 2, 8
W_SA = np.array([1.5, -2.0], np.float32)  # sa_logits = mean(frame) * W_SA
W_ST = np.arange(N * U, dtype=np.float32).reshape(N, U) / 4 - 0.5  # student_logits = mean(frame) * W_ST


# --- numpy reference of the toy model ----------------------------------------------------------------------
def ref_encode(frames):
    x = frames.mean((1, 2, 3))
    return x[:, None] * W_SA, x[:, None, None] * W_ST


def ref_head(sa, students, key_slot):
    key = sa[np.arange(len(sa)), key_slot]
    return 1 / (1 + np.exp(-(key + students.mean((1, 2)))))


# --- the toy graphs ---------------------------------------------------------------------------------------------
def const(name, array):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(array), name))


def head_nodes(sa, students, key_slot, prefix=""):
    p = prefix
    return [
        const(p + "depth", np.array(N, np.int64)),
        const(p + "onoff", np.array([0, 1], np.float32)),
        helper.make_node("OneHot", [key_slot, p + "depth", p + "onoff"], [p + "onehot"], axis=-1),  # (B, n)
        const(p + "ax2", np.array([2], np.int64)),
        helper.make_node("Unsqueeze", [p + "onehot", p + "ax2"], [p + "onehot3"]),
        helper.make_node("Mul", [sa, p + "onehot3"], [p + "masked"]),
        const(p + "ax1", np.array([1], np.int64)),
        helper.make_node("ReduceSum", [p + "masked", p + "ax1"], [p + "key"], keepdims=0),
        const(p + "ax12", np.array([1, 2], np.int64)),
        helper.make_node("ReduceMean", [students, p + "ax12"], [p + "smean"], keepdims=0),
        helper.make_node("Add", [p + "key", p + "smean"], [p + "logit"]),
        helper.make_node("Sigmoid", [p + "logit"], [B.PROBS]),
    ]


def encoder_nodes(x_axes, sa_axes, st_axes, source):
    return [
        const("xaxes", np.array(x_axes, np.int64)),
        helper.make_node("ReduceMean", [source, "xaxes"], ["x"], keepdims=0),
        const("sa_axes", np.array(sa_axes, np.int64)),
        const("st_axes", np.array(st_axes, np.int64)),
        helper.make_node("Unsqueeze", ["x", "sa_axes"], ["x_sa"]),
        helper.make_node("Unsqueeze", ["x", "st_axes"], ["x_st"]),
        const("w_sa", W_SA),
        const("w_st", W_ST),
        helper.make_node("Mul", ["x_sa", "w_sa"], ["sa"]),
        helper.make_node("Mul", ["x_st", "w_st"], ["st"]),
    ]


def value(spec, batch="B"):
    dtype = TensorProto.FLOAT if spec.dtype == "float32" else TensorProto.INT64
    return helper.make_tensor_value_info(spec.name, dtype, [batch if d == B.BATCH else d for d in spec.shape])


def save(path, nodes, spec, opset, batch="B"):
    graph = helper.make_graph(
        nodes, path.stem, [value(t, batch) for t in spec.inputs], [value(t, batch) for t in spec.outputs]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    if opset <= onnx.defs.onnx_opset_version():
        onnx.checker.check_model(model)
    onnx.save(model, path)


def write_toy_bundle(root, opset=18, encoder_batch="B"):
    root.mkdir(parents=True, exist_ok=True)
    specs = B.graph_specs(N, U, S)
    enc = encoder_nodes([1, 2, 3], [1], [1, 2], B.FRAMES)
    enc += [
        helper.make_node("Identity", ["sa"], [B.SA_LOGITS]),
        helper.make_node("Identity", ["st"], [B.STUDENT_LOGITS]),
    ]
    save(root / "encoder.onnx", enc, specs["encoder"], opset, encoder_batch)
    save(root / "head.onnx", head_nodes(B.SA_LOGITS, B.STUDENT_LOGITS, B.KEY_SLOT), specs["head"], opset)
    clip = encoder_nodes([2, 3, 4], [2], [2, 3], B.CLIPS) + head_nodes("sa", "st", B.KEY_SLOT, "h_")
    save(root / "clip.onnx", clip, specs["clip"], opset)
    shutil.copyfile(root / "encoder.onnx", root / "encoder.int8.onnx")
    manifest = {
        "format": B.FORMAT,
        "format_version": 1,  # an adjacent-frame bundle: no model.clip_stride, no alignment.template (REQUIRED_SINCE)
        "model": {
            "method": "ks",
            "au_set": "custom",
            "au_columns": ["AU01", "AU02"],
            "au_names": ["a", "b"],
            "n_aus": U,
            "clip_len": N,
            "fusion": "mean",
        },
        "thresholds": [0.5, 0.5],
        "policy": {"default": "last"},
        "preprocess": Preprocess(size=S).to_dict(),
        "alignment": {},
        "opset": opset,
        "graphs": {r: s.to_dict() for r, s in specs.items()},
        "variants": {B.ENCODER_INT8: {"file": "encoder.int8.onnx", "graph": "encoder", "precision": "int8"}},
        "producer": {"package": "test", "version": "0"},
    }
    manifest["files"] = {p.name: B.sha256_file(p) for p in sorted(root.glob("*.onnx"))}
    (root / B.MANIFEST).write_text(json.dumps(manifest))
    return root


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy_bundle(tmp_path_factory.mktemp("toy") / "bundle")


@pytest.fixture()
def copy(toy, tmp_path):
    return shutil.copytree(toy, tmp_path / "bundle")


def edit_manifest(root, change):
    data = json.loads((root / B.MANIFEST).read_text())
    change(data)
    (root / B.MANIFEST).write_text(json.dumps(data))


# --- reader ---------------------------------------------------------------------------------------------------
def test_reader_reads_the_toy_bundle(toy):
    m = B.read_manifest(toy)
    assert m.au_columns == ("AU01", "AU02") and m.clip_len == N and m.preprocess.size == S
    assert m.clip_stride == 1  # a manifest without model.clip_stride (bundles before it) streams adjacent frames
    assert m.graphs == B.graph_specs(N, U, S)
    assert m.path(B.ENCODER_INT8) == toy / "encoder.int8.onnx" and m.graph_of(B.ENCODER_INT8) == "encoder"
    with pytest.raises(BundleError, match="no graph or variant 'fp16'"):
        m.path("fp16")


def test_graph_specs_name_every_tensor_with_a_dynamic_batch():
    specs = B.graph_specs(5, 12, 64)
    assert [t.name for t in specs["encoder"].inputs] == ["frames"]
    assert specs["head"].inputs[1].shape == ("B", 5, 5, 12)
    assert specs["clip"].inputs[0].shape == ("B", 5, 3, 64, 64) and specs["clip"].inputs[1].dtype == "int64"
    assert all(t.shape[0] == "B" for s in specs.values() for t in (*s.inputs, *s.outputs))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.update(format_version=3), "field 'format_version' is 3; this runtime reads versions 1, 2"),
        (lambda d: d["model"].pop("clip_len"), "missing field 'model.clip_len'"),
        (lambda d: d.pop("producer"), "missing field 'producer'"),
        (lambda d: d["model"].update(n_aus=3), "field 'model.n_aus' is 3"),
        (lambda d: d["graphs"]["head"]["inputs"][0].update(shape=["B", 4, 2]), "field 'graphs.head.inputs'"),
        (lambda d: d["variants"][B.ENCODER_INT8].pop("graph"), "field 'variants.encoder_int8'"),
        (lambda d: d["files"].update({"encoder.onnx": "0" * 64}), "field 'files.encoder.onnx'"),
        (lambda d: d["files"].update({"../x": "0" * 64}), "field 'files.../x'"),
        (lambda d: d["policy"].update(default="sometimes"), "field 'policy.default'"),
        (lambda d: d.update(format="zip"), "field 'format'"),
        (lambda d: d["model"].update(clip_stride=0), "field 'model.clip_stride' must be >= 1"),
        (lambda d: d["model"].update(clip_stride="2"), "field 'model.clip_stride' should be int"),
        (
            lambda d: d.update(format_version=1) or d["model"].update(clip_stride=2),
            "field 'model.clip_stride' is 2 in a version 1 manifest",
        ),
    ],
)
def test_reader_names_the_field_that_is_wrong(copy, change, message):
    edit_manifest(copy, change)
    with pytest.raises(BundleError, match=message.replace(".", r"\.").replace("(", r"\(")) as info:
        B.read_manifest(copy)
    assert str(copy) in str(info.value)  # the file: manifest.json, or the one whose hash is wrong


def test_reader_names_a_truncated_file(copy):
    data = (copy / "head.onnx").read_bytes()
    (copy / "head.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match=r"head\.onnx: sha256 .* field 'files\.head\.onnx'"):
        B.read_manifest(copy)
    (copy / "head.onnx").unlink()
    with pytest.raises(BundleError, match=r"head\.onnx: missing"):
        B.read_manifest(copy)


# --- onnxruntime graphs ------------------------------------------------------------------------------------------
def test_graphs_compute_what_the_reference_computes_at_any_batch(toy):
    graphs = BundleGraphs(toy)
    rng = np.random.default_rng(0)
    for batch in (1, 3):
        frames = rng.normal(size=(batch, 3, S, S)).astype(np.float32)
        for got, want in zip(graphs.encode(frames), ref_encode(frames), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        sa = rng.normal(size=(batch, N, U)).astype(np.float32)
        st = rng.normal(size=(batch, N, N, U)).astype(np.float32)
        slots = rng.integers(0, N, batch)
        np.testing.assert_allclose(graphs.head(sa, st, slots), ref_head(sa, st, slots), rtol=1e-5, atol=1e-6)


def test_encoder_then_head_equals_clip_at_every_key_slot(toy):
    graphs = BundleGraphs(toy)
    clips = np.random.default_rng(1).normal(size=(N, N, 3, S, S)).astype(np.float32)
    slots = np.arange(N)
    sa, st = graphs.encode(clips.reshape(-1, 3, S, S))
    composed = graphs.head(sa.reshape(N, N, U), st.reshape(N, N, N, U), slots)
    np.testing.assert_allclose(composed, graphs.clip(clips, slots), atol=1e-6)


@pytest.mark.parametrize("policy", POLICIES)
def test_dense_probabilities_follow_the_shared_policy(toy, policy):
    graphs = BundleGraphs(toy, roles=("encoder", "head"))
    frames = np.random.default_rng(2).integers(0, 256, (7, 12, 12, 3), dtype=np.uint8)  # resized to S
    got = graphs.dense_probabilities(frames, policy, batch_size=3, head_batch=4)
    sa, st = ref_encode(to_network_input(frames, Preprocess(size=S)))

    def scored(clip):  # the reference head on one clip, from the per-frame reference outputs
        index = list(clip.frames)
        return ref_head(sa[index][None], st[index][None], np.array([clip.key_slot]))[0]

    want = np.stack(
        [np.mean([scored(c) for c in clips_for_frame(t, len(frames), N, policy)], axis=0) for t in range(len(frames))]
    )
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert got.shape == (7, U)


def test_the_int8_variant_runs_in_the_encoders_place(toy):
    graphs = BundleGraphs(toy, roles=("encoder", "head"), encoder_variant=B.ENCODER_INT8)
    assert graphs.files["encoder"].name == "encoder.int8.onnx"
    with pytest.raises(BundleError, match="the clip graph was not opened"):
        graphs.clip(np.zeros((1, N, 3, S, S), np.float32), np.zeros(1, np.int64))


def rehash(root, name):
    """Record a file's new sha256 in the manifest, as a re-hashed bundle would."""
    edit_manifest(root, lambda data: data["files"].update({name: B.sha256_file(root / name)}))


def test_a_corrupt_graph_is_named_when_opened(copy):
    (copy / "encoder.onnx").write_bytes(
        b"\x08\x07"
    )  # protobuf (ir_version 7), not a model: hashes pass, onnxruntime fails
    rehash(copy, "encoder.onnx")
    with pytest.raises(BundleError, match=r"encoder\.onnx: onnxruntime .* cannot load"):
        BundleGraphs(copy)
    (copy / "encoder.onnx").write_bytes((copy / "head.onnx").read_bytes()[:100])  # truncated: the reader says so
    rehash(copy, "encoder.onnx")
    with pytest.raises(BundleError, match=r"encoder\.onnx: not an ONNX file"):
        B.read_manifest(copy)


def test_an_opset_onnxruntime_cannot_run_names_the_file_and_field(tmp_path):
    root = write_toy_bundle(tmp_path / "bundle", opset=99)
    with pytest.raises(BundleError, match=r"encoder\.onnx: field 'opset' is 99: onnxruntime"):
        BundleGraphs(root)


def test_a_fixed_batch_where_the_manifest_says_B_is_refused(tmp_path):
    root = write_toy_bundle(tmp_path / "bundle", encoder_batch=4)
    with pytest.raises(BundleError, match=r"encoder\.onnx: input 'frames' has shape \[4, 3, 8, 8\]"):
        BundleGraphs(root)


def test_check_io_names_a_wrong_tensor(toy):
    m = B.read_manifest(toy)
    with pytest.raises(BundleError, match="input names"):
        B.check_io(m, "head", [("sa", ["B", N, U])], [("probs", ["B", U])])
    with pytest.raises(BundleError, match="is float32, manifest.json says int64"):
        B.check_io(
            m,
            "clip",
            [("clips", ["B", N, 3, S, S], "float32"), ("key_slot", ["B"], "float32")],
            [("probs", ["B", U], "float32")],
        )


def test_adjacent_bundles_stay_version_1_and_strided_ones_are_version_2(bundle, strided_bundle):
    """A runtime that predates strides reads version 1 only: it can still stream an adjacent-frame bundle, and
    refuses a strided one instead of streaming it with adjacent frames."""
    adjacent, strided = B.read_manifest(bundle), B.read_manifest(strided_bundle)
    assert (adjacent.raw["format_version"], adjacent.clip_stride) == (1, 1)
    assert "clip_stride" in adjacent.raw["model"]
    assert (strided.raw["format_version"], strided.clip_stride) == (2, 2)


# --- the INT8 check's fields ---------------------------------------------------------------------------------------
def with_check(root):
    """The toy bundle with check frames and a check record on its INT8 variant, as ks-export writes them."""
    np.save(root / B.CHECK_FRAMES, np.zeros((4, S, S, 3), np.uint8))

    def add(data):
        data["check_frames"] = {"file": B.CHECK_FRAMES, "count": 4}
        data["variants"][B.ENCODER_INT8]["check"] = {
            "frames": B.CHECK_FRAMES,
            "policy": "last",
            "max_abs_probs": 0.02,
            "tolerance": 0.07,
        }
        data["files"][B.CHECK_FRAMES] = B.sha256_file(root / B.CHECK_FRAMES)

    edit_manifest(root, add)
    return root


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["files"].pop(B.CHECK_FRAMES), "field 'files' has no sha256 for check_frames.npy"),
        (lambda d: d.pop("check_frames"), "field 'variants.encoder_int8.check.frames' names 'check_frames.npy'"),
        (lambda d: d["check_frames"].pop("count"), "missing field 'check_frames.count'"),
        (lambda d: d["variants"][B.ENCODER_INT8]["check"].pop("tolerance"), "'variants.encoder_int8.check.tolerance'"),
        (
            lambda d: d["variants"][B.ENCODER_INT8]["check"].update(tolerance=1.5),
            "field 'variants.encoder_int8.check.tolerance' should be a probability",
        ),
        (
            lambda d: d["variants"][B.ENCODER_INT8]["check"].update(policy="sometimes"),
            "field 'variants.encoder_int8.check.policy' is 'sometimes'",
        ),
    ],
)
def test_reader_names_a_wrong_int8_check_field(copy, change, message):
    B.read_manifest(with_check(copy))  # as written: read
    edit_manifest(copy, change)
    with pytest.raises(BundleError, match=message.replace(".", r"\.")) as info:
        B.read_manifest(copy)
    assert str(copy) in str(info.value)


def test_a_changed_check_frames_file_is_refused_by_its_hash(copy):
    with_check(copy)
    np.save(copy / B.CHECK_FRAMES, np.ones((4, S, S, 3), np.uint8))
    with pytest.raises(BundleError, match=r"check_frames\.npy: sha256 .* field 'files\.check_frames\.npy'"):
        B.read_manifest(copy)
