"""SynthAU scene mode: the aligned generator's face placed into a larger frame, with its ground truth.

The same subject, labels and head pose as `generate_sequence` (same config, subject, task), drawn straight at
scene scale onto a per-sequence background (gradient, shapes, texture or a room) above a torso, moving on a
slow random walk in position and size, now and then leaving the frame. Every frame keeps the true face box and
eye centres (see face._geometry for their definition), so a face detector and an aligner can be scored.

Coordinates are continuous pixels, x right and y down, the centre of pixel (i, j) at (j, i). The face box is
not clipped to the frame. A frame whose eyes are outside it, or whose box is less than half inside, has no
face: face_visible False and NaN box and eyes. The aligned crop that generate_sequence draws (without its
jitter) is the square of side crop_size centred at crop_centre.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from ks_runtime.core.errors import ConfigError, DataError
from ks_runtime.synth import face
from ks_runtime.synth.generate import SequenceInputs, SynthConfig, sequence_inputs, sequence_rng, task_profiles

log = logging.getLogger(__name__)

GT_COLUMNS = (
    "frame",
    "timestamp",
    "face_visible",
    "x0",
    "y0",
    "x1",
    "y1",
    "left_eye_x",
    "left_eye_y",
    "right_eye_x",
    "right_eye_y",
)
# Video codecs by file suffix: FFV1 reads back bit-exact; mp4v (MPEG-4 part 2) is lossy but plays anywhere.
CODECS = {".mp4": "mp4v", ".avi": "FFV1", ".mkv": "FFV1"}
_SCENE_KEY = 3000  # seed stream of the scene (walk, background, body), beside the generator's 1000 / 2000
_NOISE_KEY = 4000  # seed stream of the scene's sensor noise


@dataclass(frozen=True)
class SceneOptions:
    """How the face moves in the frame."""

    face_width_px: tuple[float, float] = (80.0, 260.0)  # range of the face box width
    exit_prob: float = 0.2  # chance that the face leaves the frame once in a sequence
    exit_seconds: float = 0.8  # mean time out of the frame (plus about 0.8 s leaving and coming back)
    motion: float = 1.0  # scales the random walk in position and size (0: the face stays put)
    # Degrees of yaw, pitch and roll added to the generator's head pose on every frame (a turned or tilted head,
    # to score face stages on; the default adds nothing, so every seed renders as before).
    head_pose_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass
class SceneSequence:
    """One scene video and its ground truth; T frames of H x W."""

    subject: str
    task: str
    frames: np.ndarray  # uint8 [T, H, W, 3] RGB
    face_box: np.ndarray  # float32 [T, 4] x0, y0, x1, y1; NaN where no face
    eyes: np.ndarray  # float32 [T, 2, 2] (image-left eye, image-right eye) x (x, y); NaN where no face
    face_visible: np.ndarray  # bool [T]
    labels: np.ndarray  # int8 [T, U], as generate_sequence's
    label_columns: tuple[str, ...]
    crop_centre: np.ndarray  # float32 [T, 2] where the aligned crop's centre is
    crop_size: np.ndarray  # float32 [T] the aligned crop's side in pixels
    frame_indices: np.ndarray  # int [T] which frames of the sequence these are
    fps: float

    @property
    def timestamps(self) -> np.ndarray:
        return self.frame_indices / self.fps


@dataclass(frozen=True)
class SceneTruth:
    """Ground truth read back from a scene CSV."""

    frame: np.ndarray  # int [T]
    timestamp: np.ndarray  # float [T] seconds
    face_visible: np.ndarray  # bool [T]
    face_box: np.ndarray  # float [T, 4]
    eyes: np.ndarray  # float [T, 2, 2]
    labels: np.ndarray | None  # int8 [T, U] when the CSV has AU columns
    label_columns: tuple[str, ...]


# --- motion --------------------------------------------------------------------------------------------------


def _smooth(n: int, rng: np.random.Generator, seconds: float, fps: float) -> np.ndarray:
    return face._smooth_noise(n, rng, seconds * fps)


def _ease(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _exit_profile(n: int, rng: np.random.Generator, options: SceneOptions, fps: float) -> np.ndarray:
    """[T] 0 .. 1: how far the face has moved out of the frame (1 = fully out); zero without an exit."""
    u = rng.uniform(size=4)
    if not (u[0] < options.exit_prob and options.exit_seconds > 0):
        return np.zeros(n)
    transit = fps * 0.8
    hold = options.exit_seconds * fps * (0.5 + u[1])
    start = (0.15 + 0.55 * u[2]) * n
    t = np.arange(n)
    out = _ease((t - start) / transit)
    back = _ease((t - start - transit - hold) / transit)
    return out - back


def _walk(
    n: int, rng: np.random.Generator, options: SceneOptions, face_width: float, size: tuple[int, int], fps: float
) -> tuple[np.ndarray, np.ndarray]:
    """Crop centre [T, 2] and crop size [T] in pixels: slow random walks in log size and in position, kept
    in the frame by soft limits, plus at most one trip out of the frame."""
    width, height = size
    m = options.motion
    lo, hi = np.log(options.face_width_px[0]), np.log(options.face_width_px[1])
    u = rng.uniform(-1, 1, size=4)
    walk = [_smooth(n, rng, seconds, fps) for seconds in (4.0, 2.5, 3.0)]
    exit_dir = rng.uniform(size=2)  # [1]: vertical drift on the way out ([0] unused, kept for the draw count)
    log_w = (lo + hi) / 2 + (hi - lo) / 2 * np.tanh(1.1 * u[0] + 0.5 * m * walk[0])
    face_px = np.exp(log_w)  # [T] face box width
    crop = face_px / face_width
    half = 0.55 * face_px  # about half the box's width; its height is about 1.2 x its width
    cx = width / 2 + np.maximum(width / 2 - half, 0) * np.tanh(0.7 * u[1] + 0.6 * m * walk[1])
    cy = 0.47 * height + np.maximum(0.47 * height - 0.8 * half, 0) * 0.8 * np.tanh(0.5 * u[2] + 0.5 * m * walk[2])
    away = _exit_profile(n, rng, options, fps)
    if np.any(away > 0):  # out by the nearer side, a little up or down, just far enough to leave the frame
        start = int(np.argmax(away > 0))
        left = cx[start] < width / 2
        reach = (cx[start] if left else width - cx[start]) + 0.8 * face_px.max()
        cx = cx + away * reach * (-1.0 if left else 1.0)
        cy = cy + away * reach * 0.3 * (exit_dir[1] - 0.5)
    return np.stack([cx, cy], 1), crop


def _posed(nuisance: face.NuisanceTrack, pose_deg: tuple[float, float, float]) -> face.NuisanceTrack:
    """The track with (yaw, pitch, roll) degrees added to every frame's head pose; no random draws."""
    if not any(pose_deg):
        return nuisance
    yaw, pitch, roll = pose_deg
    return replace(nuisance, yaw=nuisance.yaw + yaw, pitch=nuisance.pitch + pitch, roll=nuisance.roll + roll)


# --- background and body -------------------------------------------------------------------------------------


def _colour(rng: np.random.Generator, lo: float = 40, hi: float = 220, saturation: float = 0.35) -> tuple:
    base = rng.uniform(lo, hi)
    hue = rng.uniform(0, 2 * np.pi)
    sat = rng.uniform(0, saturation)
    return tuple(float(np.clip(base * (1 + sat * np.cos(hue + p)), 0, 255)) for p in (0.0, 2.1, 4.2))


def _value_noise(rng: np.random.Generator, size: tuple[int, int], cells: int) -> np.ndarray:
    """Smooth noise [H, W] in about -1..1: a coarse random grid upsampled with cubic interpolation."""
    width, height = size
    grid = rng.uniform(-1, 1, size=(max(2, cells * height // width), cells)).astype(np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)


def _gradient(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    width, height = size
    c0, c1 = np.array(_colour(rng)), np.array(_colour(rng))
    angle = rng.uniform(0, 2 * np.pi)
    x = np.linspace(-0.5, 0.5, width)[None, :] * np.cos(angle) + np.linspace(-0.5, 0.5, height)[:, None] * np.sin(angle)
    ramp = (x - x.min()) / (x.max() - x.min())
    img = c0 + (c1 - c0) * ramp[:, :, None]
    img *= 1 + 0.06 * _value_noise(rng, size, 5)[:, :, None]
    return img


def _shapes(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    width, height = size
    img = np.ascontiguousarray(_gradient(rng, size))
    for _ in range(int(rng.integers(8, 22))):
        colour = _colour(rng, 20, 240, 0.6)
        kind = rng.integers(0, 4)
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.03, 0.25) * width
        if kind == 0:
            cv2.rectangle(img, (int(x - r), int(y - r * rng.uniform(0.3, 1.5))), (int(x + r), int(y + r)), colour, -1)
        elif kind == 1:
            cv2.circle(img, (int(x), int(y)), int(r * 0.6), colour, -1, cv2.LINE_AA)
        elif kind == 2:
            axes = (int(r), int(r * rng.uniform(0.2, 0.8)))
            cv2.ellipse(img, (int(x), int(y)), axes, rng.uniform(0, 180), 0, 360, colour, -1, cv2.LINE_AA)
        else:
            x2, y2 = x + rng.uniform(-2, 2) * r, y + rng.uniform(-2, 2) * r
            cv2.line(img, (int(x), int(y)), (int(x2), int(y2)), colour, int(rng.integers(2, 12)), cv2.LINE_AA)
    return img


def _texture(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Wallpaper: stripes, a checkerboard, a dot grid or plaster-like noise, in two colours."""
    width, height = size
    c0, c1 = np.array(_colour(rng)), np.array(_colour(rng))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    period = rng.uniform(8, 60)
    angle = rng.uniform(0, np.pi)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    kind = rng.integers(0, 4)
    if kind == 0:
        mix = 0.5 + 0.5 * np.sin(2 * np.pi * u / period)
    elif kind == 1:
        mix = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    elif kind == 2:
        du, dv = (u % period) - period / 2, (v % period) - period / 2
        mix = (du**2 + dv**2 < (0.25 * period) ** 2).astype(np.float32)
    else:
        mix = sum(_value_noise(rng, size, cells) / k for k, cells in ((1, 6), (2, 24), (4, 80)))
        mix = (mix - mix.min()) / (mix.max() - mix.min())
    return c0 + (c1 - c0) * mix[:, :, None]


def _paste(img: np.ndarray, patch: np.ndarray, x: int, y: int) -> None:
    """Copy `patch` into `img` with its top-left corner at (x, y), clipped to the image."""
    h = max(0, min(patch.shape[0], img.shape[0] - y))
    w = max(0, min(patch.shape[1], img.shape[1] - x))
    img[y : y + h, x : x + w] = patch[:h, :w]


def _room(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A room: wall and floor, perhaps a corner, and a few of window, door, pictures, shelf with books, lamp."""
    width, height = size
    wall = np.array(_colour(rng, 110, 230, 0.25))
    img = np.empty((height, width, 3), np.float64)
    img[:] = wall
    img *= 1 + 0.04 * _value_noise(rng, size, 8)[:, :, None]
    floor_y = int(rng.uniform(0.68, 0.92) * height)
    if rng.uniform() < 0.5:  # a corner: the side wall in shade
        corner = int(rng.uniform(0.1, 0.9) * width)
        side = slice(0, corner) if rng.uniform() < 0.5 else slice(corner, width)
        img[:, side] *= rng.uniform(0.7, 0.88)
    floor = np.array(_colour(rng, 50, 150, 0.3))
    img[floor_y:] = floor
    for y in range(floor_y + 6, height, int(rng.integers(10, 30))):  # planks or carpet lines
        img[y : y + 1] *= 0.85
    cv2.line(img, (0, floor_y), (width, floor_y), tuple(float(c) * 0.6 for c in wall), 3)  # skirting
    for _ in range(int(rng.integers(2, 5))):
        kind = rng.integers(0, 5)
        x = rng.uniform(0.0, 0.85) * width
        w = rng.uniform(0.08, 0.3) * width
        if kind == 0:  # window: bright panes in a frame
            top, bottom = rng.uniform(0.08, 0.25) * height, rng.uniform(0.5, 0.65) * height
            sky = np.array(_colour(rng, 200, 250, 0.15))
            cv2.rectangle(img, (int(x), int(top)), (int(x + w), int(bottom)), tuple(sky), -1)
            frame_c = tuple(float(c) for c in _colour(rng, 150, 250, 0.1))
            cv2.rectangle(img, (int(x), int(top)), (int(x + w), int(bottom)), frame_c, 5)
            cv2.line(img, (int(x + w / 2), int(top)), (int(x + w / 2), int(bottom)), frame_c, 4)
            cv2.line(img, (int(x), int((top + bottom) / 2)), (int(x + w), int((top + bottom) / 2)), frame_c, 4)
        elif kind == 1:  # door
            top = rng.uniform(0.15, 0.3) * height
            door = _colour(rng, 60, 200, 0.3)
            cv2.rectangle(img, (int(x), int(top)), (int(x + 0.7 * w), floor_y), door, -1)
            cv2.circle(img, (int(x + 0.6 * w), int((top + floor_y) / 2)), 4, (200, 190, 120), -1, cv2.LINE_AA)
        elif kind == 2:  # a picture: a frame around abstract content
            top = rng.uniform(0.1, 0.4) * height
            h = w * rng.uniform(0.6, 1.2)
            cv2.rectangle(img, (int(x), int(top)), (int(x + w), int(top + h)), _colour(rng, 20, 120, 0.2), -1)
            _paste(img, _shapes(rng, (max(int(w) - 12, 4), max(int(h) - 12, 4))), int(x) + 6, int(top) + 6)
        elif kind == 3:  # shelf with books
            y = rng.uniform(0.2, 0.55) * height
            cv2.rectangle(img, (int(x), int(y)), (int(x + w), int(y + 6)), _colour(rng, 60, 140, 0.3), -1)
            bx = x
            while bx < x + w - 6:
                bw, bh = rng.uniform(5, 14), rng.uniform(25, 55)
                cv2.rectangle(img, (int(bx), int(y - bh)), (int(bx + bw), int(y)), _colour(rng, 30, 220, 0.7), -1)
                bx += bw + 1
        else:  # a lamp on a stand
            base_y = floor_y
            top = rng.uniform(0.3, 0.5) * height
            cv2.line(img, (int(x + w / 2), int(top)), (int(x + w / 2), base_y), (60, 60, 60), 3)
            shade = np.array([[x + w / 4, top - 40], [x + 3 * w / 4, top - 40], [x + w, top + 10], [x, top + 10]])
            cv2.fillPoly(img, [shade.astype(np.int32)], _colour(rng, 180, 250, 0.3), cv2.LINE_AA)
    return img


_BACKGROUNDS = (
    ("gradient", 0.2, _gradient),
    ("shapes", 0.25, _shapes),
    ("texture", 0.2, _texture),
    ("room", 0.35, _room),
)


def scene_background(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, str]:
    """A background [H, W, 3] uint8 RGB and its kind, out of focus (the camera focuses on the face)."""
    weights = np.array([w for _, w, _ in _BACKGROUNDS])
    k = int(rng.choice(len(_BACKGROUNDS), p=weights / weights.sum()))
    name, _, make = _BACKGROUNDS[k]
    img = make(rng, size)
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), float(rng.uniform(0.8, 2.5)))
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), name


# Torso under the neck, canonical units of the face: a neckline, shoulders, then straight down off the frame.
_BODY = np.array(
    [
        [-0.42, 1.22],
        [-0.2, 1.32],
        [0.0, 1.36],
        [0.2, 1.32],
        [0.42, 1.22],
        [0.9, 1.3],
        [1.45, 1.48],
        [1.75, 1.85],
        [1.9, 2.6],
        [2.0, 8.0],
        [-2.0, 8.0],
        [-1.9, 2.6],
        [-1.75, 1.85],
        [-1.45, 1.48],
        [-0.9, 1.3],
    ]
)


# --- rendering ------------------------------------------------------------------------------------------------


def _visible(box: np.ndarray, eyes: np.ndarray, size: tuple[int, int]) -> bool:
    """Both eyes in the frame and at least half the box's area inside it."""
    width, height = size
    if not (np.all(eyes >= -0.5) and np.all(eyes[:, 0] <= width - 0.5) and np.all(eyes[:, 1] <= height - 0.5)):
        return False
    x0, y0, x1, y1 = box
    inside = max(0.0, min(x1, width - 0.5) - max(x0, -0.5)) * max(0.0, min(y1, height - 0.5) - max(y0, -0.5))
    return inside >= 0.5 * (x1 - x0) * (y1 - y0)


def render_scene_sequence(
    cfg: SynthConfig,
    subject_index: int,
    task_index: int,
    frame_size: tuple[int, int] = (640, 480),
    options: SceneOptions | None = None,
    frame_indices: Sequence[int] | None = None,
) -> SceneSequence:
    """The (cfg, subject, task) sequence as a raw video of `frame_size` (width, height), with ground truth.

    Labels and head pose are generate_sequence's for the same arguments; `frame_indices` renders only those
    frames (the motion is that of the whole sequence).
    """
    width, height = frame_size
    if width < 64 or height < 64:
        raise ConfigError(f"frame_size {frame_size}: a scene needs at least 64 x 64 pixels")
    options = options or SceneOptions()
    inputs = sequence_inputs(cfg, subject_index, task_index)
    n = cfg.shape.frames
    indices = np.arange(n) if frame_indices is None else np.asarray(frame_indices, dtype=np.int64)
    if indices.size and (indices.min() < 0 or indices.max() >= n):
        raise IndexError(f"frame_indices outside 0..{n - 1}")
    profile = task_profiles(cfg.shape.tasks)[task_index]
    scene_rng = sequence_rng(cfg, subject_index, profile + _SCENE_KEY)
    background, kind = scene_background(scene_rng, frame_size)
    shirt = _colour(scene_rng, 30, 230, 0.6)
    centres, crops = _walk(n, scene_rng, options, inputs.identity.face_width, frame_size, cfg.fps)
    nuisance = _posed(face.without_jitter(inputs.nuisance), options.head_pose_deg)
    log.debug(
        "scene %s %s: %s background, face %.0f..%.0f px",
        inputs.subject,
        inputs.task,
        kind,
        crops.min() * inputs.identity.face_width,
        crops.max() * inputs.identity.face_width,
    )
    frames, boxes, eyes, visible = _render_frames(
        cfg, subject_index, profile, inputs, nuisance, (background, shirt), (centres, crops), indices, frame_size
    )
    return SceneSequence(
        subject=inputs.subject,
        task=inputs.task,
        frames=frames,
        face_box=boxes,
        eyes=eyes,
        face_visible=visible,
        labels=inputs.track.occurrence[indices],
        label_columns=tuple(cfg.aus.columns),
        crop_centre=centres[indices].astype(np.float32),
        crop_size=crops[indices].astype(np.float32),
        frame_indices=indices,
        fps=cfg.fps,
    )


def _render_frames(
    cfg: SynthConfig,
    subject_index: int,
    profile: str,
    inputs: SequenceInputs,
    nuisance: face.NuisanceTrack,
    scenery: tuple[np.ndarray, tuple],
    walk: tuple[np.ndarray, np.ndarray],
    indices: np.ndarray,
    frame_size: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The frames at `indices` [T, H, W, 3], with the face box [T, 4], eye centres [T, 2, 2] and visibility [T]
    (NaN / False where the face is out of the frame)."""
    width, height = frame_size
    (background, shirt), (centres, crops) = scenery, walk
    t_count = len(indices)
    frames = np.empty((t_count, height, width, 3), np.uint8)
    boxes = np.full((t_count, 4), np.nan, np.float32)
    eyes = np.full((t_count, 2, 2), np.nan, np.float32)
    visible = np.zeros(t_count, bool)
    for i, t in enumerate(indices):
        canvas = background.copy()
        size, centre = float(crops[t]), centres[t]
        body = (_BODY * (size / 2.0) + centre, shirt)
        geometry = face.draw_face_into(
            canvas,
            inputs.identity,
            inputs.rendered_aus,
            inputs.track.intensity[t],
            nuisance,
            int(t),
            size,
            (float(centre[0]), float(centre[1])),
            cfg.texture,
            body,
        )
        noise_rng = sequence_rng(cfg, subject_index, profile + _NOISE_KEY, int(t))  # per frame: any subset agrees
        frames[i] = face.apply_camera(canvas, nuisance, int(t), noise_rng, scale=size)
        box = np.asarray(geometry.face_box)
        if _visible(box, geometry.eye_centres, frame_size):
            visible[i] = True
            boxes[i] = box
            eyes[i] = geometry.eye_centres
    return frames, boxes, eyes, visible


# --- files -----------------------------------------------------------------------------------------------------


def scene_truth_path(video_path: Path | str) -> Path:
    """The ground-truth CSV beside a scene video: same name, .csv."""
    return Path(video_path).with_suffix(".csv")


def write_scene_video(
    seq: SceneSequence, path: Path | str, fps: float | None = None, codec: str | None = None
) -> tuple[Path, Path]:
    """Write the frames as a video (codec by suffix: .mp4 mp4v, lossy; .mkv / .avi FFV1, lossless) and the
    ground truth as a CSV beside it (GT_COLUMNS, then the AU label columns). Returns both paths."""
    path = Path(path)
    fourcc = codec or CODECS.get(path.suffix.lower())
    if fourcc is None:
        raise ConfigError(f"{path}: unknown video suffix {path.suffix!r}; use one of {', '.join(CODECS)}")
    fps = float(fps or seq.fps)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = seq.frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"{path}: OpenCV cannot write codec {fourcc!r} here (try .mkv or .avi for FFV1, .mp4)")
    try:
        for frame in seq.frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    truth = scene_truth_path(path)
    write_scene_csv(seq, truth, fps)
    return path, truth


def _number(v: float, digits: int = 2) -> str:
    return "" if np.isnan(v) else f"{v:.{digits}f}"


def write_scene_csv(seq: SceneSequence, path: Path | str, fps: float | None = None) -> Path:
    """Ground truth, one row per frame: GT_COLUMNS (empty box and eyes where no face), then AU labels."""
    path = Path(path)
    fps = float(fps or seq.fps)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*GT_COLUMNS, *seq.label_columns])
        for i, t in enumerate(seq.frame_indices):
            writer.writerow(
                [
                    int(t),
                    f"{t / fps:.4f}",
                    int(seq.face_visible[i]),
                    *(_number(v) for v in seq.face_box[i]),
                    *(_number(v) for v in seq.eyes[i].reshape(-1)),
                    *(int(v) for v in seq.labels[i]),
                ]
            )
    return path


def read_scene_csv(path: Path | str) -> SceneTruth:
    """Read a scene ground-truth CSV that write_scene_csv wrote; errors name the file and line."""
    path = Path(path)
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows or tuple(rows[0][: len(GT_COLUMNS)]) != GT_COLUMNS:
        raise DataError(f"{path}: line 1: expected the columns {', '.join(GT_COLUMNS)}")
    label_columns = tuple(rows[0][len(GT_COLUMNS) :])
    values = []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(rows[0]):
            raise DataError(f"{path}: line {line}: {len(row)} fields, the header has {len(rows[0])}")
        try:
            values.append([float(v) if v != "" else np.nan for v in row])
        except ValueError:
            raise DataError(f"{path}: line {line}: a field is not a number") from None
    table = np.array(values, dtype=np.float64).reshape(-1, len(rows[0]))
    labels = table[:, len(GT_COLUMNS) :].astype(np.int8) if label_columns else None
    return SceneTruth(
        frame=table[:, 0].astype(np.int64),
        timestamp=table[:, 1],
        face_visible=table[:, 2] > 0,
        face_box=table[:, 3:7],
        eyes=table[:, 7:11].reshape(-1, 2, 2),
        labels=labels,
        label_columns=label_columns,
    )


def read_video_frames(path: Path | str) -> np.ndarray:
    """Every frame of a video file, uint8 [T, H, W, 3] RGB (to check a written scene)."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise DataError(f"{path}: OpenCV cannot open this video")
    frames = []
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    finally:
        capture.release()
    if not frames:
        raise DataError(f"{path}: no frames could be read")
    return np.stack(frames)
