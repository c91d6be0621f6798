"""How well each face backend finds and aligns faces, scored against SynthAU scene-mode ground truth.

    python -m ks_runtime.tools.face_eval [--sequences 4] [--frames 300] [--backends haar,dlib] [--out table.md]

Scene videos (synth/scene.py) place a SynthAU face in a 640x480 frame, moving and now and then leaving it,
with the true face box and eye centres per frame. Per backend: the detection rate (frames with a visible
face where the stage reports success), false detections (success on frames without a face), the eye-centre
error relative to the inter-ocular distance (|found - true| averaged over the two eyes, over the detected
frames), the alignment error (the true eyes mapped into the aligned crop against the template's eyes, over
the template's inter-ocular distance: what the network sees), and the face stage's own speed.
`--measure-ratios` measures haar's EYE_RATIOS.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from ks_runtime.core.errors import ConfigError
from ks_runtime.core.preprocess import Preprocess
from ks_runtime.core.template import template_pixels
from ks_runtime.faces.align import align_matrix
from ks_runtime.faces.haar import HaarFaces
from ks_runtime.faces.registry import create_face_stage
from ks_runtime.synth.generate import SynthConfig
from ks_runtime.synth.scene import SceneOptions, SceneSequence, render_scene_sequence

log = logging.getLogger(__name__)

BACKENDS = ("haar", "dlib")
# The face leaves the frame once in every video (about 2 s out of 6), so false detections are measured too.
EVAL_OPTIONS = SceneOptions(exit_prob=1.0)
EVAL_CONFIG = SynthConfig(size="small", seed=11)


@dataclass
class FaceScore:
    """One backend on a set of scene videos."""

    backend: str
    frames: int
    face_frames: int
    detected: int  # face frames with success
    false_detections: int  # no-face frames with success
    eye_error: np.ndarray  # per detected face frame, |found - true| / inter-ocular distance
    crop_error: np.ndarray  # per detected face frame, the true eyes' error in the crop / template distance
    seconds: float  # face stage time over all frames
    detector_runs: int
    full_detections: int

    @property
    def detection_rate(self) -> float:
        return self.detected / self.face_frames if self.face_frames else float("nan")

    @property
    def no_face_frames(self) -> int:
        return self.frames - self.face_frames

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")

    def eye_stat(self, kind: str, errors: np.ndarray | None = None) -> float:
        """median, mean or p90 of the eye error (or of `errors`)."""
        errors = self.eye_error if errors is None else errors
        if not len(errors):
            return float("nan")
        if kind == "mean":
            return float(np.mean(errors))
        return float(np.percentile(errors, {"median": 50, "p90": 90}[kind]))

    def to_dict(self) -> dict:
        return {
            "backend": self.backend,
            "frames": self.frames,
            "face_frames": self.face_frames,
            "detection_rate": self.detection_rate,
            "false_detections": self.false_detections,
            "no_face_frames": self.no_face_frames,
            "eye_error_median": self.eye_stat("median"),
            "eye_error_mean": self.eye_stat("mean"),
            "eye_error_p90": self.eye_stat("p90"),
            "crop_error_median": self.eye_stat("median", self.crop_error),
            "crop_error_mean": self.eye_stat("mean", self.crop_error),
            "fps": self.fps,
            "detector_runs": self.detector_runs,
            "full_detections": self.full_detections,
        }


def eval_scenes(
    sequences: int = 2,
    frames: int = 150,
    config: SynthConfig = EVAL_CONFIG,
    options: SceneOptions = EVAL_OPTIONS,
    frame_size: tuple[int, int] = (640, 480),
) -> list[SceneSequence]:
    """The first `frames` frames of `sequences` scene videos (subject i, task i mod tasks)."""
    cfg = config.with_overrides(frames=max(frames, 2))
    tasks = cfg.shape.tasks
    return [
        render_scene_sequence(cfg, i % cfg.shape.subjects, i % tasks, frame_size, options, frame_indices=range(frames))
        for i in range(sequences)
    ]


def eye_errors(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """|found - true| averaged over the two eyes, over the true inter-ocular distance: [T] from [T, 2, 2] each."""
    iod = np.linalg.norm(truth[:, 1] - truth[:, 0], axis=1)
    return np.linalg.norm(found - truth, axis=2).mean(1) / iod


def crop_errors(points: Sequence[np.ndarray], truth: np.ndarray, template: np.ndarray, size: int) -> np.ndarray:
    """The true eyes [T, 2, 2] taken into the crop by the alignment each frame's points [k, 2] give, against the
    template's eyes: mean distance over the template's inter-ocular distance, [T]."""
    target = template_pixels(template[:2], size)
    out = np.empty(len(points))
    for t, found in enumerate(points):
        matrix = align_matrix(found, template, size)
        mapped = truth[t] @ matrix[:, :2].T + matrix[:, 2]
        out[t] = np.linalg.norm(mapped - target, axis=1).mean() / np.linalg.norm(target[1] - target[0])
    return out


def score_backend(backend: str, scenes: Sequence[SceneSequence], size: int = 64) -> FaceScore:
    """Run face stage `backend` over each scene video (a fresh track per video) and score it."""
    stage = create_face_stage(backend, Preprocess(size=size))
    frames = face_frames = detected = false = 0
    errors, in_crop, seconds = [], [], 0.0
    for seq in scenes:
        stage.reset()
        started = time.perf_counter()
        faces = [stage(image, t) for t, image in enumerate(seq.frames)]
        seconds += time.perf_counter() - started
        success = np.array([f.success for f in faces])
        frames += len(faces)
        face_frames += int(seq.face_visible.sum())
        detected += int((success & seq.face_visible).sum())
        false += int((success & ~seq.face_visible).sum())
        hit = np.flatnonzero(success & seq.face_visible)
        if len(hit):
            truth = seq.eyes[hit].astype(np.float64)
            errors.append(eye_errors(np.stack([faces[t].eyes for t in hit]), truth))
            in_crop.append(crop_errors([faces[t].points for t in hit], truth, stage.template, size))
    return FaceScore(
        backend,
        frames,
        face_frames,
        detected,
        false,
        np.concatenate(errors) if errors else np.zeros(0),
        np.concatenate(in_crop) if in_crop else np.zeros(0),
        seconds,
        getattr(stage, "detections", 0),
        getattr(stage, "full_detections", 0),
    )


def available_backends(names: Sequence[str] = BACKENDS) -> tuple[list[str], dict[str, str]]:
    """The backends that load here, and why each other one does not."""
    ok, missing = [], {}
    for name in names:
        try:
            create_face_stage(name, Preprocess(size=64))
        except ConfigError as error:
            missing[name] = str(error)
        else:
            ok.append(name)
    return ok, missing


def markdown(scores: Sequence[FaceScore], scenes: Sequence[SceneSequence], missing: dict[str, str]) -> str:
    """The table in docs/runtime.md, Faces on raw video."""
    frames = sum(len(s.frames) for s in scenes)
    h, w = scenes[0].frames.shape[1:3] if scenes else (0, 0)
    lines = [
        f"{len(scenes)} SynthAU scene videos ({EVAL_CONFIG.size}, seed {EVAL_CONFIG.seed}), {frames} frames of "
        f"{w}x{h}, the face leaving the frame once in each. Eye error: |found - true eye centre| / inter-ocular "
        f"distance; alignment error: the true eyes in the aligned crop against the template's, / the template's "
        f"inter-ocular distance; both over the detected frames. fps: the face stage alone (no network) on this "
        f"machine's CPU.",
        "",
        "| backend | detection rate | false detections | eye error median | mean | p90 | alignment error median "
        "| mean | face stage fps |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in scores:
        lines.append(
            f"| {s.backend} | {s.detection_rate:.3f} ({s.detected}/{s.face_frames}) | "
            f"{s.false_detections}/{s.no_face_frames} | {s.eye_stat('median'):.3f} | "
            f"{s.eye_stat('mean'):.3f} | {s.eye_stat('p90'):.3f} | {s.eye_stat('median', s.crop_error):.3f} | "
            f"{s.eye_stat('mean', s.crop_error):.3f} | {s.fps:.0f} |"
        )
    for name, why in missing.items():
        lines.append(f"| {name} | not run: {why} | | | | | | | |")
    return "\n".join(lines)


def measure_eye_ratios(scenes: Sequence[SceneSequence], step: int = 5) -> tuple[np.ndarray, np.ndarray, int]:
    """haar's EYE_RATIOS: the median and spread [2, 2] of the true eye centres relative to the whole-frame Haar
    box, over every `step`-th frame with a visible, detected face; and how many frames that was."""
    stage = HaarFaces(Preprocess(size=64))
    ratios = []
    for seq in scenes:
        for t in range(0, len(seq.frames), step):
            if not seq.face_visible[t]:
                continue
            grey = cv2.cvtColor(seq.frames[t], cv2.COLOR_RGB2GRAY)
            box = stage.detect_full(grey)
            if box is None:
                continue
            ratios.append((seq.eyes[t] - box[:2]) / (box[2:] - box[:2]))
    ratios = np.array(ratios)
    return np.median(ratios, 0), ratios.std(0), len(ratios)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ks_runtime.tools.face_eval",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--sequences", type=int, default=4, help="scene videos (subject i, task i)")
    p.add_argument("--frames", type=int, default=300, help="frames of each")
    p.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated face backends")
    p.add_argument("--out", help="also write the table (Markdown) to this file")
    p.add_argument("--measure-ratios", action="store_true", help="measure haar's EYE_RATIOS instead")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    scenes = eval_scenes(
        args.sequences, args.frames, options=SceneOptions(exit_prob=0.0) if args.measure_ratios else EVAL_OPTIONS
    )
    if args.measure_ratios:
        median, spread, count = measure_eye_ratios(scenes)
        print(f"EYE_RATIOS = {np.round(median, 3).tolist()}  (spread {np.round(spread, 3).tolist()}, {count} frames)")
        return 0
    names, missing = available_backends([b.strip() for b in args.backends.split(",") if b.strip()])
    scores = [score_backend(name, scenes) for name in names]
    text = markdown(scores, scenes, missing)
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
