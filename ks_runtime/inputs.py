"""Any input a user names -> a Source: a video file, an image, a list or folder of images (pictures of their own,
or with `sequence` one video's frames), a webcam index, frames, or a SynthAU sequence (`synthau:SIZE:SUBJECT:TASK`).
The file, camera and array sources live in `io/sources.py`; SynthAU sequences come from `synth/`, which is why this
sits above both.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ks_runtime.io.sources import (
    IMAGE_SUFFIXES,
    ArraySource,
    CameraSource,
    ImageFiles,
    ImageFolderSource,
    Source,
    SourceError,
    SourceFrame,
    VideoSource,
    check_fps,
    is_camera_spec,
)
from ks_runtime.synth.generate import SynthConfig, generate_sequence, subject_id, task_id, task_profiles

SYNTH_PREFIX = "synthau:"


@dataclass(frozen=True)
class SynthSpec:
    """`synthau:SIZE:SUBJECT:TASK[:seed=N][:au=SET]`, e.g. synthau:small:S05:T1."""

    size: str
    subject: str
    task: str
    seed: int = 0
    au_set: str | None = None

    @classmethod
    def parse(cls, text: str) -> SynthSpec:
        if not text.startswith(SYNTH_PREFIX):
            raise SourceError(f"{text!r}: a SynthAU input starts with {SYNTH_PREFIX!r}")
        fields = text[len(SYNTH_PREFIX) :].split(":")
        if len(fields) < 3:
            raise SourceError(
                f"{text!r}: expected synthau:SIZE:SUBJECT:TASK[:seed=N][:au=SET], e.g. synthau:small:S05:T1"
            )
        extra: dict[str, Any] = {}
        for item in fields[3:]:
            key, _, value = item.partition("=")
            if key == "seed" and value.lstrip("-").isdigit():
                extra["seed"] = int(value)
            elif key == "au" and value:
                extra["au_set"] = value
            else:
                raise SourceError(f"{text!r}: unknown field {item!r} (known: seed=N, au=SET)")
        return cls(fields[0], fields[1].upper(), fields[2].upper(), **extra)

    def __str__(self) -> str:
        return f"{SYNTH_PREFIX}{self.size}:{self.subject}:{self.task}:seed={self.seed}"


class SynthAUSource(Source):
    """One SynthAU sequence generated in memory, with its ground-truth labels; timestamps index / fps."""

    def __init__(self, spec: SynthSpec | str, au_set: str | None = None) -> None:
        spec = SynthSpec.parse(spec) if isinstance(spec, str) else spec
        try:
            cfg = SynthConfig(size=spec.size, au_set=spec.au_set or au_set or "bp4d", seed=spec.seed)
        except ValueError as error:
            raise SourceError(f"{spec}: {error}") from None
        subjects = [subject_id(i) for i in range(cfg.shape.subjects)]
        tasks = [task_id(p) for p in task_profiles(cfg.shape.tasks)]
        if spec.subject not in subjects:
            raise SourceError(
                f"{spec}: subject {spec.subject} is not in SynthAU {spec.size} ({subjects[0]}..{subjects[-1]})"
            )
        if spec.task not in tasks:
            raise SourceError(f"{spec}: task {spec.task} is not in SynthAU {spec.size} (tasks {', '.join(tasks)})")
        self.spec, self.config = spec, cfg
        self.name = str(spec)
        self.sequence = generate_sequence(cfg, subjects.index(spec.subject), tasks.index(spec.task))
        self.fps, self.length = cfg.fps, len(self.sequence.labels)
        self.labels = self.sequence.labels
        self.label_columns = tuple(cfg.aus.columns)

    @property
    def frames(self) -> np.ndarray:
        """RGB uint8 [T, S, S, 3]."""
        return self.sequence.frames

    def __iter__(self) -> Iterator[SourceFrame]:
        for index, image in enumerate(self.sequence.frames):
            yield SourceFrame(image, index / self.fps, index)


def open_source(
    spec: Source | str | Path | Iterable,
    fps: float | None = None,
    au_set: str | None = None,
    colour: str = "RGB",
    sequence: bool = False,
) -> Source:
    """A Source from a path (video file, image file or folder), a list of image paths, a webcam index (0 or "0"), a
    `synthau:` spec, a Source, or frames.

    Images (one file, a list of files, a folder's files) are pictures of their own, each scored alone, unless
    `sequence`: then a folder's images in natural order, or the list in its order, are the frames of one video."""
    check_fps(fps)  # before anything is opened: a camera or a SynthAU sequence would otherwise ignore it silently
    if isinstance(spec, Source):
        return spec
    if is_camera_spec(spec):
        return CameraSource(int(spec))
    if isinstance(spec, str) and spec.startswith(SYNTH_PREFIX):
        return SynthAUSource(spec, au_set=au_set)
    if isinstance(spec, str | Path):
        return _open_path(Path(spec), fps, sequence)
    if isinstance(spec, list | tuple) and spec and all(isinstance(item, str | Path) for item in spec):
        return ImageFiles(spec, sequence=sequence, fps=fps)
    if isinstance(spec, np.ndarray) or isinstance(spec, Iterable):
        return ArraySource(spec, fps=fps, colour=colour)
    raise SourceError(f"cannot read frames from a {type(spec).__name__}")


def _open_path(path: Path, fps: float | None, sequence: bool) -> Source:
    if path.is_dir():
        return ImageFolderSource(path, fps=fps, sequence=sequence)
    if path.is_file():
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return ImageFiles([path], sequence=sequence, fps=fps)
        return VideoSource(path)
    raise SourceError(f"{path}: no such file or folder")
