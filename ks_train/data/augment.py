"""Clip augmentation: parameters drawn once per clip and applied to every frame of it (docs/model.md, Data feeding).

Rotation in [-45, 45] degrees, a horizontal flip with p = 0.5 and brightness / contrast / saturation
jitter, on uint8 RGB frames with OpenCV. The same draw for all n frames keeps the clip's motion intact.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    """Strengths; 0 turns one off. Jitter factors are drawn from [1 - v, 1 + v] as in torchvision."""

    rotate_deg: float = 45.0
    flip_p: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    grayscale_p: float = 0.0  # [R] whole clip to grey: colour (skin, hair, background) identifies a subject


@dataclass(frozen=True)
class ClipAugment:
    angle: float
    flip: bool
    brightness: float
    contrast: float
    saturation: float
    grayscale: bool = False


def draw_clip_augment(cfg: AugmentConfig, rng: np.random.Generator) -> ClipAugment:
    def factor(v: float) -> float:
        return float(rng.uniform(1 - v, 1 + v)) if v > 0 else 1.0

    return ClipAugment(
        angle=float(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg)) if cfg.rotate_deg > 0 else 0.0,
        flip=bool(rng.random() < cfg.flip_p),
        brightness=factor(cfg.brightness),
        contrast=factor(cfg.contrast),
        saturation=factor(cfg.saturation),
        grayscale=bool(rng.random() < cfg.grayscale_p) if cfg.grayscale_p > 0 else False,
    )


def apply_clip_augment(frames: np.ndarray, aug: ClipAugment) -> np.ndarray:
    """uint8 [n, H, W, 3] -> uint8 [n, H, W, 3], every frame transformed identically."""
    n, h, w, _ = frames.shape
    out = np.empty_like(frames)
    rotation = cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), aug.angle, 1.0) if aug.angle else None
    for i in range(n):
        frame = frames[i]
        if rotation is not None:
            frame = cv2.warpAffine(frame, rotation, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        if aug.flip:
            frame = frame[:, ::-1]
        out[i] = frame
    return _colour_jitter(out, aug)


def _colour_jitter(frames: np.ndarray, aug: ClipAugment) -> np.ndarray:
    if aug.brightness == aug.contrast == aug.saturation == 1.0 and not aug.grayscale:
        return frames
    x = frames.astype(np.float32) * aug.brightness
    # Contrast blends with the clip's mean grey and saturation with each pixel's grey (ITU-R 601 weights).
    grey = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # [n, H, W]
    x = (x - grey.mean()) * aug.contrast + grey.mean()
    grey = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    x = (x - grey[..., None]) * (0.0 if aug.grayscale else aug.saturation) + grey[..., None]
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)
