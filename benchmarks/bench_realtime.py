"""Item 5: paper-r50 in real time on this CPU, end to end (a decoded frame in memory -> its result), through the
runtime (`Detector.stream`, policy `last`, encoder batches of up to 8, frames handed over as fast as it takes them):
aligned SynthAU at 224 px in FP32 and in INT8, and raw 640 x 480 SynthAU scene video through the `haar` face stage.
Decoding is timed on its own (rows 1d, 5d): OpenCV's decoder on the same frames written as video files.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from benchmarks.harness import R50_MODEL, Row, Target, interleaved, quick
from ks_runtime.detector import Detector
from ks_runtime.io.sources import ArraySource, VideoSource
from ks_runtime.synth.generate import SynthConfig
from ks_runtime.synth.scene import render_scene_sequence, write_scene_video

BOUNDARY = (
    "decoded RGB frames in memory -> per-frame AU probabilities through the runtime (Detector.stream over an "
    "ArraySource: face stage, preprocessing, encoder batches of up to 8, ring, head, its threads); output "
    "frames per second over {frames} frames a run, median of {what}"
)


@pytest.fixture(scope="module")
def scene():
    """SynthAU scene video (tiny set, subject 0, task 0: the face stays in view): 120 frames of 640 x 480."""
    return render_scene_sequence(SynthConfig(size="tiny"), 0, 0, (640, 480))


@pytest.fixture(scope="module")
def videos(tmp_path_factory, scene, aligned_frames):
    """The scene and the aligned frames written as video files: FFV1 (lossless) and mp4v (MPEG-4 part 2)."""
    folder = tmp_path_factory.mktemp("videos")
    paths = {}
    for suffix in (".mkv", ".mp4"):
        paths[f"scene{suffix}"] = write_scene_video(scene, folder / f"scene{suffix}")[0]
    aligned = dataclasses.replace(scene, frames=aligned_frames)  # same ground truth rows, 224 px frames
    for suffix in (".mkv", ".mp4"):
        paths[f"aligned{suffix}"] = write_scene_video(aligned, folder / f"aligned{suffix}")[0]
    return paths


def streamer(detector, frames: np.ndarray, last: list):
    """One end-to-end run over `frames`; the latest run's results are kept in `last` (to count faces)."""

    def run() -> None:
        last[:] = list(detector.stream(ArraySource(frames, fps=25.0)))

    return run


def int8_detector(bundle, **kwargs):
    """A Detector that runs the bundle's INT8 encoder, refusing to fall back to FP32 (the runtime's own choice)."""
    return Detector(bundle, precision="int8", insist_int8=True, **kwargs)


def encoder_gflops(bundle) -> float:
    # deferred: torch (the runtime's benchmarks run without it)
    from ks_export.flops import count_flops

    return count_flops(bundle / "encoder.onnx").gflops


def fp32_limit(recorder, bundle, target: Target) -> str:
    """What the target asks of the machine: the FP32 encoder's FLOPs at the target rate against this run's peak."""
    needed = encoder_gflops(bundle) * target.value
    peak = recorder.get("4a")
    if peak is None or peak.figure is None:
        return f"; the target needs {needed:.0f} GFLOP/s for the encoder alone"
    return (
        f"; the target needs {needed:.0f} GFLOP/s for the encoder alone, this run's sgemm peak was "
        f"{peak.details['peak_gflops_per_s']:.0f} (row 4a)"
    )


def run_row(
    benchmark,
    record,
    key: str,
    name: str,
    detector,
    frames: np.ndarray,
    target: Target,
    what: str,
    budget_s: float = 40,
    limit: str = "",
) -> Row:
    results: list = []
    benchmark.group = f"5 real time: {name}"
    samples = interleaved(
        benchmark,
        {"run": streamer(detector, frames, results)},
        budget_s=budget_s,
        frames_per_call={"run": len(frames)},
        min_rounds=3,
    )["run"]
    faces = sum(r.success for r in results)
    return record(
        Row(
            key=key,
            item=5,
            name=name,
            figure=samples.fps,
            unit=" fps",
            target=target,
            model=R50_MODEL,
            boundary=BOUNDARY.format(frames=len(frames), what=f"{len(samples.seconds)} runs") + what,
            details={
                "runs": samples.summary(),
                "frames": len(frames),
                "faces_found": faces,
                "engine": detector.engine.describe(),
                "face_stage": detector.face,
            },
            note=f"{samples.fps:.1f} fps, {1e3 / samples.fps:.1f} ms a frame; faces found in {faces}/{len(frames)} "
            "frames" + limit,
        )
    )


def frames_for_run(frames: np.ndarray) -> np.ndarray:
    return frames[:24] if quick() else frames


def test_aligned_fp32(benchmark, record, recorder, r50_bundle, aligned_frames):
    detector = Detector(r50_bundle, policy="last", face="aligned", batch_size=8)
    target = Target(">=", 40, " fps")
    run_row(
        benchmark,
        record,
        "5a",
        "Real time, aligned 224 px, FP32",
        detector,
        frames_for_run(aligned_frames),
        target,
        "; aligned SynthAU (tiny, subject 0, task 0) at 224 px",
        limit=fp32_limit(recorder, r50_bundle, target),
    )


def test_raw_video_fp32(benchmark, record, recorder, r50_bundle, scene):
    detector = Detector(r50_bundle, policy="last", face="haar", batch_size=8)
    target = Target(">=", 30, " fps")
    run_row(
        benchmark,
        record,
        "5b",
        "Real time, raw 640 x 480 video with haar tracking, FP32",
        detector,
        frames_for_run(scene.frames),
        target,
        "; raw 640 x 480 SynthAU scene video (tiny, subject 0, task 0), face stage `haar` (OpenCV cascades, "
        "tracked, similarity-aligned to the bundle's template)",
        limit=fp32_limit(recorder, r50_bundle, target),
    )


def test_aligned_int8(benchmark, record, recorder, r50_bundle, aligned_frames):
    detector = int8_detector(r50_bundle, policy="last", face="aligned", batch_size=8)
    encoder = recorder.get("3b")
    limit = (
        (
            f"; the INT8 encoder alone took {encoder.details['int8']['ms_per_frame']:.1f} ms a frame at batch 8 "
            f"(row 3b), the target allows {1e3 / 120:.1f}"
        )
        if encoder is not None
        else ""
    )
    run_row(
        benchmark,
        record,
        "5c",
        "Real time, aligned 224 px, INT8",
        detector,
        frames_for_run(aligned_frames),
        Target(">=", 120, " fps"),
        "; aligned SynthAU at 224 px, encoder.int8.onnx",
        budget_s=25,
        limit=limit,
    )


def test_decoding(benchmark, record, videos):
    def decode(path):
        return lambda: sum(1 for _ in VideoSource(path))

    counts = {name: decode(path)() for name, path in videos.items()}
    benchmark.group = "1d/5d decoding"
    samples = interleaved(
        benchmark,
        {name: decode(path) for name, path in videos.items()},
        budget_s=10,
        frames_per_call=counts,
        min_rounds=3,
    )
    summary = {name: s.summary() for name, s in samples.items()}
    for key, item, kind, size in (("1d", 1, "aligned", "224 x 224"), ("5d", 5, "scene", "640 x 480")):
        mp4, mkv = samples[f"{kind}.mp4"], samples[f"{kind}.mkv"]
        record(
            Row(
                key=key,
                item=item,
                name=f"Decoding, {size} video (reported on its own)",
                figure=mp4.fps,
                unit=" fps",
                model="none (OpenCV's video decoder)",
                boundary=f"io.sources.VideoSource over a {counts[f'{kind}.mp4']}-frame {size} file, open to last "
                f"frame, BGR -> RGB; figure: mp4v (MPEG-4 part 2); details: FFV1 (lossless) too",
                details={"mp4v": summary[f"{kind}.mp4"], "ffv1": summary[f"{kind}.mkv"]},
                note=f"mp4v {mp4.fps:.0f} fps, FFV1 {mkv.fps:.0f} fps",
            )
        )
