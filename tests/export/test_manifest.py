"""manifest.json as ks_export writes it: every field docs/bundle-format.md lists, hashes of every file, strict JSON, and
the reader's refusals of a tampered manifest."""

import json
import math

import onnx
import onnxruntime
import pytest
import torch

from ks_export.manifest import history_summary, jsonable
from ks_runtime.core import bundle as B
from ks_runtime.core.errors import BundleError
from ks_runtime.core.policy import POLICIES
from ks_train.checkpoint import load_checkpoint


def raw(bundle):
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads((bundle / B.MANIFEST).read_text(), parse_constant=refuse)  # strict: no NaN / Infinity


def edit(root, change):
    data = raw(root)
    change(data)
    (root / B.MANIFEST).write_text(json.dumps(data))


def test_the_manifest_has_every_field_the_design_lists(bundle, checkpoint):
    data, state = raw(bundle), load_checkpoint(checkpoint)
    assert data["format"] == "ks-bundle" and data["format_version"] == 1  # adjacent slots: readable by version 1
    model = data["model"]
    assert model["au_columns"] == state["au_columns"] and len(model["au_names"]) == model["n_aus"]
    assert model["au_names"][0] == "inner brow raiser" and model["method"] == "ks" and model["au_set"] == "bp4d"
    assert model["clip_len"] == 5 and model["fusion"] == "mean"
    # synth-cpu feeds the paper's adjacent frames, whatever the label spacing (10 at the profile's 10% labels)
    assert model["clip_stride"] == state["config"]["model"]["clip_stride"] == 1 and state["dataset"]["every_k"] == 10
    assert data["thresholds"] == [0.5] * model["n_aus"]
    assert data["preprocess"] == jsonable(state["preprocess"]) and data["preprocess"]["colour"] == "RGB"
    assert data["policy"]["default"] == "last"
    assert data["policy"]["lookahead"] == {"last": 0, "center": 2, "shift": 4, "ensemble": 4}  # in slots
    assert set(data["policy"]["lookahead"]) == set(POLICIES)
    assert isinstance(data["alignment"], dict) and data["opset"] == 18
    assert data["graphs"]["head"]["inputs"][2] == {"name": "key_slot", "dtype": "int64", "shape": ["B"]}
    assert data["graphs"]["clip"]["inputs"][0]["shape"] == ["B", 5, 3, 64, 64]
    assert data["variants"]["encoder_int8"]["file"] == "encoder.int8.onnx"
    training = data["training"]
    assert training["config"] == jsonable(state["config"])
    assert training["metrics"]["mean_f1"] == pytest.approx(state["metrics"]["mean_f1"])
    assert training["dataset"]["name"] == "synthau" and training["history"]["epochs"] == 1
    assert training["checkpoint"]["sha256"] == B.sha256_file(checkpoint)
    assert training["checkpoint"]["package_version"] == state["package_version"]
    producer = data["producer"]
    assert producer["package"] == "knowledge-spreader" and producer["version"] and producer["created"]
    assert (producer["torch"], producer["onnx"], producer["onnxruntime"]) == (
        torch.__version__,
        onnx.__version__,
        onnxruntime.__version__,
    )
    verification = data["verification"]
    assert verification["passed"] is True
    for graph in ("encoder", "head", "clip", "encoder->head", "encoder->head=clip.onnx"):
        assert {"max_abs", "max_rel", "checks", "passed"} <= set(verification["graphs"][graph])
    assert verification["graphs"]["clip"]["max_abs"] <= verification["tolerance"]["probs_abs"]
    assert verification["graphs"]["encoder_int8"]["tolerance"] is None  # reported, not judged


def test_files_lists_the_sha256_of_every_file_in_the_bundle(bundle):
    files = raw(bundle)["files"]
    on_disk = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()} - {B.MANIFEST}
    assert set(files) == on_disk
    assert {
        "encoder.onnx",
        "head.onnx",
        "clip.onnx",
        "encoder.int8.onnx",
        "triton/ks_clip/1/model.onnx",
        "triton/ks_clip/config.pbtxt",
    } <= on_disk
    assert all(files[name] == B.sha256_file(bundle / name) for name in files)


def test_the_runtime_reader_reads_what_the_writer_wrote(bundle):
    m = B.read_manifest(bundle)
    assert m.clip_len == 5 and m.n_aus == 12 and m.preprocess.size == 64 and m.policy == "last"
    assert m.graphs == B.graph_specs(5, 12, 64)
    assert m.path("encoder_int8").is_file()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["files"].update({"clip.onnx": "f" * 64}), r"clip\.onnx: sha256 .* field 'files\.clip\.onnx'"),
        (lambda d: d.update(format_version=99), r"manifest\.json: field 'format_version' is 99; this runtime reads"),
        (lambda d: d["model"].pop("au_names"), r"manifest\.json: missing field 'model\.au_names'"),
        (lambda d: d["producer"].pop("version"), r"manifest\.json: missing field 'producer\.version'"),
        (lambda d: d.pop("opset"), r"manifest\.json: missing field 'opset'"),
        (lambda d: d["thresholds"].pop(), r"manifest\.json: field 'thresholds' has 11 values for 12 AUs"),
    ],
)
def test_a_tampered_manifest_is_refused_naming_file_and_field(bundle_copy, change, message):
    edit(bundle_copy, change)
    with pytest.raises(BundleError, match=message):
        B.read_manifest(bundle_copy)


def test_a_malformed_manifest_is_refused(bundle_copy):
    (bundle_copy / B.MANIFEST).write_text('{"format": "ks-bundle", ')
    with pytest.raises(BundleError, match=r"manifest\.json: malformed JSON"):
        B.read_manifest(bundle_copy)
    (bundle_copy / B.MANIFEST).unlink()
    with pytest.raises(BundleError, match=r"manifest\.json: missing"):
        B.read_manifest(bundle_copy)


def test_jsonable_writes_strict_json():
    value = jsonable({"a": (1.0, float("nan")), "b": {"c": math.inf}, 3: torch.tensor(2.5)})
    assert value == {"a": [1.0, None], "b": {"c": None}, "3": 2.5}
    json.dumps(value, allow_nan=False)


def test_history_summary_keeps_the_best_and_last_epochs():
    history = [
        {"epoch": 1, "loss": 2.0, "mean_f1": 0.2, "per_au_f1": {"AU01": 0.1}},
        {"epoch": 2, "loss": 1.0, "mean_f1": 0.3, "ppl_accept_rate": float("nan")},
    ]
    summary = history_summary(history)
    assert summary["epochs"] == 2 and summary["best_mean_f1"] == 0.3
    assert summary["last"] == {"epoch": 2, "loss": 1.0, "mean_f1": 0.3, "ppl_accept_rate": None}
    assert history_summary([]) == {"epochs": 0, "best_mean_f1": None, "last": {}}
