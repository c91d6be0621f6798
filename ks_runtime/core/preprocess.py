"""Frame preprocessing in numpy: the one definition of what pixels the network sees.

Training and the runtime both call `to_network_input`, and the bundle's manifest carries a
`Preprocess` to the runtime, so the two cannot disagree about size, colour order or normalisation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

COLOUR_ORDERS = ("RGB", "BGR")
# ImageNet statistics: the convention of every local ResNet checkpoint a user might start from.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """How a uint8 face crop becomes network input: square `size`, `colour` order, (x/255 - mean)/std, NCHW."""

    size: int
    colour: str = "RGB"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.size < 8:
            raise ValueError(f"preprocess size must be >= 8 pixels, got {self.size}")
        if self.colour not in COLOUR_ORDERS:
            raise ValueError(f"preprocess colour must be one of {COLOUR_ORDERS}, got {self.colour!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("preprocess mean and std need three values each, std > 0")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Preprocess:
        return cls(
            size=int(data["size"]),
            colour=str(data["colour"]),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
        )


def as_uint8_colour(frame: np.ndarray, where: str = "frame") -> np.ndarray:
    """Bring a decoded frame to uint8 [H, W, 3]: grayscale is replicated, 16-bit is scaled down.

    Anything else (float images, 2 or 5 channels) is refused with a message naming `where`.
    """
    if not isinstance(frame, np.ndarray):
        raise TypeError(f"{where}: expected a numpy image, got {type(frame).__name__}")
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    if frame.ndim == 2:
        frame = np.repeat(frame[:, :, None], 3, axis=2)
    if frame.ndim != 3 or frame.shape[2] not in (3, 4):
        raise ValueError(f"{where}: expected an image [H, W, 3], got shape {frame.shape}")
    if frame.shape[2] == 4:
        frame = frame[:, :, :3]
    if frame.dtype == np.uint16:
        frame = (frame >> 8).astype(np.uint8)
    elif frame.dtype != np.uint8:
        raise ValueError(f"{where}: expected 8- or 16-bit pixels, got dtype {frame.dtype}")
    return np.ascontiguousarray(frame)


def resize_square(frame: np.ndarray, size: int) -> np.ndarray:
    """Resize an [H, W, 3] crop to size x size (area filter when shrinking, bilinear when growing)."""
    h, w = frame.shape[:2]
    if (h, w) == (size, size):
        return frame
    interpolation = cv2.INTER_AREA if min(h, w) > size else cv2.INTER_LINEAR
    return cv2.resize(frame, (size, size), interpolation=interpolation)


def crop_box(frame: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """Crop [x0, y0, x1, y1) from a frame, replicating the border where the box leaves the image."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"empty crop box {box}")
    h, w = frame.shape[:2]
    pad = max(0, -x0, -y0, x1 - w, y1 - h)
    if pad:
        frame = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x0, y0, x1, y1 = x0 + pad, y0 + pad, x1 + pad, y1 + pad
    return frame[y0:y1, x0:x1]


def to_network_input(frames: np.ndarray, spec: Preprocess, colour_in: str = "RGB") -> np.ndarray:
    """uint8 frames [B, H, W, 3] (or one [H, W, 3]) in `colour_in` order -> float32 [B, 3, size, size]."""
    if colour_in not in COLOUR_ORDERS:
        raise ValueError(f"colour_in must be one of {COLOUR_ORDERS}, got {colour_in!r}")
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames [B, H, W, 3], got {frames.dtype} {frames.shape}")
    if frames.shape[1:3] != (spec.size, spec.size):
        frames = np.stack([resize_square(f, spec.size) for f in frames])
    if colour_in != spec.colour:
        frames = frames[..., ::-1]
    scale = np.float32(1.0 / 255.0)
    mean = np.asarray(spec.mean, dtype=np.float32)
    inv_std = np.float32(1.0) / np.asarray(spec.std, dtype=np.float32)
    out = (frames.astype(np.float32) * scale - mean) * inv_std  # [B, S, S, 3]
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))  # [B, 3, S, S]
