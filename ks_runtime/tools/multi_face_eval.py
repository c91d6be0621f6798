"""Every face in a frame, scored: two SynthAU scene videos side by side (two faces a frame, the right-hand one
leaving for half a second), through a face backend with max_faces 0 (every face) and 1 (the largest).

    python -m ks_runtime.tools.multi_face_eval [--pairs 3] [--frames 150] [--backends haar,dlib]

Per setting: the share of true faces found (a found face overlapping a true one by 0.4 or more), the face_ids a
true face was given while it stayed in view (1.0: never switched), found faces on no true face, and the time a
frame (single thread, on this machine).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass

import numpy as np

from ks_runtime.faces.tracking import iou
from ks_runtime.synth.scene import SceneOptions, render_scene_sequence
from ks_runtime.tools.face_eval import EVAL_CONFIG, available_backends, make_stage

OPTIONS = SceneOptions(face_width_px=(90.0, 140.0), exit_prob=0.0, motion=0.5)
HALF = (320, 480)


@dataclass
class Pair:
    """640 x 480 frames holding two faces, each face's true boxes [T, 4] (NaN where out of view)."""

    frames: np.ndarray
    boxes: list[np.ndarray]


def render_pair(index: int, frames: int) -> Pair:
    """Subjects 2i and 2i+1 side by side; the right-hand face is blanked out for the middle 15 frames."""
    config = EVAL_CONFIG.with_overrides(frames=frames)
    left, right = (
        render_scene_sequence(config, s, s % config.shape.tasks, HALF, OPTIONS, frame_indices=range(frames))
        for s in (2 * index, 2 * index + 1)
    )
    image = np.concatenate([left.frames, right.frames], axis=2)
    gone = slice(frames // 2, frames // 2 + 15)
    image[gone, :, HALF[0] :] = 128
    right_boxes = right.face_box + np.array([HALF[0], 0, HALF[0], 0], np.float32)
    right_boxes[gone] = np.nan
    return Pair(image, [left.face_box, right_boxes])


def score(backend: str, max_faces: int, pairs: list[Pair]) -> dict:
    """Found share, face_ids per true face's stay in view, false faces and ms a frame over `pairs`."""
    present = found = false = 0
    ids_per_stay: list[int] = []
    seconds = 0.0
    for pair in pairs:
        stage = make_stage(backend, 112, max_faces)
        stays: dict[tuple[int, int], set[int]] = {}  # (true face, stay) -> face_ids
        for t, frame in enumerate(pair.frames):
            start = time.perf_counter()
            faces = stage.faces(frame, t)
            seconds += time.perf_counter() - start
            hit = set()
            for face in faces:
                overlaps = [0.0 if np.isnan(b[t]).any() else iou(np.asarray(face.box), b[t]) for b in pair.boxes]
                best = int(np.argmax(overlaps))
                if overlaps[best] < 0.4:
                    false += 1
                    continue
                hit.add(best)
                stay = int(np.isnan(pair.boxes[best][:t, 0]).any())  # before or after the face's time away
                stays.setdefault((best, stay), set()).add(face.face_id)
            visible = [k for k, b in enumerate(pair.boxes) if not np.isnan(b[t]).any()]
            present += len(visible)
            found += len(hit & set(visible))
        ids_per_stay += [len(ids) for ids in stays.values()]
    frames = sum(len(p.frames) for p in pairs)
    return {
        "backend": backend,
        "max_faces": max_faces,
        "found": found / max(present, 1),
        "ids_per_stay": float(np.mean(ids_per_stay)) if ids_per_stay else float("nan"),
        "false_faces": false,
        "ms_per_frame": 1e3 * seconds / frames,
    }


def markdown(rows: list[dict], pairs: int, frames: int) -> str:
    lines = [
        f"{pairs} pairs x {frames} frames (640 x 480, two faces a frame, one leaving for 15 frames)",
        "",
        "| backend | max_faces | true faces found | face_ids per stay in view | false faces | ms a frame |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['max_faces']} | {r['found']:.3f} | {r['ids_per_stay']:.2f} | "
            f"{r['false_faces']} | {r['ms_per_frame']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ks_runtime.tools.multi_face_eval",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--pairs", type=int, default=3, help="side-by-side videos (subjects 2i and 2i+1)")
    p.add_argument("--frames", type=int, default=150, help="frames of each")
    p.add_argument("--backends", default="haar,dlib", help="comma-separated face backends")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    names, missing = available_backends([b.strip() for b in args.backends.split(",") if b.strip()])
    for name, why in missing.items():
        print(f"{name}: not run ({why})")
    pairs = [render_pair(i, args.frames) for i in range(args.pairs)]
    rows = [score(name, limit, pairs) for name in names for limit in (0, 1)]
    print(markdown(rows, args.pairs, args.frames))
    return 0


if __name__ == "__main__":
    sys.exit(main())
