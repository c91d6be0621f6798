"""How well each face backend finds and aligns faces, scored against SynthAU scene-mode ground truth.

    python -m ks_runtime.tools.face_eval [--sequences 4] [--frames 300] [--backends haar,dlib]
        [--poses frontal,roll20,...] [--out table.md]

Scene videos (synth/scene.py) place a SynthAU face in a 640x480 frame, moving and now and then leaving it,
with the true face box and eye centres per frame. Per backend: the detection rate (frames with a visible
face where the stage reports success on the face: its box overlaps the true box by MATCH_IOU; a success whose box
misses it counts as `elsewhere`), false detections (success on frames without a face), the eye-centre
error relative to the inter-ocular distance (|found - true| averaged over the two eyes, over the detected
frames), the alignment error (the true eyes mapped into the aligned crop against the template's eyes, over
the template's inter-ocular distance: what the network sees), the crop's roll (the true eye line's angle in
the crop, against the template's), and the face stage's own speed, by the clock and by the CPU time the process
used (the second is steadier on a shared machine).

`--poses` adds head poses to the generator's own (POSES): `frontal` is the set above; the others turn or tilt
the head (alternate videos the other way) and keep the face in the frame. The 2.5D SynthAU face holds together
to about 30 degrees of yaw: past that its features are drawn outside its outline, so no profile is scored.
Backend `haar-level` is haar as it was before the roll search (without an eye pair, the eyes level in the box);
`haar-noeyes` and `haar-noeyes-level` are haar with an eye cascade that never finds a pair: its fallback alone,
with the roll search (roll.py) and without it;
`dlib-noupright` is dlib measuring its landmarks on the frame as it is, however tilted the head (as before).
`--measure-ratios` measures haar's EYE_RATIOS, `--measure-cnn-box` dlib-cnn's CNN_TO_HOG.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np

from ks_runtime.core.errors import ConfigError
from ks_runtime.core.preprocess import Preprocess
from ks_runtime.core.template import template_pixels
from ks_runtime.faces.align import align_matrix
from ks_runtime.faces.base import FaceStage
from ks_runtime.faces.dlib import DlibFaces
from ks_runtime.faces.haar import HaarFaces
from ks_runtime.faces.registry import create_face_stage
from ks_runtime.faces.tracking import iou
from ks_runtime.synth.generate import SynthConfig
from ks_runtime.synth.scene import SceneOptions, SceneSequence, render_scene_sequence

log = logging.getLogger(__name__)

# The default backends; `dlib-cnn` is left to ask for: a whole-frame CNN search on every frame without a face
# makes a run minutes longer on a CPU.
BACKENDS = ("haar", "dlib")
# The face leaves the frame once in every video (about 2 s out of 6), so false detections are measured too.
EVAL_OPTIONS = SceneOptions(exit_prob=1.0)
EVAL_CONFIG = SynthConfig(size="small", seed=11)
# A success counts as finding the face when its box overlaps the true one by this (intersection over union): a
# detector's box and the true one (cheek to cheek, hairline to chin) overlap by 0.5 to 0.9 on a found face, by
# about 0.1 on a face-like patch of the face or the background that a cascade locks on to.
MATCH_IOU = 0.3
# Head poses, (yaw, pitch, roll) degrees added to the generator's own (a few degrees): `frontal` is the set above,
# the face leaving the frame; the turned and tilted sets keep it in (false detections are frontal's to measure).
POSES = {
    "frontal": (0.0, 0.0, 0.0),
    "roll20": (0.0, 0.0, 20.0),
    "roll35": (0.0, 0.0, 35.0),
    "yaw30": (30.0, 0.0, 0.0),
    "yaw30roll20": (30.0, 0.0, 20.0),
}


class HaarLevel(HaarFaces):
    """haar as it was before the roll search: without an eye pair, the eyes level in the box."""

    roll_search = False


class HaarNoEyes(HaarFaces):
    """haar whose eye cascade never finds a pair: the fallback alone, as on a video where it fails."""

    def find_eyes(self, grey: np.ndarray, box: np.ndarray) -> np.ndarray:
        return np.zeros((0, 2))


class HaarNoEyesLevel(HaarNoEyes):
    """haar's fallback before the roll search: the eyes level in the box."""

    roll_search = False


class DlibNoUpright(DlibFaces):
    """dlib measuring the landmarks on the frame as it is, however tilted the head (as before)."""

    upright_above_deg = 180.0


VARIANTS: dict[str, type[FaceStage]] = {
    "haar-level": HaarLevel,
    "haar-noeyes": HaarNoEyes,
    "haar-noeyes-level": HaarNoEyesLevel,
    "dlib-noupright": DlibNoUpright,
}


@dataclass
class FaceScore:
    """One backend on a set of scene videos."""

    backend: str
    frames: int
    face_frames: int
    detected: int  # face frames with success on the face (MATCH_IOU)
    false_detections: int  # no-face frames with success
    eye_error: np.ndarray  # per detected face frame, |found - true| / inter-ocular distance
    crop_error: np.ndarray  # per detected face frame, the true eyes' error in the crop / template distance
    crop_roll: np.ndarray  # per detected face frame, |the true eye line's angle in the crop - the template's|, deg
    seconds: float  # face stage time over all frames, by the clock
    cpu_seconds: float  # the same, in CPU time of this process (all its threads)
    detector_runs: int
    full_detections: int
    pose: str = "frontal"
    elsewhere: int = 0  # face frames with success on something else

    @property
    def detection_rate(self) -> float:
        return self.detected / self.face_frames if self.face_frames else float("nan")

    @property
    def no_face_frames(self) -> int:
        return self.frames - self.face_frames

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")

    @property
    def cpu_fps(self) -> float:
        return self.frames / self.cpu_seconds if self.cpu_seconds > 0 else float("nan")

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
            "pose": self.pose,
            "frames": self.frames,
            "face_frames": self.face_frames,
            "detection_rate": self.detection_rate,
            "false_detections": self.false_detections,
            "elsewhere": self.elsewhere,
            "no_face_frames": self.no_face_frames,
            "eye_error_median": self.eye_stat("median"),
            "eye_error_mean": self.eye_stat("mean"),
            "eye_error_p90": self.eye_stat("p90"),
            "crop_error_median": self.eye_stat("median", self.crop_error),
            "crop_error_mean": self.eye_stat("mean", self.crop_error),
            "crop_roll_median": self.eye_stat("median", self.crop_roll),
            "crop_roll_p90": self.eye_stat("p90", self.crop_roll),
            "fps": self.fps,
            "cpu_fps": self.cpu_fps,
            "detector_runs": self.detector_runs,
            "full_detections": self.full_detections,
        }


def eval_scenes(
    sequences: int = 2,
    frames: int = 150,
    config: SynthConfig = EVAL_CONFIG,
    options: SceneOptions = EVAL_OPTIONS,
    frame_size: tuple[int, int] = (640, 480),
    pose: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> list[SceneSequence]:
    """The first `frames` frames of `sequences` scene videos (subject i, task i mod tasks), the head turned by
    `pose` (yaw, pitch, roll degrees) in even videos and the other way in odd ones."""
    cfg = config.with_overrides(frames=max(frames, 2))
    tasks = cfg.shape.tasks
    scenes = []
    for i in range(sequences):
        posed = replace(options, head_pose_deg=tuple(float(v) * (-1) ** i for v in pose))
        scenes.append(
            render_scene_sequence(
                cfg, i % cfg.shape.subjects, i % tasks, frame_size, posed, frame_indices=range(frames)
            )
        )
    return scenes


def pose_scenes(name: str, sequences: int, frames: int) -> list[SceneSequence]:
    """The scene videos of POSES[name]: frontal's leave the frame once, the others stay in."""
    options = EVAL_OPTIONS if name == "frontal" else replace(EVAL_OPTIONS, exit_prob=0.0)
    return eval_scenes(sequences, frames, options=options, pose=POSES[name])


def eye_errors(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """|found - true| averaged over the two eyes, over the true inter-ocular distance: [T] from [T, 2, 2] each."""
    iod = np.linalg.norm(truth[:, 1] - truth[:, 0], axis=1)
    return np.linalg.norm(found - truth, axis=2).mean(1) / iod


def in_crop(
    points: Sequence[np.ndarray], truth: np.ndarray, template: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The true eyes [T, 2, 2] taken into the crop by the alignment each frame's points [k, 2] give, against the
    template's eyes: the mean distance over the template's inter-ocular distance, and |the angle of the eye line
    - the template's| in degrees; [T] each."""
    target = template_pixels(template[:2], size)
    level = np.arctan2(*(target[1] - target[0])[::-1])
    errors, rolls = np.empty(len(points)), np.empty(len(points))
    for t, found in enumerate(points):
        matrix = align_matrix(found, template, size)
        mapped = truth[t] @ matrix[:, :2].T + matrix[:, 2]
        errors[t] = np.linalg.norm(mapped - target, axis=1).mean() / np.linalg.norm(target[1] - target[0])
        angle = np.arctan2(*(mapped[1] - mapped[0])[::-1]) - level
        rolls[t] = abs(np.degrees(np.arctan2(np.sin(angle), np.cos(angle))))
    return errors, rolls


def make_stage(backend: str, size: int = 64, max_faces: int = 1) -> FaceStage:
    """A registered face stage, or one of face_eval's VARIANTS."""
    if backend in VARIANTS:
        return VARIANTS[backend](Preprocess(size=size), max_faces=max_faces)
    return create_face_stage(backend, Preprocess(size=size), max_faces=max_faces)


@dataclass
class _Tally:
    """What score_backends adds up for one backend, scene by scene."""

    stage: FaceStage
    frames: int = 0
    face_frames: int = 0
    detected: int = 0
    elsewhere: int = 0
    false: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    def __post_init__(self) -> None:
        self.errors: list[np.ndarray] = []
        self.in_crop: list[tuple[np.ndarray, np.ndarray]] = []

    def run(self, seq: SceneSequence, size: int) -> None:
        """The stage over one scene video (a fresh track), timed, and scored."""
        self.stage.reset()
        started, cpu = time.perf_counter(), time.process_time()
        faces = [self.stage(image, t) for t, image in enumerate(seq.frames)]
        self.seconds += time.perf_counter() - started
        self.cpu_seconds += time.process_time() - cpu
        success = np.array([f.success for f in faces])
        on_face = success & seq.face_visible
        on_face[on_face] = [
            iou(np.asarray(faces[t].box), seq.face_box[t]) >= MATCH_IOU for t in np.flatnonzero(on_face)
        ]
        self.frames += len(faces)
        self.face_frames += int(seq.face_visible.sum())
        self.detected += int(on_face.sum())
        self.elsewhere += int((success & seq.face_visible & ~on_face).sum())
        self.false += int((success & ~seq.face_visible).sum())
        hit = np.flatnonzero(on_face)
        if len(hit):
            truth = seq.eyes[hit].astype(np.float64)
            self.errors.append(eye_errors(np.stack([faces[t].eyes for t in hit]), truth))
            self.in_crop.append(in_crop([faces[t].points for t in hit], truth, self.stage.template, size))

    def score(self, backend: str, pose: str) -> FaceScore:
        def joined(parts: list[np.ndarray]) -> np.ndarray:
            return np.concatenate(parts) if parts else np.zeros(0)

        return FaceScore(
            backend,
            self.frames,
            self.face_frames,
            self.detected,
            self.false,
            joined(self.errors),
            joined([e for e, _ in self.in_crop]),
            joined([r for _, r in self.in_crop]),
            self.seconds,
            self.cpu_seconds,
            getattr(self.stage, "detections", 0),
            getattr(self.stage, "full_detections", 0),
            pose,
            self.elsewhere,
        )


def score_backends(
    backends: Sequence[str], scenes: Sequence[SceneSequence], size: int = 64, pose: str = "frontal"
) -> list[FaceScore]:
    """Run each face stage over each scene video and score it. The backends take turns scene by scene, so a
    shared machine's load falls on them alike and their speeds compare."""
    tallies = {name: _Tally(make_stage(name, size)) for name in backends}
    for seq in scenes:
        for tally in tallies.values():
            tally.run(seq, size)
    return [tally.score(name, pose) for name, tally in tallies.items()]


def score_backend(backend: str, scenes: Sequence[SceneSequence], size: int = 64) -> FaceScore:
    """One face stage over the scene videos (a fresh track per video), scored."""
    return score_backends([backend], scenes, size)[0]


def available_backends(names: Sequence[str] = BACKENDS) -> tuple[list[str], dict[str, str]]:
    """The backends that load here, and why each other one does not."""
    ok, missing = [], {}
    for name in names:
        try:
            make_stage(name)
        except ConfigError as error:
            missing[name] = str(error)
        else:
            ok.append(name)
    return ok, missing


def markdown(scores: Sequence[FaceScore], counts: dict[str, tuple[int, int]], missing: dict[str, str]) -> str:
    """The table in docs/runtime.md, Faces on raw video; `counts` gives each pose's videos and frames."""
    sets = "; ".join(f"{pose} {POSES[pose]}: {n} videos, {frames} frames" for pose, (n, frames) in counts.items())
    lines = [
        f"SynthAU scene videos ({EVAL_CONFIG.size}, seed {EVAL_CONFIG.seed}) of 640x480; pose (yaw, pitch, roll) "
        f"added to the generator's, turned the other way in alternate videos; {sets}. Detection rate: frames with "
        f"the face found (the box overlapping the true one by IoU {MATCH_IOU}); elsewhere: frames with a face whose "
        f"box is on something else. Eye error: |found - true "
        f"eye centre| / inter-ocular distance; alignment error: the true eyes in the aligned crop against the "
        f"template's, / the template's inter-ocular distance; crop roll: |angle of the true eye line in the crop| "
        f"(degrees); all over the detected frames. fps: the face stage alone (no network), by the clock and by "
        f"this process's CPU time.",
        "",
        "| pose | backend | detection rate | elsewhere | false detections | eye error median | p90 "
        "| alignment error median | crop roll median | p90 | fps | fps (CPU time) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in scores:
        lines.append(
            f"| {s.pose} | {s.backend} | {s.detection_rate:.3f} ({s.detected}/{s.face_frames}) | {s.elsewhere} | "
            f"{s.false_detections}/{s.no_face_frames} | {s.eye_stat('median'):.3f} | {s.eye_stat('p90'):.3f} | "
            f"{s.eye_stat('median', s.crop_error):.3f} | {s.eye_stat('median', s.crop_roll):.1f} | "
            f"{s.eye_stat('p90', s.crop_roll):.1f} | {s.fps:.0f} | {s.cpu_fps:.0f} |"
        )
    for name, why in missing.items():
        lines.append(f"| | {name} | not run: {why} | | | | | | | | | |")
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


def measure_cnn_box(scenes: Sequence[SceneSequence], step: int = 5) -> tuple[np.ndarray, np.ndarray, int]:
    """dlib-cnn's CNN_TO_HOG: the HOG detector's box relative to the CNN's, (centre x shift, centre y shift) over
    the CNN box's width and the width ratio, median and spread [3] over every `step`-th frame both find a face
    in; and how many frames that was."""
    hog, cnn = make_stage("dlib"), make_stage("dlib-cnn")
    cnn.box_map = np.array([0.0, 0.0, 1.0])  # the CNN's own boxes
    found = []
    for seq in scenes:
        for t in range(0, len(seq.frames), step):
            grey = cv2.cvtColor(seq.frames[t], cv2.COLOR_RGB2GRAY)
            a, b = cnn.detect_full(grey), hog.detect_full(grey)
            if a is None or b is None:
                continue
            width = a[2] - a[0]
            found.append([*(((b[:2] + b[2:]) - (a[:2] + a[2:])) / 2 / width), (b[2] - b[0]) / width])
    found = np.array(found)
    return np.median(found, 0), found.std(0), len(found)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ks_runtime.tools.face_eval",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--sequences", type=int, default=4, help="scene videos (subject i, task i)")
    p.add_argument("--frames", type=int, default=300, help="frames of each")
    p.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated face backends (or VARIANTS)")
    p.add_argument("--poses", default="frontal", help=f"comma-separated head poses: {', '.join(POSES)}")
    p.add_argument("--out", help="also write the table (Markdown) to this file")
    p.add_argument("--measure-ratios", action="store_true", help="measure haar's EYE_RATIOS instead")
    p.add_argument("--measure-cnn-box", action="store_true", help="measure dlib-cnn's CNN_TO_HOG instead")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if args.measure_ratios:
        scenes = eval_scenes(args.sequences, args.frames, options=SceneOptions(exit_prob=0.0))
        median, spread, count = measure_eye_ratios(scenes)
        print(f"EYE_RATIOS = {np.round(median, 3).tolist()}  (spread {np.round(spread, 3).tolist()}, {count} frames)")
        return 0
    if args.measure_cnn_box:
        scenes = eval_scenes(args.sequences, args.frames, options=SceneOptions(exit_prob=0.0))
        median, spread, count = measure_cnn_box(scenes)
        print(f"CNN_TO_HOG = {np.round(median, 3).tolist()}  (spread {np.round(spread, 3).tolist()}, {count} frames)")
        return 0
    poses = [name.strip() for name in args.poses.split(",") if name.strip()]
    unknown = [name for name in poses if name not in POSES]
    if unknown:
        p.error(f"unknown poses {unknown}; known: {', '.join(POSES)}")
    names, missing = available_backends([b.strip() for b in args.backends.split(",") if b.strip()])
    scores, counts = [], {}
    for pose in poses:
        scenes = pose_scenes(pose, args.sequences, args.frames)
        counts[pose] = (len(scenes), sum(len(s.frames) for s in scenes))
        scores += score_backends(names, scenes, pose=pose)
    text = markdown(scores, counts, missing)
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
