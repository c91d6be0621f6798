"""INT8 encoder: onnxruntime static quantisation (QDQ), calibrated on SynthAU training frames.

The scheme is a named setting (`SCHEMES`, default `INT8_SCHEME`), recorded in the manifest. The default, `u8s7`,
quantises weights to 7 bits (onnxruntime's `reduce_range`: int8 in [-64, 64], per channel) and activations to
uint8. Why 7 bits: on x86 CPUs without VNNI, onnxruntime's u8 x s8 kernels multiply with `vpmaddubsw`, which adds
two u8 * s8 products into a saturating int16; 255 * 127 * 2 = 64770 can overflow it, and the INT8 encoder then
means something else on an AVX2-only CPU than on a VNNI one. With |weight| <= 64 the pair is at most
255 * 64 * 2 = 32640 <= 32767, so every kernel (AVX2, AVX-512, VNNI, AMX) computes the same exact int32 sums.
Signed activations do not avoid it here: onnxruntime converts int8 QDQ activations to uint8 on x86
(QDQS8ToU8Transformer), so `s8s8` runs the same u8 x s8 kernels. Only the encoder is quantised: it is where the
time goes; the head is tiny and runs in FP32.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from ks_export import ExportError
from ks_export.onnx_export import quiet_loggers
from ks_runtime.core.bundle import FRAMES
from ks_runtime.core.preprocess import Preprocess, to_network_input
from ks_train.data.base import VideoSequence

log = logging.getLogger(__name__)

DEFAULT_CALIB = 256
CALIB_BATCH = 16
QUANT_LOGGERS = ("onnxruntime.quantization", "onnxruntime.quantization.shape_inference")
INT16_MAX = 32767  # vpmaddubsw's saturating int16 pair sum


@dataclass(frozen=True)
class Int8Scheme:
    """One way to quantise the encoder: onnxruntime's settings, and the largest pair of products an x86 u8 x s8
    kernel without VNNI adds in int16 (`pair_bound`); at most INT16_MAX means no CPU can saturate."""

    name: str
    activations: QuantType
    weights: QuantType
    per_channel: bool = True
    reduce_range: bool = False
    activation_symmetric: bool = False

    @property
    def weight_max_abs(self) -> int:
        """The largest |int8 weight| onnxruntime writes: int8 weights are symmetric, [-127, 127], or [-64, 64] with
        reduce_range (0 for uint8 weights: u8 x u8 kernels widen to 16 bits before multiplying)."""
        if self.weights != QuantType.QInt8:
            return 0
        return 64 if self.reduce_range else 127

    @property
    def pair_bound(self) -> int:
        # x86 onnxruntime runs int8 activations as uint8 (QDQS8ToU8Transformer): 0..255 either way.
        return 2 * 255 * self.weight_max_abs

    @property
    def vnni_independent(self) -> bool:
        return self.pair_bound <= INT16_MAX

    def describe(self) -> dict:
        """The manifest's record of the scheme."""
        kind = {QuantType.QInt8: "int8", QuantType.QUInt8: "uint8"}
        weights = kind[self.weights] + (" in [-64, 64] (reduce_range: 7 bits)" if self.reduce_range else "")
        return {
            "scheme": self.name,
            "weights": f"{weights}, {'symmetric' if self.weights == QuantType.QInt8 else 'asymmetric'}, "
            f"{'per channel' if self.per_channel else 'per tensor'}",
            "activations": f"{kind[self.activations]}, {'symmetric' if self.activation_symmetric else 'asymmetric'}",
            "settings": {
                "activation_type": self.activations.name,
                "weight_type": self.weights.name,
                "per_channel": self.per_channel,
                "reduce_range": self.reduce_range,
                "extra_options": self.extra_options(),
            },
            "u8s8_pair_bound": self.pair_bound,
            "vnni_independent": self.vnni_independent,
        }

    def extra_options(self) -> dict:
        return {"ActivationSymmetric": True} if self.activation_symmetric else {}


SCHEMES = {
    s.name: s
    for s in (
        Int8Scheme("u8s7", QuantType.QUInt8, QuantType.QInt8, reduce_range=True),
        Int8Scheme("u8s8", QuantType.QUInt8, QuantType.QInt8),
        Int8Scheme("s8s8", QuantType.QInt8, QuantType.QInt8, activation_symmetric=True),
        Int8Scheme("u8u8", QuantType.QUInt8, QuantType.QUInt8),
        Int8Scheme("u8s7-tensor", QuantType.QUInt8, QuantType.QInt8, per_channel=False, reduce_range=True),
    )
}
INT8_SCHEME = "u8s7"  # docs/bundle-format.md, "INT8 on every x86 CPU": the measurements behind the choice


def spread_frames(sequences: Sequence[VideoSequence], count: int) -> np.ndarray:
    """`count` frames spread evenly over all frames of `sequences`, as stored: uint8 RGB [count, H, W, 3]."""
    total = sum(len(s) for s in sequences)
    if total == 0:
        raise ExportError("no frames to pick from: that part of the data is empty")
    picks = np.unique(np.linspace(0, total - 1, min(count, total)).round().astype(np.int64))
    starts = np.cumsum([0] + [len(s) for s in sequences])
    frames = []
    for i, sequence in enumerate(sequences):
        local = picks[(picks >= starts[i]) & (picks < starts[i + 1])] - starts[i]
        if len(local):
            frames.append(sequence.load(local))
    return np.concatenate(frames)


def calibration_frames(sequences: Sequence[VideoSequence], preprocess: Preprocess, count: int) -> np.ndarray:
    """`count` frames spread evenly over all frames of `sequences`, preprocessed: float32 [count, 3, S, S]."""
    if count < 1:
        raise ExportError(f"--calib {count}: calibration needs at least one frame")
    if sum(len(s) for s in sequences) == 0:
        raise ExportError("no calibration frames: the training part of the data is empty")
    return to_network_input(spread_frames(sequences, count), preprocess)


class FrameReader(CalibrationDataReader):
    """Feeds calibration frames to onnxruntime's calibrator in batches."""

    def __init__(self, frames: np.ndarray, batch: int = CALIB_BATCH) -> None:
        self.batches = [frames[i : i + batch] for i in range(0, len(frames), batch)]
        self.rewind()

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = iter({FRAMES: b} for b in self.batches)


class _AxisWarningFilter(logging.Filter):
    """onnxruntime warns (on the root logger) for every rank-1 LayerNorm weight that per-channel quantisation
    leaves per-tensor; expected for a transformer, so dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is out-of-range for weight" not in record.getMessage()


@contextmanager
def _without_axis_warnings():
    root, dropper = logging.getLogger(), _AxisWarningFilter()
    root.addFilter(dropper)
    try:
        yield
    finally:
        root.removeFilter(dropper)


def int8_weight_max_abs(model: onnx.ModelProto) -> int:
    """The largest |value - zero point| of the int8 initialisers that DequantizeLinear nodes read (the weights)."""
    initializers = {t.name: t for t in model.graph.initializer}
    largest = 0
    for node in model.graph.node:
        tensor = initializers.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if tensor is None or tensor.data_type != onnx.TensorProto.INT8:
            continue
        values = numpy_helper.to_array(tensor).astype(np.int32)
        zero = initializers.get(node.input[2]) if len(node.input) > 2 else None
        if zero is not None:
            zero_point = numpy_helper.to_array(zero).astype(np.int32)
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            if zero_point.ndim == 1 and values.ndim > 1:
                zero_point = np.expand_dims(zero_point, [d for d in range(values.ndim) if d != axis % values.ndim])
            values = values - zero_point
        largest = max(largest, int(np.abs(values).max(initial=0)))
    return largest


def check_weights(out_path: Path, scheme: Int8Scheme) -> int:
    """The written graph's int8 weights stay within the scheme's range; the largest |weight|."""
    largest = int8_weight_max_abs(onnx.load(str(out_path)))
    if scheme.weights == QuantType.QInt8 and largest > scheme.weight_max_abs:
        raise ExportError(
            f"{out_path}: an int8 weight of magnitude {largest} in scheme {scheme.name!r}, which promises at most "
            f"{scheme.weight_max_abs}: onnxruntime did not apply reduce_range; the INT8 encoder could saturate on "
            f"CPUs without VNNI"
        )
    return largest


def quantize_encoder(fp32_path: Path, out_path: Path, frames: np.ndarray, scheme: str = INT8_SCHEME) -> dict:
    """Write the INT8 (QDQ) encoder to `out_path` under a scheme of SCHEMES; returns the settings, for the
    manifest."""
    if scheme not in SCHEMES:
        raise ExportError(f"INT8 scheme {scheme!r}: known schemes are {', '.join(SCHEMES)}")
    chosen = SCHEMES[scheme]
    with tempfile.TemporaryDirectory(prefix="ks-quant-") as tmp:
        prepared = _prepared(fp32_path, Path(tmp) / "encoder.prep.onnx")
        try:
            with quiet_loggers(QUANT_LOGGERS, logging.WARNING), _without_axis_warnings():
                quantize_static(
                    str(prepared),
                    str(out_path),
                    FrameReader(frames),
                    quant_format=QuantFormat.QDQ,
                    per_channel=chosen.per_channel,
                    reduce_range=chosen.reduce_range,
                    weight_type=chosen.weights,
                    activation_type=chosen.activations,
                    calibrate_method=CalibrationMethod.MinMax,
                    calibration_providers=["CPUExecutionProvider"],
                    extra_options=chosen.extra_options(),
                )
        except Exception as error:
            raise ExportError(f"{out_path}: INT8 quantisation failed ({type(error).__name__}: {error})") from error
    return {
        "tool": "onnxruntime.quantization.quantize_static",
        "format": "QDQ",
        **chosen.describe(),
        "weight_max_abs": check_weights(out_path, chosen),
        "calibration": {"method": "MinMax", "frames": int(len(frames)), "batch": CALIB_BATCH},
    }


def _prepared(fp32_path: Path, prepared: Path) -> Path:
    """onnxruntime's pre-processing (shape inference, graph optimisation); the exported graph where it fails."""
    try:
        with quiet_loggers(QUANT_LOGGERS, logging.WARNING):
            quant_pre_process(str(fp32_path), str(prepared))
        return prepared
    except Exception as error:  # symbolic shape inference can fail on exotic graphs: quantise unprepared
        log.warning("%s: quant_pre_process failed (%s); quantising the graph as exported", fp32_path, error)
        return fp32_path
