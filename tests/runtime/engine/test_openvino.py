"""The OpenVINO engine (ks_runtime/engine/openvino.py, the openvino extra): the bundle's INT8 encoder in OpenVINO
agrees with onnxruntime on the same inputs, runs the bytes the manifest hashed, and falls back to onnxruntime's FP32
encoder, or refuses, when its load-time check fails, a batch-dependent result at any batch size it may be sent
included, and gives each of several threads calling it at once its own answer."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from ks_runtime.cli import main
from ks_runtime.core import bundle as B
from ks_runtime.core.errors import BundleError, ConfigError
from ks_runtime.engine import EngineError, create_engine
from ks_runtime.engine.int8_check import load_check_frames
from ks_runtime.engine.ort_graphs import BundleGraphs
from tests.runtime.engine.int8_edit import scale_output_dequantize
from tests.runtime.engine.test_int8_check import check_input


@pytest.fixture(scope="module")
def ov():
    return pytest.importorskip("openvino", reason="openvino is not installed (pip install .[openvino])")


@pytest.fixture()
def int8_copy(int8_bundle, tmp_path):
    return shutil.copytree(int8_bundle, tmp_path / "bundle")


def test_openvino_int8_agrees_with_onnxruntime_on_the_same_inputs(ov, int8_bundle):
    engine = create_engine(int8_bundle, "openvino")
    assert engine.variant == B.ENCODER_INT8 and engine.int8_check.passed
    assert "openvino" in engine.describe() and "f32" in engine.describe()
    x = check_input(int8_bundle)
    fp32_logits = BundleGraphs(int8_bundle, ("encoder",)).encode(x)[0]
    assert not np.allclose(engine.encode(x)[0], fp32_logits, atol=1e-4)  # it really is the INT8 graph that runs
    # encoder -> head against onnxruntime FP32, within the bundle's INT8 tolerance, one frame a call and all at once
    check = load_check_frames(B.read_manifest(int8_bundle))
    reference = BundleGraphs(int8_bundle, ("encoder", "head")).dense_probabilities(check, "last")
    for batch in (1, len(check)):
        diff = np.abs(engine.graphs.dense_probabilities(check, "last", batch_size=batch) - reference)
        assert diff.max() <= engine.int8_check.tolerance


def test_openvino_compiles_the_bytes_the_manifest_hashed(ov, int8_bundle, monkeypatch):
    read = []
    original = ov.Core.read_model
    monkeypatch.setattr(ov.Core, "read_model", lambda self, model, *a, **k: read.append(model) or original(self, model))
    create_engine(int8_bundle, "openvino")
    manifest = B.read_manifest(int8_bundle)
    name = manifest.file_name(B.ENCODER_INT8)
    assert len(read) == 1 and isinstance(read[0], bytes)  # bytes, never the path to open again
    assert hashlib.sha256(read[0]).hexdigest() == manifest.files[name]


def test_a_changed_int8_file_is_refused_before_openvino_sees_it(ov, int8_copy):
    name = json.loads((int8_copy / B.MANIFEST).read_text())["variants"][B.ENCODER_INT8]["file"]
    with open(int8_copy / name, "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(BundleError, match="sha256"):
        create_engine(int8_copy, "openvino")


def test_the_check_covers_every_batch_size_openvino_is_sent(ov):
    from ks_runtime.engine.openvino import CHECK_BATCHES, MAX_BATCH

    assert CHECK_BATCHES == tuple(range(1, MAX_BATCH + 1))  # engine.encode sends 1..MAX_BATCH frames a call


@pytest.mark.parametrize("wrong", [lambda n: n > 12, lambda n: n == 5], ids=["from 13", "only at 5"])
def test_results_that_change_with_the_batch_fail_the_check(ov, int8_bundle, monkeypatch, caplog, wrong):
    from ks_runtime.engine.openvino import OpenVinoGraphs

    encode = OpenVinoGraphs.encode

    def batch_dependent(self, frames):  # what OpenVINO's miscompile does: right alone, wrong at some batch sizes
        sa, students = encode(self, frames)
        return sa + wrong(len(frames)) * 4.0, students

    monkeypatch.setattr(OpenVinoGraphs, "encode", batch_dependent)
    with caplog.at_level(logging.WARNING, logger="ks_runtime.engine.openvino"):
        engine = create_engine(int8_bundle, "openvino")
    assert "BEYOND" in caplog.text and "encoder batches 1, 2, 3, 4, 5, 6, 7, 8, 9" in caplog.text
    assert not engine.openvino_check.passed and engine.int8_check.passed
    # onnxruntime's INT8 encoder runs instead, as `--engine ort --precision int8` would
    assert engine.variant == B.ENCODER_INT8 and engine.runtime == "onnxruntime"
    assert "encoder_int8 in onnxruntime" in engine.describe()


def test_where_no_int8_passes_it_is_fp32_or_refused(ov, int8_copy):
    scale_output_dequantize(int8_copy, 4.0)  # both runtimes' INT8 encoders now fail their checks
    engine = create_engine(int8_copy, "openvino")
    assert engine.variant is None and "failed its check" in engine.describe()
    with pytest.raises(EngineError, match="refusing"):
        create_engine(int8_copy, "openvino", precision="int8", insist_int8=True)


def test_large_batches_reach_openvino_in_checked_sizes(ov, int8_bundle):
    from ks_runtime.engine.openvino import MAX_BATCH

    engine = create_engine(int8_bundle, "openvino")
    x = np.resize(check_input(int8_bundle), (2 * MAX_BATCH + 3, 3, 32, 32))
    sizes = []
    encode = engine.graphs.encode
    engine.graphs.encode = lambda frames: sizes.append(len(frames)) or encode(frames)
    sa, students = engine.encode(x)
    assert sizes == [MAX_BATCH, MAX_BATCH, 3] and len(sa) == len(students) == len(x)
    np.testing.assert_array_equal(sa[:MAX_BATCH], encode(x[:MAX_BATCH])[0])


def test_threads_encoding_at_once_each_get_their_own_answer(ov, int8_bundle):
    engine = create_engine(int8_bundle, "openvino")  # ks-serve: its live worker and a POSTed video's thread
    assert engine.runtime.startswith("openvino")
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((n, 3, 32, 32)).astype(np.float32) for n in (1, 2, 3, 5, 7, 9)]
    expected = [engine.encode(x) for x in inputs]  # one thread
    start = threading.Barrier(len(inputs))

    def calls(i: int) -> int:  # how many of its answers were not its own; one request shared raised "busy" too
        start.wait()
        answers = [engine.encode(inputs[i]) for _ in range(60)]
        return sum(
            not (np.array_equal(sa, expected[i][0]) and np.array_equal(st, expected[i][1])) for sa, st in answers
        )

    with ThreadPoolExecutor(len(inputs)) as pool:
        assert list(pool.map(calls, range(len(inputs)))) == [0] * len(inputs)  # an exception in a thread re-raised


def test_openvino_runs_int8_on_the_cpu_only(ov, int8_bundle):
    with pytest.raises(ConfigError, match="INT8 encoder only"):
        create_engine(int8_bundle, "openvino", precision="fp32")
    with pytest.raises(EngineError, match="runs on the CPU"):
        create_engine(int8_bundle, "openvino", device="cuda")


def test_ks_run_takes_the_openvino_engine(ov, int8_bundle, tmp_path, capsys):
    args = [str(int8_bundle), "--input", "synthau:tiny:S01:T1", "--csv", str(tmp_path / "a.csv"), "--json"]
    assert main([*args, "--engine", "openvino"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["engine"].startswith("openvino (encoder encoder_int8")


def test_without_openvino_the_engine_says_what_to_install(int8_bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now fails as if not installed
    monkeypatch.delitem(sys.modules, "ks_runtime.engine.openvino", raising=False)
    with pytest.raises(EngineError, match=r"pip install \.\[openvino\]"):
        create_engine(int8_bundle, "openvino")
