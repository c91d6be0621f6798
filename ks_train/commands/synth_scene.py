"""`ks-train synth-scene`: one SynthAU scene-mode video (the face moving in a larger frame) and its ground-truth
CSV (face box, eye centres, AU labels per frame), to score a face detector and aligner."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ks_runtime import commandline
from ks_runtime.core.errors import ConfigError
from ks_runtime.synth.generate import SynthConfig, subject_id, task_id, task_profiles
from ks_runtime.synth.scene import CODECS, render_scene_sequence, write_scene_video


def register(sub: argparse._SubParsersAction) -> None:
    p = commandline.add_command(
        sub, "synth-scene", run, help="write a SynthAU scene video with its ground truth", description=__doc__
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--size", choices=("tiny", "small", "full"), default="small", help="SynthAU set (default: small)")
    p.add_argument("--au-set", choices=("bp4d", "disfa"), default="bp4d")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--subject", default="S01", help="subject id, e.g. S01 (default: S01)")
    p.add_argument("--task", default=None, help="task id, e.g. T1 (default: the set's first task)")
    p.add_argument("--seconds", type=float, default=None, help="length (default: the set's sequence length)")
    p.add_argument("--frame-size", default="640x480", help="WIDTHxHEIGHT in pixels (default: 640x480)")
    p.add_argument(
        "--format",
        choices=sorted(s.lstrip(".") for s in CODECS),
        default="mp4",
        help="mp4 (mp4v, lossy) or mkv / avi (FFV1, lossless); default: mp4",
    )


def _frame_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--frame-size {text!r}: expected WIDTHxHEIGHT, e.g. 640x480") from None
    if not (64 <= width <= 4096 and 64 <= height <= 4096):
        raise ConfigError(f"--frame-size {text!r}: use 64 to 4096 pixels a side")
    return width, height


def run(args: argparse.Namespace) -> int:
    cfg = SynthConfig(size=args.size, au_set=args.au_set, seed=args.seed)
    if args.seconds is not None:
        if not 0 < args.seconds <= 600:
            raise ConfigError(f"--seconds {args.seconds}: use more than 0 and at most 600")
        cfg = cfg.with_overrides(frames=max(1, int(round(args.seconds * cfg.fps))))
    shape = cfg.shape
    subjects = [subject_id(i) for i in range(shape.subjects)]
    tasks = [task_id(p) for p in task_profiles(shape.tasks)]
    task = args.task or tasks[0]
    if args.subject not in subjects:
        raise ConfigError(f"--subject {args.subject}: SynthAU {args.size} has {subjects[0]}..{subjects[-1]}")
    if task not in tasks:
        raise ConfigError(f"--task {task}: SynthAU {args.size} has {', '.join(tasks)}")
    size = _frame_size(args.frame_size)
    started = time.perf_counter()
    seq = render_scene_sequence(cfg, subjects.index(args.subject), tasks.index(task), size)
    video, truth = write_scene_video(seq, Path(args.out) / f"{seq.subject}_{seq.task}.{args.format}")
    seconds = time.perf_counter() - started
    commandline.summary(
        args,
        f"wrote {video} ({len(seq.frames)} frames, {size[0]}x{size[1]}, face in view in "
        f"{seq.face_visible.mean():.0%}) and {truth} in {seconds:.1f} s",
    )
    return 0
