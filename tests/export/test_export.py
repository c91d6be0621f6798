"""ks_export end to end on one tiny checkpoint: graphs, parity, verification, errors, INT8, CLI."""

import json
import logging
import re

import numpy as np
import onnx
import pytest
import torch

import ks_export.export as ex
import ks_export.onnx_export as ox
from ks_export import ExportError
from ks_export.cli import main
from ks_export.export import export_bundle, verify_bundle
from ks_export.graphs import HeadGraph, graph_modules, load_ks_checkpoint, random_inputs
from ks_export.onnx_export import (
    DEFAULT_OPSET,
    ExportedGraph,
    check_graph,
    export_module,
    max_ort_opset,
    resolve_opset,
    run_onnx,
    simplify_if_equal,
)
from ks_export.verify import PROB_TOL, verify_graphs
from ks_runtime.core import bundle as B
from ks_runtime.core.errors import BundleError
from ks_runtime.core.policy import dense_clip_indices
from ks_runtime.core.preprocess import to_network_input
from ks_runtime.engine.ort_graphs import BundleGraphs
from ks_runtime.synth.generate import SynthConfig, generate_sequence
from ks_train.data.base import VideoSequence
from ks_train.evaluate import dense_probabilities, encode_sequence
from ks_train.methods import create_method
from tests.checkpoint_edit import with_config


def dims(value):
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def synth_frames(size, count=20):
    return generate_sequence(SynthConfig(size="tiny", image_size=size, frames=count, seed=3), 1, 0).frames


def rewrite_hash(root, name):
    data = json.loads((root / B.MANIFEST).read_text())
    data["files"][name] = B.sha256_file(root / name)
    (root / B.MANIFEST).write_text(json.dumps(data))


# --- the graphs --------------------------------------------------------------------------------------------------
def test_graphs_carry_the_manifest_names_shapes_and_a_dynamic_batch(bundle):
    m = B.read_manifest(bundle)
    for role, spec in B.graph_specs(m.clip_len, m.n_aus, m.preprocess.size).items():
        model = onnx.load(bundle / spec.file)
        for values, tensors in ((model.graph.input, spec.inputs), (model.graph.output, spec.outputs)):
            assert [v.name for v in values] == [t.name for t in tensors], role
            for v, t in zip(values, tensors, strict=True):
                assert isinstance(dims(v)[0], str) and dims(v)[0], f"{role}.{v.name}: batch axis is not dynamic"
                assert dims(v)[1:] == list(t.shape[1:])
        assert [o.version for o in model.opset_import if o.domain == ""] == [DEFAULT_OPSET]


def test_every_graph_came_from_the_dynamo_exporter(exported):
    bundle, report = exported
    assert {g.exporter for g in report.graphs.values()} == {"dynamo"}
    assert B.read_manifest(bundle).producer["exporters"] == {r: "dynamo" for r in B.GRAPH_ROLES}


def test_onnxruntime_matches_pytorch_at_every_key_slot_and_batch_size(bundle, checkpoint):
    ckpt = load_ks_checkpoint(checkpoint)
    graphs = BundleGraphs(bundle)
    n, u, s = ckpt.clip_len, ckpt.n_aus, ckpt.size
    gen = torch.Generator().manual_seed(11)
    for batch in (1, 3):
        for slot in range(n):
            clips, slots = random_inputs("clip", batch, n, u, s, gen, slot)
            with torch.no_grad():
                want = ckpt.model(clips, slots).numpy()
            got = graphs.clip(clips.numpy(), slots.numpy())
            assert got.shape == (batch, u)
            assert np.abs(got - want).max() <= PROB_TOL
            sa, students = graphs.encode(clips.flatten(0, 1).numpy())
            composed = graphs.head(sa.reshape(batch, n, u), students.reshape(batch, n, n, u), slots.numpy())
            assert np.abs(composed - got).max() <= PROB_TOL, "encoder -> head must equal clip.onnx"


@pytest.mark.parametrize("policy", ["last", "ensemble"])
def test_dense_inference_on_synthau_equals_ks_train_evaluate(bundle, checkpoint, policy):
    ckpt = load_ks_checkpoint(checkpoint)
    frames = synth_frames(ckpt.size)
    sequence = VideoSequence(
        "S99", "T1", np.zeros((len(frames), ckpt.n_aus), np.int8), np.arange(len(frames)), frames=frames
    )
    method = create_method(ckpt.config)
    per_frame = encode_sequence(method, ckpt.model, sequence, ckpt.config.preprocess, torch.device("cpu"))
    want = dense_probabilities(method, ckpt.model, per_frame, policy)
    got = BundleGraphs(bundle, roles=("encoder", "head")).dense_probabilities(frames, policy)
    assert np.abs(got - want).max() <= PROB_TOL


def test_the_export_verified_every_key_slot_on_random_and_synthau_inputs(exported):
    report = exported[1].verification
    n = B.read_manifest(exported[0]).clip_len
    assert report.ok
    for graph in ("head", "clip", "encoder->head", "encoder->head=clip.onnx"):
        for inputs in ("random", "SynthAU") if graph in ("head", "clip") else ("SynthAU",):
            slots = {c.key_slot for c in report.checks if c.graph == graph and c.inputs == inputs}
            assert slots == {*map(str, range(n)), "mixed"}, (graph, inputs)
    assert {c.inputs for c in report.checks if c.graph == "encoder"} == {"random", "SynthAU"}
    table = report.table()
    assert "max abs" in table and "PASS" in table and "encoder_int8" in table


def test_a_graph_off_by_more_than_the_tolerance_fails_verification(bundle, checkpoint):
    ckpt = load_ks_checkpoint(checkpoint)
    with torch.no_grad():
        ckpt.model.temporal_teacher.out.bias += 0.05  # torch now disagrees with the exported graphs
    real = to_network_input(synth_frames(ckpt.size, ckpt.clip_len + 1), ckpt.config.preprocess)
    paths = {role: bundle / B.GRAPH_FILES[role] for role in B.GRAPH_ROLES}
    report = verify_graphs(paths, graph_modules(ckpt.model), real, ckpt.clip_len, ckpt.n_aus)
    assert not report.ok
    assert {c.graph for c in report.failures} >= {"head", "clip"}
    assert "FAIL" in report.table()
    assert re.search(
        r"\n  head on random inputs, key slot 0: probs: max abs .* \(atol 1e-4, rtol 0\) FAIL at \[", report.table()
    ), "the table ends with the failed checks' report lines"
    assert "encoder->head=clip.onnx" not in {c.graph for c in report.failures}  # the ONNX graphs still agree


def test_failed_verification_aborts_the_export_and_writes_nothing(bundle, checkpoint, tmp_path, monkeypatch):
    def copy_graphs(ckpt, work, opset, exporter):  # reuse the session's graphs instead of exporting again
        with torch.no_grad():
            ckpt.model.temporal_teacher.out.bias += 0.05
        for name in B.GRAPH_FILES.values():
            (work / name).write_bytes((bundle / name).read_bytes())
        return {role: ExportedGraph(role, work / name, "dynamo", "-", opset) for role, name in B.GRAPH_FILES.items()}

    monkeypatch.setattr(ex, "export_graphs", copy_graphs)
    with pytest.raises(ExportError, match="onnxruntime and PyTorch disagree beyond tolerance") as info:
        export_bundle(checkpoint, tmp_path / "out", int8=False, triton=False, evaluate=False)
    assert "FAIL" in str(info.value)
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []


# --- verify ----------------------------------------------------------------------------------------------------------
def test_verify_passes_on_a_good_bundle(bundle, capsys):
    text = verify_bundle(bundle)
    assert text.endswith("bundle OK") and "encoder->head = clip.onnx" in text and "encoder_int8" in text
    assert main(["verify", str(bundle)]) == 0
    assert "bundle OK" in capsys.readouterr().out


def test_verify_names_a_truncated_graph(bundle_copy, capsys):
    path = bundle_copy / "encoder.onnx"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(BundleError, match=r"encoder\.onnx: sha256 .* field 'files\.encoder\.onnx'"):
        verify_bundle(bundle_copy)
    assert main(["verify", str(bundle_copy)]) == 1
    assert "encoder.onnx" in capsys.readouterr().err
    rewrite_hash(bundle_copy, "encoder.onnx")  # a consistent manifest does not make the file valid
    with pytest.raises(BundleError, match=r"encoder\.onnx: not an ONNX file"):
        verify_bundle(bundle_copy)


def test_verify_refuses_a_clip_graph_that_differs_from_encoder_head(bundle_copy):
    path = bundle_copy / "clip.onnx"
    model = onnx.load(str(path))
    target = max(model.graph.initializer, key=lambda t: onnx.numpy_helper.to_array(t).size)
    shifted = onnx.numpy_helper.to_array(target) + 1.0
    target.CopyFrom(onnx.numpy_helper.from_array(shifted.astype(np.float32), target.name))
    onnx.save(model, str(path))
    rewrite_hash(bundle_copy, "clip.onnx")  # hashes agree: only the parity check can tell
    with pytest.raises(
        BundleError,
        match=r"head\.onnx: encoder -> head differs from clip\.onnx: probs: max abs .*"
        r"\(atol 1e-4, rtol 0\) FAIL at \[",
    ):
        verify_bundle(bundle_copy)


def test_verify_names_an_edited_byte(bundle_copy):
    path = bundle_copy / "head.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"head\.onnx: sha256 .* does not match field 'files\.head\.onnx'"):
        verify_bundle(bundle_copy)


def test_verify_names_an_opset_onnxruntime_cannot_run(bundle_copy):
    path = bundle_copy / "head.onnx"
    model = onnx.load(path)
    for o in model.opset_import:
        if o.domain == "":
            o.version = max_ort_opset() + 1
    onnx.save(model, path)
    rewrite_hash(bundle_copy, "head.onnx")
    with pytest.raises(BundleError, match=r"head\.onnx: opset \d+, but field 'opset' of manifest.json says 18"):
        verify_bundle(bundle_copy)
    for name in B.GRAPH_FILES.values():  # all graphs and the manifest agree on an opset too new for onnxruntime
        model = onnx.load(bundle_copy / name)
        for o in model.opset_import:
            if o.domain == "":
                o.version = max_ort_opset() + 1
        onnx.save(model, bundle_copy / name)
        rewrite_hash(bundle_copy, name)
    data = json.loads((bundle_copy / B.MANIFEST).read_text())
    data["opset"] = max_ort_opset() + 1
    (bundle_copy / B.MANIFEST).write_text(json.dumps(data))
    with pytest.raises(BundleError, match=r"encoder\.onnx: opset \d+ \(field 'opset' .*onnxruntime .* runs opsets"):
        verify_bundle(bundle_copy)


# --- bad requests ----------------------------------------------------------------------------------------------------
def test_an_opset_beyond_onnxruntime_is_refused_with_both_versions(checkpoint, tmp_path, capsys):
    import onnxruntime

    too_new = max_ort_opset() + 1
    with pytest.raises(
        ExportError,
        match=rf"--opset {too_new}: the installed onnxruntime "
        rf"{re.escape(onnxruntime.__version__)} runs opsets up to {too_new - 1}",
    ):
        resolve_opset(too_new)
    assert main(["--ckpt", str(checkpoint), "--out", str(tmp_path / "b"), "--opset", str(too_new)]) == 1
    assert f"--opset {too_new}" in capsys.readouterr().err
    assert resolve_opset(None) == DEFAULT_OPSET and resolve_opset(max_ort_opset()) == max_ort_opset()


def test_a_frame_checkpoint_is_refused(checkpoint, tmp_path):
    with_config(checkpoint, tmp_path / "frame.pt", method="frame")
    with pytest.raises(ExportError, match=r"frame\.pt: method 'frame'; only Knowledge-Spreader"):
        load_ks_checkpoint(tmp_path / "frame.pt")


def test_a_checkpoint_with_an_unresolved_stride_is_refused(checkpoint, tmp_path):
    with_config(checkpoint, tmp_path / "unresolved.pt", clip_stride=0)  # the trainer writes the one it resolved
    with pytest.raises(ExportError, match=r"unresolved\.pt: model.clip_stride is 0 .*not written by the trainer"):
        load_ks_checkpoint(tmp_path / "unresolved.pt")


def test_a_strided_checkpoint_exports_and_its_bundle_gathers_strided_clips(checkpoint, tmp_path):
    """model.clip_stride travels into the manifest (and its lookahead), and the bundle's dense inference takes
    slots that many frames apart, as ks_train's evaluation does."""
    with_config(checkpoint, tmp_path / "strided.pt", clip_stride=3)  # the weights do not depend on the stride
    out = tmp_path / "bundle"
    export_bundle(tmp_path / "strided.pt", out, int8=False, triton=False, evaluate=False, exporter="legacy")
    manifest = B.read_manifest(out)
    n = manifest.clip_len
    assert manifest.clip_stride == 3 and manifest.raw["policy"]["lookahead"]["ensemble"] == 3 * (n - 1)

    ckpt = load_ks_checkpoint(tmp_path / "strided.pt")
    frames = synth_frames(ckpt.size)
    sequence = VideoSequence(
        "S99", "T1", np.zeros((len(frames), ckpt.n_aus), np.int8), np.arange(len(frames)), frames=frames
    )
    method = create_method(ckpt.config)
    per_frame = encode_sequence(method, ckpt.model, sequence, ckpt.config.preprocess, torch.device("cpu"))
    graphs = BundleGraphs(manifest, roles=("encoder", "head"))
    for policy in ("last", "shift", "ensemble"):
        want = dense_probabilities(method, ckpt.model, per_frame, policy)
        got = graphs.dense_probabilities(frames, policy)
        assert np.abs(got - want).max() <= PROB_TOL, policy
    # The two agree because both gather strided clips: the head's S_a input holds frames t - 3j.
    seen = []
    head = graphs.head
    graphs.head = lambda sa, students, slots: seen.append(sa) or head(sa, students, slots)
    graphs.dense_probabilities(frames, "last")
    sa, _ = graphs.encode_frames(frames)
    clips, _ = dense_clip_indices(len(frames), n, "last", 3)
    np.testing.assert_array_equal(np.concatenate(seen), sa[clips[:, 0]])
    last = len(frames) - 1
    assert 3 * (n - 1) <= last and list(clips[last, 0]) == [last - 3 * (n - 1 - j) for j in range(n)]


def test_an_existing_folder_that_is_not_a_bundle_is_not_overwritten(checkpoint, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="exists and is not a model bundle"):
        export_bundle(checkpoint, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


# --- exporter fallback and simplifier ------------------------------------------------------------------------
def test_a_failing_dynamo_export_falls_back_to_the_legacy_exporter(checkpoint, tmp_path, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("simulated torch.export failure")

    monkeypatch.setattr(ox, "_export_dynamo", broken)
    ckpt = load_ks_checkpoint(checkpoint)
    head = HeadGraph(ckpt.model).eval()
    gen = torch.Generator().manual_seed(0)
    path = tmp_path / "head.onnx"
    with caplog.at_level(logging.WARNING, logger="ks_export"):
        used = export_module(head, random_inputs("head", 2, ckpt.clip_len, ckpt.n_aus, ckpt.size, gen), path, 18)
    assert used == "legacy" and "falling back to the legacy" in caplog.text
    model = check_graph(path, 18)
    assert isinstance(dims(model.graph.input[0])[0], str)  # still a dynamic batch
    args = random_inputs("head", 3, ckpt.clip_len, ckpt.n_aus, ckpt.size, gen)
    got = run_onnx(path, {n: a.numpy() for n, a in zip(head.input_names, args, strict=True)})[0]
    with torch.no_grad():
        assert np.abs(got - head(*args).numpy()).max() <= PROB_TOL
    with pytest.raises(ExportError, match="training mode"):
        export_module(head.train(), args, path, 18)


def test_a_simplified_graph_that_changes_the_outputs_is_not_kept(bundle, tmp_path, monkeypatch):
    import onnxslim

    path = tmp_path / "head.onnx"
    path.write_bytes((bundle / "head.onnx").read_bytes())

    def wrong_slim(model):  # a "simplifier" that shifts the fusion's bias: different outputs
        broken = onnx.ModelProto()
        broken.CopyFrom(model)
        target = max(broken.graph.initializer, key=lambda t: onnx.numpy_helper.to_array(t).size)
        array = onnx.numpy_helper.to_array(target) + 1.0
        target.CopyFrom(onnx.numpy_helper.from_array(array.astype(np.float32), target.name))
        return broken

    monkeypatch.setattr(onnxslim, "slim", wrong_slim)
    m = B.read_manifest(bundle)
    gen = torch.Generator().manual_seed(0)
    feeds = [
        {
            n: a.numpy()
            for n, a in zip(
                HeadGraph.input_names,
                random_inputs("head", 2, m.clip_len, m.n_aus, m.preprocess.size, gen),
                strict=True,
            )
        }
    ]
    before = path.read_bytes()
    assert "not kept" in simplify_if_equal(path, feeds)
    assert path.read_bytes() == before


# --- INT8 ------------------------------------------------------------------------------------------------------------
def test_the_int8_encoder_is_smaller_quantised_and_evaluated(exported):
    bundle, report = exported
    m = B.read_manifest(bundle)
    variant = m.variants[B.ENCODER_INT8]
    assert variant["graph"] == "encoder" and variant["precision"] == "int8"
    int8, fp32 = bundle / variant["file"], bundle / "encoder.onnx"
    assert int8.stat().st_size < 0.5 * fp32.stat().st_size
    model = onnx.load(int8)
    quant = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert quant, "no QDQ nodes"
    zero_points = {t.name: t for t in model.graph.initializer}
    activation_types = {
        zero_points[n.input[2]].data_type for n in quant if len(n.input) > 2 and n.input[2] in zero_points
    }
    assert activation_types == {onnx.TensorProto.UINT8}
    rows = {r.variant: r for r in report.precision}
    assert set(rows) == {"fp32", "int8"}
    assert all(0.0 <= r.mean_f1 <= 1.0 and r.size_bytes > 0 for r in rows.values())
    assert rows["int8"].size_bytes == int8.stat().st_size
    evaluation = m.raw["evaluation"]
    assert evaluation["variants"]["int8"]["mean_f1"] == pytest.approx(rows["int8"].mean_f1)
    table = report.precision_table()
    assert "int8" in table and "fp32" in table and "mean F1" in table
    # FP32 through onnxruntime scores the test fold as the checkpoint did in PyTorch (same fold, policy, frames)
    assert report.checkpoint_f1 is not None and rows["fp32"].mean_f1 == pytest.approx(report.checkpoint_f1, abs=0.01)


def test_the_report_text_has_every_section(exported):
    text = exported[1].text()
    for part in ("== verification", "== FP32 and INT8", "== files", "triton/ks_clip/config.pbtxt", "dynamo exporter"):
        assert part in text
