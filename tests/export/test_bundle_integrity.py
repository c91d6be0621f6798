"""Issue 19: `ks-export verify` passes only a bundle whose loads are exactly the bytes it verified (on the export
suite's bundle; the reader's own cases are tests/runtime/core/test_bundle_integrity.py). Each case here was "bundle
OK" before: a path out of the bundle (and the file it reached quoted in the error), an unhashed engine, a link, weights
kept outside a graph, and a version 2 manifest without the stride that version always records."""

import hashlib
import json
import re
import shutil

import onnx
import pytest

from ks_export.cli import main
from ks_export.export import verify_bundle
from ks_runtime.core import bundle as B
from ks_runtime.core.bundle_files import ENGINE_RECORD
from ks_runtime.core.errors import BundleError
from ks_runtime.engine import trt as T


def edit(root, change):
    data = json.loads((root / B.MANIFEST).read_text())
    change(data)
    (root / B.MANIFEST).write_text(json.dumps(data))


def refused(root, capsys, pattern):
    """verify_bundle raises a BundleError matching `pattern`, and `ks-export verify` exits 1 saying the same."""
    with pytest.raises(BundleError, match=pattern):
        verify_bundle(root)
    assert main(["verify", str(root)]) == 1
    captured = capsys.readouterr()
    assert re.search(pattern, captured.err) and "bundle OK" not in captured.out
    return captured.err


def test_a_triton_config_outside_the_bundle_is_neither_opened_nor_quoted(bundle_copy, capsys):
    edit(bundle_copy, lambda d: d["serving"]["triton"].update(config="../../../../../../../../etc/passwd"))
    err = refused(bundle_copy, capsys, r"field 'serving\.triton\.config' is .* not a plain relative path")
    assert "root:" not in err and "/bin/" not in err


def test_an_engine_path_out_of_the_bundle_is_refused(bundle_copy, capsys):
    edit(bundle_copy, lambda d: d["tensorrt"]["engines"].append({"file": "../encoder.h100.trt10.8.0.fp16.plan"}))
    refused(bundle_copy, capsys, r"field 'tensorrt\.engines\[0\]\.file' is '\.\./encoder")


def test_an_unhashed_engine_is_refused_and_a_recorded_one_is_listed(bundle_copy, capsys):
    plan = bundle_copy / "trt" / T.engine_file_name("encoder", "Orin", "10.3.0", "fp16")
    plan.write_bytes(b"an engine built on the device")
    refused(bundle_copy, capsys, r"fp16\.plan: in the bundle but not hashed in field 'files'")
    digest = hashlib.sha256(plan.read_bytes()).hexdigest()
    (bundle_copy / ENGINE_RECORD).write_text(f"{digest}  trt/{plan.name}\n")  # as trt/build_engines.sh records it
    assert f"engines: {plan.name}" in verify_bundle(bundle_copy)
    plan.write_bytes(b"changed after it was recorded")
    refused(bundle_copy, capsys, r"fp16\.plan: sha256 .* does not match trt/engines\.sha256")


def test_a_link_to_the_same_bytes_outside_is_refused(bundle_copy, tmp_path, capsys):
    shutil.move(bundle_copy / "triton", tmp_path / "triton")
    (bundle_copy / "triton").symlink_to(tmp_path / "triton", target_is_directory=True)
    refused(bundle_copy, capsys, r"bundle/triton: a symbolic link")


def test_weights_kept_outside_a_graph_are_refused(bundle_copy, capsys):
    path = bundle_copy / "head.onnx"
    onnx.save(onnx.load(str(path)), str(path), save_as_external_data=True, location="head.data", size_threshold=0)
    edit(bundle_copy, lambda d: d["files"].update({"head.onnx": B.sha256_file(path)}))
    refused(bundle_copy, capsys, r"head\.onnx: tensor .* keeps its data outside the graph \(ONNX external data")


def test_a_version_2_manifest_without_its_stride_is_refused(bundle_copy, capsys):
    edit(bundle_copy, lambda d: d.update(format_version=2))
    assert verify_bundle(bundle_copy).endswith("bundle OK")  # version 2 with its stride: sound
    edit(bundle_copy, lambda d: d["model"].pop("clip_stride"))
    refused(bundle_copy, capsys, r"missing field 'model\.clip_stride', required in a version 2 manifest")
