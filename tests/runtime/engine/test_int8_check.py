"""The INT8 encoder's load-time check (ks_runtime/engine/int8_check.py) through OrtEngine(precision="int8"): it
runs INT8 where INT8 is within the bundle's tolerance of FP32 on its check frames here, and otherwise warns and
runs FP32, or refuses when insisted on. A CPU that sums differently is played by an edited INT8 scale."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from ks_runtime.core import bundle as B
from ks_runtime.core.errors import ConfigError
from ks_runtime.core.preprocess import to_network_input
from ks_runtime.engine import EngineError
from ks_runtime.engine.cpu import cpu_info
from ks_runtime.engine.int8_check import load_check_frames
from ks_runtime.engine.ort import OrtEngine
from ks_runtime.engine.ort_graphs import BundleGraphs
from tests.runtime.engine.int8_edit import edit_manifest, scale_output_dequantize


@pytest.fixture()
def int8_copy(int8_bundle, tmp_path):
    return shutil.copytree(int8_bundle, tmp_path / "bundle")


def check_input(bundle):
    manifest = B.read_manifest(bundle)
    return to_network_input(load_check_frames(manifest), manifest.preprocess)


def test_the_int8_encoder_runs_where_it_passes_its_check(int8_bundle):
    engine = OrtEngine(int8_bundle, precision="int8")
    record = engine.manifest.variants[B.ENCODER_INT8]["check"]
    assert engine.variant == B.ENCODER_INT8 and engine.int8_check.passed
    # the same CPU as the export's: the measurement repeats exactly, well inside the tolerance
    assert engine.int8_check.measured.max_abs == pytest.approx(record["max_abs_probs"], abs=1e-6)
    assert engine.int8_check.tolerance == pytest.approx(record["max_abs_probs"] + record["drift"])
    x = check_input(int8_bundle)
    int8 = BundleGraphs(int8_bundle, roles=("encoder",), encoder_variant=B.ENCODER_INT8).encode(x)
    fp32 = BundleGraphs(int8_bundle, roles=("encoder",)).encode(x)
    np.testing.assert_array_equal(engine.encode(x)[0], int8[0])
    assert not np.array_equal(int8[0], fp32[0])  # it really is the INT8 graph that runs
    assert "encoder encoder_int8" in engine.describe()


def test_a_change_within_the_tolerance_keeps_int8(int8_copy):
    scale_output_dequantize(int8_copy, 1.02)  # logits 2% larger: probabilities move, by less than the drift
    engine = OrtEngine(int8_copy, precision="int8")
    record = engine.manifest.variants[B.ENCODER_INT8]["check"]
    assert engine.int8_check.measured.max_abs != pytest.approx(record["max_abs_probs"], abs=1e-6)
    assert engine.int8_check.passed and engine.variant == B.ENCODER_INT8


def test_an_int8_encoder_beyond_the_tolerance_falls_back_to_fp32_with_a_warning(int8_copy, caplog):
    assert OrtEngine(int8_copy, precision="int8").variant == B.ENCODER_INT8
    scale_output_dequantize(int8_copy, 4.0)  # the same folder, edited: nothing from the first load is reused
    with caplog.at_level(logging.WARNING, logger="ks_runtime.engine.int8_check"):
        engine = OrtEngine(int8_copy, precision="int8")
    check = engine.int8_check
    assert engine.variant is None and not check.passed and check.measured.max_abs > check.tolerance
    x = check_input(int8_copy)
    np.testing.assert_array_equal(engine.encode(x)[0], BundleGraphs(int8_copy, roles=("encoder",)).encode(x)[0])
    warning = caplog.records[-1].getMessage()
    for part in (str(int8_copy), cpu_info().model, f"{check.measured.max_abs:.3f}", "BEYOND the tolerance", "FP32"):
        assert part in warning
    assert "failed its check" in engine.describe()


def test_insisting_on_int8_refuses_naming_the_bundle_the_cpu_and_the_error(int8_copy):
    scale_output_dequantize(int8_copy, 4.0)
    with pytest.raises(EngineError) as info:
        OrtEngine(int8_copy, precision="int8", insist_int8=True)
    message = str(info.value)
    for part in (str(int8_copy), cpu_info().text(), "max |p_int8 - p_fp32|", "BEYOND the tolerance", "refusing"):
        assert part in message


def test_a_bundle_without_a_check_record_is_not_trusted(int8_copy, caplog):
    edit_manifest(int8_copy, lambda data: data["variants"][B.ENCODER_INT8].pop("check"))
    with caplog.at_level(logging.WARNING, logger="ks_runtime.engine.int8_check"):
        assert OrtEngine(int8_copy, precision="int8").variant is None
    assert "field 'variants.encoder_int8.check'" in caplog.records[-1].getMessage()
    with pytest.raises(EngineError, match="not checked"):
        OrtEngine(int8_copy, precision="int8", insist_int8=True)


def test_a_bundle_without_int8_runs_fp32_or_is_refused(bundle):
    assert OrtEngine(bundle, precision="int8").variant is None
    with pytest.raises(EngineError, match="no encoder_int8 variant"):
        OrtEngine(bundle, precision="int8", insist_int8=True)


def test_int8_is_a_cpu_precision(int8_bundle):
    with pytest.raises(ConfigError, match="runs the INT8 encoder on the CPU provider"):
        OrtEngine(int8_bundle, device="cuda", precision="int8")
    with pytest.raises(ConfigError, match="auto, fp32, int8"):
        OrtEngine(int8_bundle, precision="int4")
    assert OrtEngine(int8_bundle).variant is None  # "auto" on the CPU stays FP32: INT8 is asked for
