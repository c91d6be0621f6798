"""Issue 19: a bundle loads exactly the bytes it verified (docs/bundle-format.md, "Contract").

On test_bundle.py's toy bundle (hand-written graphs, no torch): weights kept as ONNX external data, links out of the
bundle, a file swapped after its hash was checked, fields a format version requires, paths out of the bundle, and
files the manifest does not hash. The load-time encoder -> head = clip check is tests/runtime/engine's.
"""

import hashlib
import os
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import external_data_helper, helper, numpy_helper

from ks_runtime.core import bundle as B
from ks_runtime.core.bundle_files import ENGINE_RECORD, bundle_path
from ks_runtime.core.errors import BundleError
from ks_runtime.core.onnx_external import external_tensor
from ks_runtime.engine import ort_graphs
from ks_runtime.engine.ort_graphs import BundleGraphs
from ks_runtime.synth.face import alignment_template
from tests.runtime.core.test_bundle import copy, edit_manifest, rehash, toy  # noqa: F401 (fixtures)


def negated_encoder(path: Path) -> onnx.ModelProto:
    """The toy encoder with its weights (Constant nodes w_sa, w_st) negated: every logit changes sign."""
    model = onnx.load(str(path))
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] in ("w_sa", "w_st"):
            value = numpy_helper.to_array(node.attribute[0].t)
            node.attribute[0].t.CopyFrom(numpy_helper.from_array(-value, node.output[0]))
    return model


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- 1. ONNX external data ------------------------------------------------------------------------------------------
def test_weights_kept_as_external_data_are_refused_even_when_hashed(copy):  # noqa: F811
    """Before: encoder.onnx's sha256 held, its negated weights sat unhashed in encoder.onnx.data, and were served."""
    onnx.save(
        negated_encoder(copy / "encoder.onnx"),
        str(copy / "encoder.onnx"),
        save_as_external_data=True,
        location="encoder.onnx.data",
        size_threshold=0,
        convert_attribute=True,
    )
    rehash(copy, "encoder.onnx")  # the graph file hashed, as an exporter writing external data would
    message = r"encoder\.onnx: tensor '\w+' keeps its data outside the graph \(ONNX external data, location "
    with pytest.raises(BundleError, match=message + r"'encoder\.onnx\.data'\)"):
        B.read_manifest(copy)
    with pytest.raises(BundleError, match=message):  # an engine's own read refuses it too
        BundleGraphs(B.read_manifest(copy, verify_hashes=False))
    rehash(copy, "encoder.onnx.data")  # hashing the data file as well does not make external data acceptable
    with pytest.raises(BundleError, match=message):
        B.read_manifest(copy)


def _external(tensor: onnx.TensorProto) -> onnx.TensorProto:
    external_data_helper.set_external_data(tensor, location="w.bin", offset=0, length=4)
    tensor.ClearField("raw_data")
    return tensor


def _model(initializers=(), sparse=(), nodes=()) -> bytes:
    graph = helper.make_graph(list(nodes), "g", [], [], list(initializers), sparse_initializer=list(sparse))
    return helper.make_model(graph).SerializeToString()


def _tensor(name: str) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ones(1, np.float32), name)


def test_the_external_data_scan_finds_a_tensor_wherever_onnx_can_put_one():
    """Initialisers, Constant values, tensors inside a subgraph (If), sparse initialisers; none in a plain model."""
    plain = helper.make_node("Constant", [], ["c"], value=_tensor("c"))
    assert external_tensor(_model([_tensor("a")], nodes=[plain])) is None
    assert external_tensor(_model([_tensor("a"), _external(_tensor("b"))])) == ("b", "w.bin")
    constant = helper.make_node("Constant", [], ["c"], value=_external(_tensor("c")))
    assert external_tensor(_model(nodes=[constant])) == ("c", "w.bin")
    branch = helper.make_graph([constant], "branch", [], [helper.make_tensor_value_info("c", 1, [1])])
    if_node = helper.make_node("If", ["cond"], ["c"], then_branch=branch, else_branch=branch)
    assert external_tensor(_model(nodes=[if_node])) == ("c", "w.bin")
    values = _external(_tensor("v"))
    sparse = helper.make_sparse_tensor(values, numpy_helper.from_array(np.zeros(1, np.int64), "i"), [4])
    assert external_tensor(_model(sparse=[sparse])) == ("v", "w.bin")
    with pytest.raises(ValueError, match="truncated|past the end"):
        external_tensor(_model([_tensor("a")])[:-3])


def test_every_real_graph_keeps_its_weights_inside(bundle):
    m = B.read_manifest(bundle)  # the runtime's exported bundle: every graph scanned, none refused
    assert all(external_tensor((bundle / name).read_bytes()) is None for name in m.files if name.endswith(".onnx"))


# --- 2. links, and bytes read once -----------------------------------------------------------------------------------
def test_a_link_out_of_the_bundle_is_refused_even_to_the_same_bytes(copy, tmp_path):  # noqa: F811
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.move(copy / "head.onnx", outside / "head.onnx")
    (copy / "head.onnx").symlink_to(outside / "head.onnx")  # the same bytes: its sha256 matches
    with pytest.raises(BundleError, match=r"bundle/head\.onnx: a symbolic link"):
        B.read_manifest(copy)
    with pytest.raises(BundleError, match=r"bundle/head\.onnx: a symbolic link \(field 'files\.head\.onnx'"):
        BundleGraphs(B.read_manifest(copy, verify_hashes=False))  # no link followed when the graph is read


def test_a_linked_folder_is_refused(copy, tmp_path):  # noqa: F811
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "config.pbtxt").write_text("name: 'x'\n")
    (copy / "triton").symlink_to(outside, target_is_directory=True)
    edit_manifest(copy, lambda d: d["files"].update({"triton/config.pbtxt": sha256(b"name: 'x'\n")}))
    with pytest.raises(BundleError, match=r"bundle/triton: a symbolic link \(field 'files\.triton/config\.pbtxt'"):
        B.read_manifest(copy)
    edit_manifest(copy, lambda d: d["files"].pop("triton/config.pbtxt"))
    with pytest.raises(BundleError, match=r"bundle/triton: a symbolic link in the bundle"):
        B.read_manifest(copy)  # a link the manifest does not even name


def test_a_graph_changed_after_its_hash_was_checked_is_not_loaded(copy):  # noqa: F811
    """Before: read_manifest hashed the files, then onnxruntime opened each path again and ran whatever was there."""
    manifest = B.read_manifest(copy)  # every sha256 checked
    onnx.save(negated_encoder(copy / "encoder.onnx"), str(copy / "encoder.onnx"))  # swapped in after the check
    with pytest.raises(BundleError, match=r"encoder\.onnx: sha256 .* does not match field 'files\.encoder\.onnx'"):
        BundleGraphs(manifest)


def test_onnxruntime_gets_the_bytes_whose_hash_was_checked(toy, monkeypatch):  # noqa: F811
    given = []
    session = ort_graphs.ort.InferenceSession

    def recording(model, *args, **kwargs):
        given.append(model)
        return session(model, *args, **kwargs)

    monkeypatch.setattr(ort_graphs.ort, "InferenceSession", recording)
    manifest = B.read_manifest(toy)
    BundleGraphs(manifest)
    assert [sha256(m) for m in given] == [manifest.files[manifest.graphs[r].file] for r in B.GRAPH_ROLES]


# --- 4. fields a version requires ----------------------------------------------------------------------------------
def as_version_2(data):
    data["format_version"] = 2
    data["model"]["clip_stride"] = 1
    data["alignment"] = {"template": alignment_template(), "source": "synthau"}


@pytest.mark.parametrize(
    "drop, field, meaning",
    [
        (lambda d: d["model"].pop("clip_stride"), "model.clip_stride", "stride 1"),
        (lambda d: d["alignment"].pop("template"), "alignment.template", "the SynthAU alignment template"),
    ],
)
def test_a_version_2_manifest_needs_what_every_version_2_writer_wrote(copy, drop, field, meaning):  # noqa: F811
    """Before: a version 2 manifest without model.clip_stride streamed with stride 1 (the model's was 10)."""
    edit_manifest(copy, as_version_2)
    assert B.read_manifest(copy).clip_stride == 1
    edit_manifest(copy, drop)
    with pytest.raises(BundleError, match=rf"manifest\.json: missing field '{field}', required in a version 2") as e:
        B.read_manifest(copy)
    assert meaning in str(e.value)
    edit_manifest(copy, lambda d: d.update(format_version=1))  # version 1 predates both: absent means the default
    assert B.read_manifest(copy).clip_stride == 1


# --- 5. paths out of the bundle, and files the manifest does not hash ------------------------------------------------
@pytest.mark.parametrize(
    "change, field",
    [
        (lambda d: d.update(serving={"triton": {"config": "../../../../etc/passwd"}}), "serving.triton.config"),
        (lambda d: d.update(tensorrt={"engines": [{"file": "trt/../../x.plan"}]}), "tensorrt.engines[0].file"),
        (lambda d: d.update(tensorrt={"recipe": {"file": "/etc/passwd"}, "engines": []}), "tensorrt.recipe.file"),
        (lambda d: d["variants"][B.ENCODER_INT8].update(file="..\\encoder.onnx"), "variants.encoder_int8.file"),
        (lambda d: d["graphs"]["head"].update(file="../head.onnx"), "graphs.head.file"),
        (lambda d: d.update(check_frames={"file": "./check_frames.npy", "count": 1}), "check_frames.file"),
        (lambda d: d["files"].update({"/etc/passwd": "0" * 64}), "files./etc/passwd"),
    ],
)
def test_every_path_the_manifest_names_goes_through_one_check(copy, change, field):  # noqa: F811
    """Before: verify opened serving.triton.config at ../../../../etc/passwd and quoted it in its error."""
    edit_manifest(copy, change)
    with pytest.raises(
        BundleError, match=rf"manifest\.json: field '{re.escape(field)}' is .* not a plain relative"
    ) as e:
        B.read_manifest(copy, verify_hashes=False)
    assert "root:" not in str(e.value)  # nothing outside the bundle was opened, so nothing of it is quoted


def test_a_path_inside_that_the_manifest_does_not_hash_is_refused(copy):  # noqa: F811
    edit_manifest(copy, lambda d: d.update(serving={"triton": {"config": "triton/ks_clip/config.pbtxt"}}))
    with pytest.raises(BundleError, match=r"no sha256 for triton/ks_clip/config\.pbtxt \(named by field 'serving"):
        B.read_manifest(copy)


def test_bundle_path_is_lexical_and_strict(tmp_path):
    assert bundle_path(tmp_path, "trt/a.plan", "f") == tmp_path / "trt" / "a.plan"
    for bad in ("", "a//b", "C:/x", "a\\b", "/a", "a/./b", "a/..", "a\0b", 3, None):
        with pytest.raises(BundleError, match="field 'f'"):
            bundle_path(tmp_path, bad, "f")


def test_files_the_manifest_does_not_hash_are_refused_unless_the_device_recorded_them(copy):  # noqa: F811
    """Before: an unhashed trt/*.plan passed verify. Now only an engine the recipe recorded with its sha256 may be
    there unhashed; the device's build caches and dot files are no part of the bundle, and are allowed."""
    (copy / "trt" / "ort-cache").mkdir(parents=True)
    (copy / "trt" / "timing.orin.trt10.3.0.cache").write_bytes(b"cache")
    (copy / "trt" / "ort-cache" / "x.engine").write_bytes(b"cache")
    (copy / ".DS_Store").write_bytes(b"finder")
    B.read_manifest(copy)
    plan = copy / "trt" / "encoder.orin.trt10.3.0.fp16.plan"
    plan.write_bytes(b"plan")
    with pytest.raises(BundleError, match=r"trt/encoder\.orin\.trt10\.3\.0\.fp16\.plan: in the bundle but not hashed"):
        B.read_manifest(copy)
    (copy / ENGINE_RECORD).write_text(f"{sha256(b'plan')}  trt/{plan.name}\n")  # what build_engines.sh appends
    B.read_manifest(copy)
    plan.write_bytes(b"another plan")
    with pytest.raises(BundleError, match=r"fp16\.plan: sha256 .* does not match trt/engines\.sha256"):
        B.read_manifest(copy)
    (copy / ENGINE_RECORD).write_text(f"{sha256(b'x')}  encoder.onnx\n")  # the record vouches for engines only
    with pytest.raises(BundleError, match=r"engines\.sha256: line 1 is not '<sha256>  trt/<engine>\.plan'"):
        B.read_manifest(copy)


def test_a_stray_file_or_a_fifo_is_refused(copy):  # noqa: F811
    (copy / "notes.txt").write_text("hello")
    with pytest.raises(BundleError, match=r"notes\.txt: in the bundle but not hashed in field 'files'"):
        B.read_manifest(copy)
    (copy / "notes.txt").unlink()
    if hasattr(os, "mkfifo"):
        os.mkfifo(copy / "pipe")
        with pytest.raises(BundleError, match=r"pipe: not a regular file or folder"):
            B.read_manifest(copy)
