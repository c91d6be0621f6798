"""INT8 encoder: onnxruntime static quantisation (QDQ), calibrated on SynthAU training frames.

Weights int8 per channel; activations uint8, since on this CPU int8 activations ran slower than FP32.
Only the encoder is quantised: it is where the time goes; the head is tiny and runs in FP32.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
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


def calibration_frames(sequences: Sequence[VideoSequence], preprocess: Preprocess, count: int) -> np.ndarray:
    """`count` frames spread evenly over all frames of `sequences`, preprocessed: float32 [count, 3, S, S]."""
    if count < 1:
        raise ExportError(f"--calib {count}: calibration needs at least one frame")
    total = sum(len(s) for s in sequences)
    if total == 0:
        raise ExportError("no calibration frames: the training part of the data is empty")
    picks = np.unique(np.linspace(0, total - 1, min(count, total)).round().astype(np.int64))
    starts = np.cumsum([0] + [len(s) for s in sequences])
    frames = []
    for i, sequence in enumerate(sequences):
        local = picks[(picks >= starts[i]) & (picks < starts[i + 1])] - starts[i]
        if len(local):
            frames.append(to_network_input(sequence.load(local), preprocess))
    return np.concatenate(frames)


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


def quantize_encoder(fp32_path: Path, out_path: Path, frames: np.ndarray) -> dict:
    """Write the INT8 (QDQ) encoder to `out_path`; returns the settings, for the manifest."""
    with tempfile.TemporaryDirectory(prefix="ks-quant-") as tmp:
        prepared = Path(tmp) / "encoder.prep.onnx"
        try:
            with quiet_loggers(QUANT_LOGGERS, logging.WARNING):
                quant_pre_process(str(fp32_path), str(prepared))
        except Exception as error:  # symbolic shape inference can fail on exotic graphs: quantise unprepared
            log.warning("%s: quant_pre_process failed (%s); quantising the graph as exported", fp32_path, error)
            prepared = fp32_path
        try:
            with quiet_loggers(QUANT_LOGGERS, logging.WARNING), _without_axis_warnings():
                quantize_static(
                    str(prepared),
                    str(out_path),
                    FrameReader(frames),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    weight_type=QuantType.QInt8,
                    activation_type=QuantType.QUInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                    calibration_providers=["CPUExecutionProvider"],
                )
        except Exception as error:
            raise ExportError(f"{out_path}: INT8 quantisation failed ({type(error).__name__}: {error})") from error
    return {
        "tool": "onnxruntime.quantization.quantize_static",
        "format": "QDQ",
        "weights": "int8, per channel",
        "activations": "uint8",
        "calibration": {"method": "MinMax", "frames": int(len(frames)), "batch": CALIB_BATCH},
    }
