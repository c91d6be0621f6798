"""The INT8 encoder, checked on the CPU it is about to run on, before it scores a frame.

An INT8 graph's integer sums depend on the CPU's kernels (docs/bundle-format.md, "INT8 on every x86 CPU"), so a
bundle records how far its INT8 encoder was from FP32 on its check frames where it was exported, and a tolerance.
Before an engine runs the INT8 encoder it runs it and the FP32 encoder on those frames here, and compares the
probabilities (encoder -> head, the manifest's policy). Within the tolerance the INT8 encoder runs; beyond it
(or with no check record) the engine warns and runs FP32, or refuses when told to insist. Nothing is cached:
the check runs at every load, on this CPU and this onnxruntime, in well under a second.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ks_runtime.core.bundle import ENCODER_INT8, MANIFEST, Manifest
from ks_runtime.core.errors import BundleError
from ks_runtime.engine.base import EngineError
from ks_runtime.engine.cpu import CpuInfo, cpu_info
from ks_runtime.engine.ort_graphs import BundleGraphs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Int8Measurement:
    """INT8 against FP32 probabilities on the check frames: the largest and mean |difference|."""

    max_abs: float
    mean_abs: float
    frames: int
    policy: str
    encoder_batches: tuple[int, ...] = ()  # INT8 encoder batch sizes measured, the worst kept (empty: all at once)


@dataclass(frozen=True)
class Int8Check:
    """The INT8 encoder on this CPU: measured against FP32 and judged by the bundle's tolerance, or why not."""

    bundle: Path
    cpu: CpuInfo
    measured: Int8Measurement | None = None
    tolerance: float = math.nan
    record: dict = field(default_factory=dict)  # the manifest's variant entry: check and verified_on
    problem: str = ""  # why the INT8 encoder could not be checked
    runtime: str = ""  # what ran it, e.g. "openvino 2026.4.1" (empty: onnxruntime)

    @property
    def passed(self) -> bool:
        return not self.problem and self.measured is not None and self.measured.max_abs <= self.tolerance

    def text(self) -> str:
        """One line: the bundle, this CPU and the runtime, the error against the tolerance, where it was verified."""
        runtime = self.runtime or f"onnxruntime {ort.__version__}"
        head = f"{self.bundle}: INT8 encoder on {self.cpu.text()}, {runtime}"
        if self.problem or self.measured is None:
            return f"{head}: not checked: {self.problem}"
        verdict = "within" if self.passed else "BEYOND"
        there = self.record.get("verified_on") or {}
        where = CpuInfo.from_dict(there).text() if there else "an unrecorded CPU"
        batches = self.measured.encoder_batches
        at = f" at encoder batches {', '.join(map(str, batches))}" if batches else ""
        return (
            f"{head}: max |p_int8 - p_fp32| {self.measured.max_abs:.3f} over {self.measured.frames} check frames{at}, "
            f"{verdict} the tolerance {self.tolerance:.3f} (field 'variants.{ENCODER_INT8}.check.tolerance'); "
            f"{self.record['check']['max_abs_probs']:.3f} where it was verified, on {where}, onnxruntime "
            f"{there.get('onnxruntime', '?')}"
        )


def load_check_frames(manifest: Manifest) -> np.ndarray:
    """The bundle's check frames, uint8 RGB [N, S, S, 3]; BundleError naming the file or field otherwise."""
    spec = manifest.raw.get("check_frames")
    if not isinstance(spec, dict):
        raise BundleError(f"{manifest.root / MANIFEST}: no field 'check_frames' (re-export the bundle with --int8)")
    path = manifest.root / spec["file"]
    try:  # the hash-checked bytes, not a second open of the path
        frames = np.load(io.BytesIO(manifest.read(spec["file"])), allow_pickle=False)
    except (OSError, ValueError) as error:
        raise BundleError(f"{path}: field 'check_frames.file' is not a numpy .npy array ({error})") from None
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) != spec["count"]:
        raise BundleError(
            f"{path}: {frames.dtype} {list(frames.shape)}, but field 'check_frames' promises {spec['count']} "
            f"uint8 RGB frames [N, S, S, 3]"
        )
    return frames


def measure(
    fp32: BundleGraphs, int8: BundleGraphs, frames: np.ndarray, policy: str, encoder_batches: tuple[int, ...] = ()
) -> Int8Measurement:
    """Both encoders (each with its graphs' head) densely on `frames` under `policy`, the INT8 one at each encoder
    batch size of `encoder_batches` (empty: all frames in one call), the worst kept; a NaN counts as infinite."""
    reference = fp32.dense_probabilities(frames, policy, batch_size=len(frames)).astype(np.float64)
    worst = None
    for batch in encoder_batches or (len(frames),):
        diff = np.abs(int8.dense_probabilities(frames, policy, batch_size=batch).astype(np.float64) - reference)
        if not np.isfinite(diff).all():
            return Int8Measurement(math.inf, math.inf, len(frames), policy, encoder_batches)
        if worst is None or diff.max() > worst.max():
            worst = diff
    return Int8Measurement(float(worst.max()), float(worst.mean()), len(frames), policy, encoder_batches)


def check_int8(
    manifest: Manifest,
    fp32: BundleGraphs,
    int8: BundleGraphs | None,
    encoder_batches: tuple[int, ...] = (),
    runtime: str = "",
) -> Int8Check:
    """Judge the INT8 encoder (`int8`, opened by the caller; None when the bundle has none) against `fp32` here.

    `encoder_batches`: measure the INT8 encoder at each of these batch sizes, the check frames repeated to fill the
    largest (for a runtime whose results may depend on the batch); `runtime` names what runs `int8` in the text."""
    cpu = cpu_info()
    entry = manifest.variants.get(ENCODER_INT8)
    if entry is None or int8 is None:
        problem = f"the bundle has no {ENCODER_INT8} variant (export with --int8)"
        return Int8Check(manifest.root, cpu, problem=problem, runtime=runtime)
    if "check" not in entry:
        return Int8Check(
            manifest.root,
            cpu,
            record=entry,
            problem=f"field 'variants.{ENCODER_INT8}.check' of {MANIFEST} is missing (exported before INT8 checks; "
            f"re-export the bundle)",
            runtime=runtime,
        )
    frames = load_check_frames(manifest)
    if encoder_batches and max(encoder_batches) > len(frames):
        frames = np.resize(frames, (max(encoder_batches), *frames.shape[1:]))  # repeated, in order
    measured = measure(fp32, int8, frames, entry["check"]["policy"], encoder_batches)
    return Int8Check(manifest.root, cpu, measured, float(entry["check"]["tolerance"]), entry, runtime=runtime)


def open_int8(
    manifest: Manifest, providers: list, threads: int, insist: bool = False, fp32: BundleGraphs | None = None
) -> tuple[BundleGraphs, str | None, Int8Check]:
    """The encoder and head to run when INT8 is asked for: (graphs, ENCODER_INT8 or None for FP32, the check).

    The INT8 encoder when it passes its check here; otherwise a warning and the FP32 graphs, or with `insist`
    an EngineError naming the bundle, the CPU and the error. `fp32`: the FP32 encoder and head, when already open.
    """
    if fp32 is None:
        fp32 = BundleGraphs(manifest, roles=("encoder", "head"), providers=providers, threads=threads)
    int8 = None
    if ENCODER_INT8 in manifest.variants:
        int8 = BundleGraphs(
            manifest, roles=("encoder", "head"), providers=providers, threads=threads, encoder_variant=ENCODER_INT8
        )
    check = check_int8(manifest, fp32, int8)
    if check.passed and int8 is not None:
        log.info("%s", check.text())
        return int8, ENCODER_INT8, check
    if insist:
        raise EngineError(f"{check.text()}; refusing to run it (the INT8 encoder was insisted on)")
    log.warning("%s; running the FP32 encoder instead", check.text())
    return fp32, None, check
