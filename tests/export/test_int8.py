"""The INT8 encoder means the same on every x86 CPU: 7-bit weights (no u8 x s8 pair can saturate int16 without
VNNI), and the manifest records where it was verified, how far it was from FP32 on the check frames, and the
tolerance the runtime checks it against at load."""

import numpy as np
import onnx
import onnxruntime
import pytest

from ks_export import ExportError
from ks_export.export import verify_bundle
from ks_export.int8_record import CHECK_FRAME_COUNT, INT8_DRIFT
from ks_export.quantize import INT8_SCHEME, INT16_MAX, SCHEMES, check_weights, int8_weight_max_abs, quantize_encoder
from ks_runtime.core import bundle as B
from ks_runtime.core.preprocess import to_network_input
from ks_runtime.engine.cpu import cpu_info
from ks_runtime.engine.int8_check import load_check_frames
from tests.runtime.engine.int8_edit import scale_output_dequantize


def int8_entry(bundle):
    return B.read_manifest(bundle).variants[B.ENCODER_INT8]


def test_the_int8_weights_are_7_bit_so_no_pair_of_products_can_saturate(bundle):
    quantization = int8_entry(bundle)["quantization"]
    assert quantization["scheme"] == INT8_SCHEME == "u8s7" and quantization["settings"]["reduce_range"]
    largest = int8_weight_max_abs(onnx.load(str(bundle / "encoder.int8.onnx")))  # read from the graph itself
    assert 32 < largest <= 64 and quantization["weight_max_abs"] == largest
    assert 2 * 255 * largest <= INT16_MAX and quantization["vnni_independent"]


def test_only_the_schemes_whose_pairs_fit_int16_are_vnni_independent():
    # s8s8 is not: onnxruntime runs int8 QDQ activations as uint8 on x86, against the same 8-bit weights
    assert {name: s.vnni_independent for name, s in SCHEMES.items()} == {
        "u8s7": True,
        "u8s8": False,
        "s8s8": False,
        "u8u8": True,
        "u8s7-tensor": True,
    }


def test_the_weight_check_catches_8_bit_weights_under_a_7_bit_scheme(bundle, tmp_path):
    frames = to_network_input(load_check_frames(B.read_manifest(bundle)), B.read_manifest(bundle).preprocess)
    out = tmp_path / "encoder.u8s8.onnx"
    settings = quantize_encoder(bundle / "encoder.onnx", out, frames, scheme="u8s8")
    assert settings["weight_max_abs"] > 64 and not settings["vnni_independent"]
    with pytest.raises(ExportError, match=r"encoder\.u8s8\.onnx: an int8 weight of magnitude .* reduce_range"):
        check_weights(out, SCHEMES["u8s7"])
    with pytest.raises(ExportError, match="known schemes are u8s7"):
        quantize_encoder(bundle / "encoder.onnx", out, frames, scheme="u4s4")


def test_the_manifest_records_where_int8_was_verified_and_its_tolerance(exported):
    bundle, report = exported
    manifest = B.read_manifest(bundle)
    entry = manifest.variants[B.ENCODER_INT8]
    assert entry["verified_on"] == {**cpu_info().to_dict(), "onnxruntime": onnxruntime.__version__}
    check = entry["check"]
    assert check["frames"] == B.CHECK_FRAMES and B.CHECK_FRAMES in manifest.files
    assert check["policy"] == manifest.policy and check["drift"] == INT8_DRIFT
    assert 0 < check["max_abs_probs"] <= check["tolerance"] == pytest.approx(check["max_abs_probs"] + INT8_DRIFT)
    frames = load_check_frames(manifest)
    size = manifest.preprocess.size
    assert frames.shape == (CHECK_FRAME_COUNT, size, size, 3) and frames.dtype == np.uint8
    assert len({f.tobytes() for f in frames}) == CHECK_FRAME_COUNT  # spread over the test videos, all different
    assert manifest.raw["check_frames"]["count"] == CHECK_FRAME_COUNT
    text = report.text()
    assert "== INT8 encoder" in text and cpu_info().model in text and f"{check['tolerance']:.3f}" in text


def test_verify_runs_the_load_time_check_and_reports_a_cpu_it_fails_on(bundle_copy):
    assert f"{B.ENCODER_INT8} load-time check on this CPU: OK" in verify_bundle(bundle_copy)
    scale_output_dequantize(bundle_copy, 4.0)
    text = verify_bundle(bundle_copy)  # the bundle is sound: reported, not refused
    assert "load-time check on this CPU: FAILS" in text and "BEYOND the tolerance" in text
    assert text.endswith("bundle OK")
