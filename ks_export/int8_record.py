"""What the INT8 encoder was verified on, written into the bundle: the check frames, the CPU, the error, the tolerance.

The runtime re-runs the same measurement (ks_runtime.engine.int8_check) on the CPU it loads the bundle on, and
runs the INT8 encoder only where the error stays within the tolerance recorded here: the error measured at
export plus INT8_DRIFT. The drift allows for what two correct executions of the same INT8 graph may differ by
(rounding in the float parts); a CPU whose integer kernels compute other sums exceeds it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime

from ks_export.manifest import write_manifest
from ks_export.quantize import spread_frames
from ks_runtime.core.bundle import CHECK_FRAMES, ENCODER_INT8, GRAPH_FILES, Manifest
from ks_runtime.engine.cpu import cpu_info
from ks_runtime.engine.int8_check import load_check_frames, measure
from ks_runtime.engine.ort_graphs import BundleGraphs
from ks_train.data.base import VideoSequence

log = logging.getLogger(__name__)

CHECK_FRAME_COUNT = 8  # a handful: the check runs at every load
# Allowed growth of max |p_int8 - p_fp32| from the export's CPU to another. On the export CPU (AVX512-VNNI, AMX),
# onnxruntime's integer kernels and its float reference of the same QDQ graph (ORT_DISABLE_ALL) differed by 0.009
# on the demo model's check frames (u8s7; 0.026 for u8s8): two correct executions. An AVX2 CPU's saturated u8s8
# sums moved probabilities by up to 0.45 (issue 18).
INT8_DRIFT = 0.05


def write_check_frames(work: Path, data: dict, sequences: list[VideoSequence], fold: int) -> np.ndarray:
    """check_frames.npy: CHECK_FRAME_COUNT test frames spread over every test video; the manifest's field."""
    frames = np.ascontiguousarray(spread_frames(sequences, CHECK_FRAME_COUNT), np.uint8)
    np.save(work / CHECK_FRAMES, frames, allow_pickle=False)
    data["check_frames"] = {
        "file": CHECK_FRAMES,
        "count": int(len(frames)),
        "dtype": "uint8",
        "shape": list(frames.shape),
        "source": f"the test part of fold {fold}: {len(frames)} frames spread evenly over its {len(sequences)} videos",
    }
    return frames


def record_int8_check(
    work: Path, data: dict, manifest: Manifest, sequences: list[VideoSequence], fold: int
) -> Manifest:
    """Write the check frames, run the INT8 and FP32 encoders on them here, and record the CPU, the error and the
    tolerance in the INT8 variant's entry; the manifest, rewritten."""
    write_check_frames(work, data, sequences, fold)
    manifest = write_manifest(work, data)
    fp32 = BundleGraphs(manifest, roles=("encoder", "head"))
    int8 = BundleGraphs(manifest, roles=("encoder", "head"), encoder_variant=ENCODER_INT8)
    measured = measure(fp32, int8, load_check_frames(manifest), manifest.policy)
    entry = data["variants"][ENCODER_INT8]
    entry["verified_on"] = {**cpu_info().to_dict(), "onnxruntime": onnxruntime.__version__}
    entry["check"] = {
        "frames": CHECK_FRAMES,
        "policy": measured.policy,
        "against": f"{GRAPH_FILES['encoder']} (FP32), each with head.onnx, onnxruntime CPU provider",
        "metric": "max |probability INT8 - FP32| over the check frames and AUs, dense",
        "max_abs_probs": measured.max_abs,
        "mean_abs_probs": measured.mean_abs,
        "drift": INT8_DRIFT,
        "tolerance": min(1.0, measured.max_abs + INT8_DRIFT),
    }
    log.info(
        "INT8 encoder against FP32 on %d check frames: max |dp| %.3f, mean %.4f; tolerance %.3f",
        measured.frames,
        measured.max_abs,
        measured.mean_abs,
        entry["check"]["tolerance"],
    )
    return write_manifest(work, data)


def int8_text(manifest: Manifest) -> str:
    """The export report's INT8 section: the scheme, where it was verified, the error and the tolerance."""
    entry = manifest.variants.get(ENCODER_INT8)
    if not entry or "check" not in entry:
        return ""
    quant, check, where = entry.get("quantization", {}), entry["check"], entry["verified_on"]
    flags = " ".join(f for f, present in (where.get("isa") or {}).items() if present) or "flags unknown"
    return (
        f"  scheme {quant.get('scheme', '?')}: weights {quant.get('weights', '?')}; activations "
        f"{quant.get('activations', '?')}; largest u8*s8 pair {quant.get('u8s8_pair_bound', '?')} "
        f"({'cannot' if quant.get('vnni_independent') else 'CAN'} saturate int16 on CPUs without VNNI)\n"
        f"  verified on {where['cpu']} ({where['machine']}: {flags}), onnxruntime {where['onnxruntime']}\n"
        f"  {check['frames']}: max |p_int8 - p_fp32| {check['max_abs_probs']:.3f} (mean {check['mean_abs_probs']:.4f}) "
        f"over {manifest.raw['check_frames']['count']} frames; tolerance at load {check['tolerance']:.3f} "
        f"(+{check['drift']})"
    )
