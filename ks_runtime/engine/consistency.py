"""encoder -> head = clip.onnx, re-checked whenever an engine opens a bundle: graphs that disagree are refused.

The hashes prove the files are the ones the manifest lists; they cannot prove the manifest lists the graphs the
export verified, since a manifest re-hashed over changed weights passes them. The export verified that the encoder
followed by the head computes what the fused clip graph computes (docs/bundle-format.md); this runs that check again
on inputs the bundle fixes: its check frames (check_frames.npy, written with --int8), else seeded noise frames. The
graphs run in FP32 on onnxruntime's CPU provider whatever the engine then runs, and agree to ~1e-7 when sound; past
CONSISTENCY_ATOL the bundle is refused before the first frame. It costs milliseconds on the demo model (the numbers
and the command are in docs/bundle-format.md, "Contract"). It catches a graph changed on its own, not a forger who
changes all three graphs alike: that would need a signature.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from ks_runtime.core.bundle import CHECK_FRAMES, MANIFEST, Manifest
from ks_runtime.core.errors import BundleError
from ks_runtime.core.preprocess import to_network_input
from ks_runtime.engine.int8_check import load_check_frames
from ks_runtime.engine.ort_graphs import BundleGraphs

log = logging.getLogger(__name__)

CONSISTENCY_ATOL = 1e-4  # on probabilities: the export's own encoder -> head = clip.onnx tolerance (PROB_TOL)
NOISE_SEED = 19  # the inputs of a bundle without check frames: n frames of uniform noise from this seed
CPU = ["CPUExecutionProvider"]


@dataclass(frozen=True)
class Consistency:
    """encoder -> head against clip.onnx: the largest |difference| of probabilities, on what, and how long it took."""

    bundle: str
    max_abs: float
    inputs: str
    key_slots: tuple[int, ...]
    seconds: float

    @property
    def passed(self) -> bool:
        return self.max_abs <= CONSISTENCY_ATOL

    def text(self) -> str:
        verdict = "within" if self.passed else "BEYOND"
        return (
            f"{self.bundle}: encoder -> head = clip.onnx on {self.inputs}, key slots {list(self.key_slots)}: max abs "
            f"{self.max_abs:.1e}, {verdict} {CONSISTENCY_ATOL:.0e} ({self.seconds * 1e3:.0f} ms)"
        )


def check_inputs(manifest: Manifest) -> tuple[np.ndarray, str]:
    """One clip of n uint8 RGB frames [n, S, S, 3] the bundle fixes, and what they are."""
    n, size = manifest.clip_len, manifest.preprocess.size
    if isinstance(manifest.raw.get("check_frames"), dict):
        frames = load_check_frames(manifest)
        return frames[np.arange(n) % len(frames)], f"{manifest.raw['check_frames'].get('file', CHECK_FRAMES)}"
    noise = np.random.default_rng(NOISE_SEED).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return noise, f"{n} noise frames (seed {NOISE_SEED}; the bundle has no check frames)"


def key_slots(n: int) -> tuple[int, ...]:
    """The key slots checked: first, middle and last (each a different path through the head)."""
    return tuple(sorted({0, n // 2, n - 1}))


def _fp32_on_cpu(manifest: Manifest, graphs: BundleGraphs | None) -> bool:
    """Whether `graphs` are the FP32 encoder and head on the CPU provider, so the check can reuse their sessions."""
    if graphs is None or not {"encoder", "head"} <= set(graphs.sessions):
        return False
    sessions = (graphs.sessions["encoder"], graphs.sessions["head"])
    return graphs.files["encoder"] == manifest.path("encoder") and all(s.get_providers() == CPU for s in sessions)


def check_consistency(manifest: Manifest, graphs: BundleGraphs | None = None, threads: int = 0) -> Consistency:
    """Run encoder -> head and clip.onnx on `check_inputs` at `key_slots`; BundleError past CONSISTENCY_ATOL.

    `graphs`: the engine's own sessions, reused when they are the FP32 encoder and head on the CPU provider."""
    started = time.perf_counter()
    fp32 = graphs if _fp32_on_cpu(manifest, graphs) else BundleGraphs(manifest, ("encoder", "head"), CPU, threads)
    fused = BundleGraphs(manifest, ("clip",), CPU, threads)
    frames, inputs = check_inputs(manifest)
    clip = to_network_input(frames, manifest.preprocess)  # (n, 3, S, S)
    slots = np.array(key_slots(manifest.clip_len), np.int64)
    k = len(slots)
    sa, students = fp32.encode(clip)
    composed = fp32.head(np.broadcast_to(sa, (k, *sa.shape)), np.broadcast_to(students, (k, *students.shape)), slots)
    reference = fused.clip(np.broadcast_to(clip, (k, *clip.shape)), slots)
    diff = np.abs(composed.astype(np.float64) - reference.astype(np.float64))
    max_abs = float(diff.max()) if np.isfinite(diff).all() else math.inf
    result = Consistency(
        str(manifest.root), max_abs, inputs, tuple(int(s) for s in slots), time.perf_counter() - started
    )
    if not result.passed:
        files = ", ".join(manifest.graphs[r].file for r in ("encoder", "head", "clip"))
        raise BundleError(
            f"{result.text()}: {files} (fields 'graphs.encoder', 'graphs.head', 'graphs.clip' of {MANIFEST}) are not "
            f"the graphs the export verified together: one was changed and the manifest re-hashed over it; "
            f"re-export the bundle"
        )
    log.debug("%s", result.text())
    return result


def checked_fp32(manifest: Manifest, threads: int = 0) -> tuple[BundleGraphs, Consistency]:
    """The bundle's FP32 encoder and head on the CPU, checked against its clip graph first: an INT8 encoder is
    judged against them, so they must be the graphs the export verified."""
    fp32 = BundleGraphs(manifest, roles=("encoder", "head"), providers=("CPUExecutionProvider",), threads=threads)
    return fp32, check_consistency(manifest, fp32, threads)
