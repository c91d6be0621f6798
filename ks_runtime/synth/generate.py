"""SynthAU sets: sizes, subjects and folds, whole sequences, and the on-disk generic layout.

Every sequence is generated from its own seed (set seed, subject, task), so any one of them can be
produced alone (the runtime's SynthAU source does this) and a set is the same whichever order it is made in.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from ks_runtime.core.au import AUSet, get_au_set
from ks_runtime.synth import face, labels
from ks_runtime.synth.identity import Identity, draw_identity

# Bumped whenever a change alters any generated pixel or label; results name the version they used.
GENERATOR_VERSION = "2.1"
N_PARTS = 3


@dataclass(frozen=True)
class SynthSize:
    subjects: int
    tasks: int
    frames: int
    image_size: int


SIZES: dict[str, SynthSize] = {
    "tiny": SynthSize(subjects=6, tasks=2, frames=120, image_size=64),
    # 28 short videos rather than the first design's 14 x 4 x 300 (same frame count): with 9 training identities
    # a frame model memorised faces (docs/synthau.md, 'Sets and folds' and 'How it got there').
    "small": SynthSize(subjects=28, tasks=4, frames=150, image_size=96),
    "full": SynthSize(subjects=41, tasks=8, frames=500, image_size=128),
}


@dataclass(frozen=True)
class SynthConfig:
    """One SynthAU set. `size` picks the shape; the optional fields override it."""

    size: str = "small"
    au_set: str = "bp4d"
    seed: int = 0
    fps: float = 25.0
    image_size: int | None = None
    frames: int | None = None
    subjects: int | None = None
    tasks: int | None = None
    nuisance: face.NuisanceStrengths = field(default_factory=face.NuisanceStrengths)
    texture: face.TextureStrengths = field(default_factory=face.TextureStrengths)
    quirk_scale: float = 0.25  # scales every identity's resting-face quirks (0: none); same faces otherwise
    expressiveness: float = 1.0  # scales every identity's AU deformation (the AUs' visibility); same faces otherwise

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise ValueError(f"unknown SynthAU size {self.size!r}; known: {', '.join(SIZES)}")
        get_au_set(self.au_set)

    @property
    def shape(self) -> SynthSize:
        base = SIZES[self.size]
        return SynthSize(
            subjects=self.subjects or base.subjects,
            tasks=self.tasks or base.tasks,
            frames=self.frames or base.frames,
            image_size=self.image_size or base.image_size,
        )

    @property
    def aus(self) -> AUSet:
        return get_au_set(self.au_set)

    def to_dict(self) -> dict:
        return {**asdict(self), "version": GENERATOR_VERSION}

    @classmethod
    def from_dict(cls, data: dict) -> SynthConfig:
        data = {k: v for k, v in data.items() if k != "version"}
        nuisance = face.NuisanceStrengths(**data.pop("nuisance", {}))
        texture = face.TextureStrengths(**data.pop("texture", {}))
        return cls(**data, nuisance=nuisance, texture=texture)

    def with_overrides(self, **changes) -> SynthConfig:
        return replace(self, **changes)


def synth_config_from_data(data: dict) -> SynthConfig:
    """The SynthAU set a training config's `data` section names (a plain dict, as checkpoints and manifests
    carry it): the one place that maps its synth_* fields onto a SynthConfig."""
    try:
        return SynthConfig(
            size=data["synth_size"],
            au_set=data["au_set"],
            seed=int(data["synth_seed"]),
            quirk_scale=float(data.get("synth_quirk_scale", 1.0)),
            expressiveness=float(data.get("synth_expressiveness", 1.0)),
            nuisance=face.NuisanceStrengths(**data.get("synth_nuisance", {})),
            texture=face.TextureStrengths(**data.get("synth_texture", {})),
        )
    except (KeyError, TypeError) as error:
        raise ValueError(f"not a SynthAU data config: {error}") from None


def subject_id(index: int) -> str:
    return f"S{index + 1:02d}"


def task_profiles(tasks: int) -> list[int]:
    """Which of the label process's task profiles a set with `tasks` tasks uses: spread over all of them
    (4 tasks: chat, startle, pain, disgust), so a small set still sees brow lowering and lip pressing."""
    if not 1 <= tasks <= labels.N_TASKS:
        raise ValueError(f"a SynthAU set has 1..{labels.N_TASKS} tasks, got {tasks}")
    return [int(round(i)) for i in np.linspace(0, labels.N_TASKS - 1, tasks)]


def task_id(profile: int) -> str:
    """Named by profile, as BP4D numbers its tasks (T1 pleasant chat ... T8 disgust)."""
    return f"T{profile + 1}"


def synth_parts(cfg: SynthConfig) -> list[list[str]]:
    """Three subject-exclusive parts, contiguous in subject order (`full`: 14 / 14 / 13)."""
    subjects = [subject_id(i) for i in range(cfg.shape.subjects)]
    return [list(part) for part in np.array_split(np.array(subjects), N_PARTS)]


@dataclass
class SynthSequence:
    """One generated video: RGB frames [T, S, S, 3] (None when labels only), labels int8 [T, U],
    intensities float32 [T, R] of every rendered AU, and the per-frame nuisances."""

    subject: str
    task: str
    labels: np.ndarray
    intensity: np.ndarray
    rendered_aus: tuple[int, ...]
    frames: np.ndarray | None
    nuisance: face.NuisanceTrack | None


def sequence_rng(cfg: SynthConfig, *keys: int) -> np.random.Generator:
    """The random stream of (set seed, *keys): (subject) for identities, (subject, task profile + 1000) for
    labels and nuisances, + 2000 for sensor noise; scene mode uses + 3000 and + 4000."""
    return np.random.default_rng(np.random.SeedSequence([cfg.seed, *keys]))


@dataclass
class SequenceInputs:
    """What one subject-task video is made from, before drawing: shared by the aligned generator and scene mode."""

    subject: str
    task: str
    identity: Identity
    track: labels.LabelTrack
    rendered_aus: tuple[int, ...]
    nuisance: face.NuisanceTrack | None  # None when asked for labels only
    pixel_rng: np.random.Generator  # sensor noise of the aligned crops


def sequence_inputs(cfg: SynthConfig, subject_index: int, task_index: int, nuisance: bool = True) -> SequenceInputs:
    """Identity, labels and nuisances of one subject-task video, deterministically from (seed, subject, task).

    The label process draws first from its own streams, so nothing the renderer does changes a label.
    """
    shape = cfg.shape
    if not (0 <= subject_index < shape.subjects and 0 <= task_index < shape.tasks):
        raise IndexError(f"subject {subject_index} / task {task_index} outside a {shape} set")
    model = labels.label_model(cfg.aus)
    subject_rng = sequence_rng(cfg, subject_index)
    traits = labels.draw_label_traits(model, subject_rng)
    identity = draw_identity(subject_rng, quirk_scale=cfg.quirk_scale)
    if cfg.expressiveness != 1.0:
        identity = replace(identity, gain=identity.gain * cfg.expressiveness)
    profile = task_profiles(shape.tasks)[task_index]
    label_rng = sequence_rng(cfg, subject_index, profile + 1000)
    track = labels.sample_labels(model, traits, profile, shape.frames, label_rng, fps=cfg.fps)
    track_n = face.sample_nuisance(shape.frames, label_rng, cfg.nuisance, fps=cfg.fps) if nuisance else None
    return SequenceInputs(
        subject_id(subject_index),
        task_id(profile),
        identity,
        track,
        model.rendered_aus,
        track_n,
        sequence_rng(cfg, subject_index, profile + 2000),
    )


def generate_sequence(cfg: SynthConfig, subject_index: int, task_index: int, render: bool = True) -> SynthSequence:
    """Generate one subject-task video, deterministically from (seed, subject, task)."""
    inputs = sequence_inputs(cfg, subject_index, task_index, nuisance=render)
    track, nuisance = inputs.track, inputs.nuisance
    frames = None
    if nuisance is not None:
        size = cfg.shape.image_size
        frames = np.stack(
            [
                face.render_frame(
                    inputs.identity,
                    inputs.rendered_aus,
                    track.intensity[t],
                    nuisance,
                    t,
                    size,
                    inputs.pixel_rng,
                    cfg.texture,
                )
                for t in range(len(track.intensity))
            ]
        )
    return SynthSequence(
        inputs.subject, inputs.task, track.occurrence, track.intensity, inputs.rendered_aus, frames, nuisance
    )


def iter_sequences(cfg: SynthConfig, render: bool = True) -> Iterator[SynthSequence]:
    for s in range(cfg.shape.subjects):
        for k in range(cfg.shape.tasks):
            yield generate_sequence(cfg, s, k, render=render)


def write_sequence(sequence: SynthSequence, root: Path, au_set: AUSet, image_format: str = "png") -> None:
    """Write one sequence in the generic layout: frames/<subject>/<task>/<frame>.png and its label CSV."""
    if sequence.frames is None:
        raise ValueError("write_sequence needs a rendered sequence")
    frame_dir = root / "frames" / sequence.subject / sequence.task
    frame_dir.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(sequence.frames):
        path = frame_dir / f"{t:05d}.{image_format}"
        if not cv2.imwrite(str(path), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)):
            raise OSError(f"{path}: could not write frame")
    label_path = root / "labels" / sequence.subject / f"{sequence.task}.csv"
    label_path.parent.mkdir(parents=True, exist_ok=True)
    with open(label_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["frame", *au_set.columns])
        for t, row in enumerate(sequence.labels):
            writer.writerow([t, *(int(v) for v in row)])


def write_dataset(cfg: SynthConfig, root: Path | str, image_format: str = "png", progress: bool = False) -> Path:
    """Generate a whole set and write it to `root` in the generic layout, with folds.json and synthau.json."""
    from tqdm import tqdm

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    total = cfg.shape.subjects * cfg.shape.tasks
    for sequence in tqdm(iter_sequences(cfg), total=total, disable=not progress, desc="SynthAU", unit="seq"):
        write_sequence(sequence, root, cfg.aus, image_format)
    (root / "folds.json").write_text(json.dumps({"parts": synth_parts(cfg)}, indent=1))
    (root / "synthau.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    return root
