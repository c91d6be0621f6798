"""INT8 reachable (issue 18): `create_engine`, `Detector` and `ks-run` take a precision, and INT8 asked for on a
bundle whose check passes here runs the INT8 graph; the check itself is test_int8_check.py's."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest

from ks_runtime.cli import main
from ks_runtime.core import bundle as B
from ks_runtime.core.errors import ConfigError
from ks_runtime.detector import Detector
from ks_runtime.engine import create_engine
from ks_runtime.engine.ort_graphs import BundleGraphs
from tests.runtime.conftest import synth_frames
from tests.runtime.engine.int8_edit import scale_output_dequantize
from tests.runtime.engine.test_int8_check import check_input


def probs(results):
    return np.stack([r.probs for r in results])


def test_create_engine_passes_the_precision_on(int8_bundle):
    assert create_engine(int8_bundle, precision="int8").variant == B.ENCODER_INT8
    assert create_engine(int8_bundle).variant is None and create_engine(int8_bundle, precision="fp32").variant is None
    with pytest.raises(ConfigError, match="precision 'int4': one of auto, fp32, int8"):
        create_engine(int8_bundle, precision="int4")
    with pytest.raises(ConfigError, match="insist_int8"):
        create_engine(int8_bundle, insist_int8=True)
    with pytest.raises(ConfigError, match="INT8 encoder on the CPU provider"):
        create_engine(int8_bundle, device="cuda", precision="int8")


def test_a_detector_asked_for_int8_runs_the_int8_graph(int8_bundle):
    frames = synth_frames(10, size=32)[0]
    int8 = Detector(int8_bundle, precision="int8", insist_int8=True)
    x = check_input(int8_bundle)
    graph = BundleGraphs(int8_bundle, roles=("encoder",), encoder_variant=B.ENCODER_INT8).encode(x)
    np.testing.assert_array_equal(int8.engine.encode(x)[0], graph[0])
    streamed, fp32 = probs(int8.stream(frames)), probs(Detector(int8_bundle).stream(frames))
    assert not np.array_equal(streamed, fp32)  # another graph ran ...
    tolerance = int8.engine.manifest.variants[B.ENCODER_INT8]["check"]["tolerance"]
    assert np.abs(streamed - fp32).max() <= tolerance  # ... within the check's tolerance of FP32
    assert "encoder encoder_int8" in int8.summary.engine


def test_ks_run_precision_int8_runs_int8_and_says_so(int8_bundle, tmp_path, capsys):
    base = [str(int8_bundle), "--input", "synthau:tiny:S01:T1", "--csv", str(tmp_path / "a.csv"), "--json"]
    assert main([*base, "--no-progress", "--precision", "int8", "--insist-int8"]) == 0
    assert "encoder encoder_int8" in json.loads(capsys.readouterr().out.splitlines()[-1])["engine"]
    assert main([*base, "--no-progress"]) == 0  # the default: FP32 on the CPU
    assert "encoder_int8" not in json.loads(capsys.readouterr().out.splitlines()[-1])["engine"]


def test_ks_run_int8_that_fails_its_check_falls_back_or_is_refused(int8_bundle, tmp_path, capsys, caplog):
    copy = shutil.copytree(int8_bundle, tmp_path / "bundle")
    scale_output_dequantize(copy, 4.0)  # what a CPU that sums differently would do
    base = [str(copy), "--input", "synthau:tiny:S01:T1", "--csv", str(tmp_path / "a.csv"), "--precision", "int8"]
    with caplog.at_level(logging.WARNING, logger="ks_runtime.engine.int8_check"):
        assert main([*base, "--json"]) == 0
    assert "failed its check" in json.loads(capsys.readouterr().out.splitlines()[-1])["engine"]
    assert "BEYOND the tolerance" in caplog.text
    assert main([*base, "--insist-int8"]) == 1
    assert "refusing" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main([str(copy), "--input", "synthau:tiny:S01:T1", "--insist-int8"])
    assert usage.value.code == 2 and "--precision int8" in capsys.readouterr().err
