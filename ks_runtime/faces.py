"""The face stage: a frame in, the aligned face crop the network reads out, or "no face".

Every face stage has one call, `stage(image, index) -> Face`, and a registry name:
- `aligned`: frames are already aligned face crops (SynthAU, pre-cropped datasets); resized, always a face.
- `haar` (face_haar.py): OpenCV's bundled cascades on raw video, tracked between detections.
- `dlib` (face_dlib.py, the optional `dlib` extra): dlib's HOG detector and 68 landmarks, tracked the same way.
- `auto` (the default): `aligned` when the first frame is a square of at most AUTO_ALIGNED_MAX_PX pixels or
  of the network's size (an aligned crop), `haar` otherwise (raw video, cameras).
A detector stage maps the face's eyes (or five points) onto the bundle's alignment template with a similarity
transform and cuts the crop with `ops.warp_crop`; on a frame without a face it returns NO_FACE, and the engine
ends the stream there and starts a new one at the next face. Training aligns raw datasets with the same
stages (`align_frames`), so train and deploy see the same crops.
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from ks_runtime import ops
from ks_runtime.errors import BundleError, ConfigError
from ks_runtime.preprocess import Preprocess, resize_square

log = logging.getLogger(__name__)

TEMPLATE_POINTS = ("left_eye", "right_eye", "nose_tip", "mouth_left", "mouth_right")  # image-left first
# `auto` takes a square frame up to this side for an aligned crop (AU datasets' crops are 112..256 px); cameras
# and videos are 4:3 or 16:9.
AUTO_ALIGNED_MAX_PX = 256
# Stages that live in their own module, imported when first asked for (dlib's needs an optional package).
_LAZY_STAGES = {"haar": "ks_runtime.face_haar", "dlib": "ks_runtime.face_dlib"}


@dataclass(frozen=True)
class Face:
    """One frame's face: the RGB uint8 crop [S, S, 3] at the network's size (None when there is no face),
    the stage's confidence in [0, 1], the face box in frame pixels (x0, y0, x1, y1) when known, and the
    points the crop was aligned on, float [k, 2] in frame pixels: the eye centres (image-left first), then the
    nose tip and mouth corners when the stage finds them (None for `aligned`)."""

    crop: np.ndarray | None
    confidence: float
    box: tuple[float, float, float, float] | None = None
    points: np.ndarray | None = None

    @property
    def eyes(self) -> np.ndarray | None:
        """The eye centres [2, 2] (image-left, image-right) in frame pixels, when the stage found them."""
        return None if self.points is None else self.points[:2]

    @property
    def success(self) -> bool:
        return self.crop is not None


NO_FACE = Face(None, 0.0)


class FaceStage:
    """Base of every face stage. Stateful stages (trackers) forget their state in `reset`.

    `template` [5, 2] is where the aligned crop's five points sit, as fractions of the crop side (TEMPLATE_POINTS
    order); the bundle's manifest carries it (`template_from_alignment`).
    """

    name = ""

    def __init__(self, preprocess: Preprocess, template: np.ndarray | None = None) -> None:
        self.preprocess = preprocess
        self.template = default_template() if template is None else np.asarray(template, np.float64)

    def __call__(self, image: np.ndarray, index: int) -> Face:
        raise NotImplementedError

    def reset(self) -> None:
        """Start over, e.g. at a new source."""


FACE_STAGES: dict[str, type[FaceStage]] = {}


def register_face_stage(name: str) -> Callable[[type[FaceStage]], type[FaceStage]]:
    def decorate(cls: type[FaceStage]) -> type[FaceStage]:
        cls.name = name
        FACE_STAGES[name] = cls
        return cls

    return decorate


@register_face_stage("aligned")
class AlignedFaces(FaceStage):
    """Frames are aligned face crops already: resize to the network's size; success 1, confidence 1.

    A crop that changes size mid-stream is resized like any other, and the change is logged once.
    """

    def __init__(self, preprocess: Preprocess, template: np.ndarray | None = None) -> None:
        super().__init__(preprocess, template)
        self.reset()

    def reset(self) -> None:
        self._shape: tuple[int, ...] | None = None
        self._warned = False

    def __call__(self, image: np.ndarray, index: int) -> Face:
        if self._shape is None:
            self._shape = image.shape
        elif image.shape != self._shape and not self._warned:
            log.warning("frame %d is %dx%d, earlier frames %dx%d: each aligned crop is resized to %d px",
                        index, image.shape[1], image.shape[0], self._shape[1], self._shape[0], self.preprocess.size)
            self._warned = True
        crop = resize_square(image, self.preprocess.size)
        h, w = image.shape[:2]
        return Face(np.ascontiguousarray(crop), 1.0, (0.0, 0.0, float(w), float(h)))


@register_face_stage("auto")
class AutoFaces(FaceStage):
    """`aligned` or `haar`, chosen on the first frame: a square frame of at most AUTO_ALIGNED_MAX_PX pixels (or of
    the network's size) is an aligned crop; anything else (raw video, a camera) goes through the detector."""

    def __init__(self, preprocess: Preprocess, template: np.ndarray | None = None) -> None:
        super().__init__(preprocess, template)
        self.chosen: FaceStage | None = None

    def reset(self) -> None:
        self.chosen = None

    def __call__(self, image: np.ndarray, index: int) -> Face:
        if self.chosen is None:
            name = auto_face_stage(image.shape, self.preprocess.size)
            log.info("face stage auto: frames of %dx%d -> %s", image.shape[1], image.shape[0], name)
            self.chosen = create_face_stage(name, self.preprocess, self.template)
        return self.chosen(image, index)


def auto_face_stage(shape: tuple[int, ...], size: int) -> str:
    """The stage `auto` picks for frames of `shape` (H, W, ...) and a network input of `size` px."""
    h, w = shape[:2]
    return "aligned" if h == w and (h <= AUTO_ALIGNED_MAX_PX or h == size) else "haar"


def face_stage_names() -> list[str]:
    """Every face stage name this runtime knows (dlib's even when its package is missing)."""
    return sorted(set(FACE_STAGES) | set(_LAZY_STAGES))


def create_face_stage(name: str, preprocess: Preprocess, template: np.ndarray | Mapping | None = None) -> FaceStage:
    """The face stage registered as `name`, aligning onto `template` (fractions [5, 2], or a manifest's
    `alignment` field; default: the SynthAU template)."""
    if name not in FACE_STAGES and name in _LAZY_STAGES:
        importlib.import_module(_LAZY_STAGES[name])  # registers it; a missing optional package is refused on creation
    if name not in FACE_STAGES:
        raise ConfigError(f"face stage {name!r} is not known; known: {', '.join(face_stage_names())}")
    if isinstance(template, Mapping):
        template = template_from_alignment(template)
    return FACE_STAGES[name](preprocess, template)


# ----------------------------------------------------------------------------------------------------------
# The alignment template and the crop


def default_template() -> np.ndarray:
    """SynthAU's template [5, 2] (fractions of the crop side): what the bundled models were trained on."""
    from ks_runtime.synth.face import alignment_template

    points = alignment_template()
    return np.array([points[name] for name in TEMPLATE_POINTS], np.float64)


def template_from_alignment(alignment: Mapping, where: str = "manifest.json") -> np.ndarray:
    """The template [5, 2] from a manifest's `alignment` field ({"template": {name: [x, y]}, ...}); the SynthAU
    template when the field has none (bundles from before alignment landed)."""
    points = alignment.get("template") if isinstance(alignment, Mapping) else None
    if not points:
        return default_template()
    if not isinstance(points, Mapping) or set(TEMPLATE_POINTS) - set(points):
        raise BundleError(f"{where}: field 'alignment.template' needs the points {', '.join(TEMPLATE_POINTS)}")
    try:
        template = np.array([[float(v) for v in points[name]] for name in TEMPLATE_POINTS], np.float64)
    except (TypeError, ValueError):
        raise BundleError(f"{where}: field 'alignment.template' must map each point to [x, y] fractions") from None
    if template.shape != (5, 2) or not np.all(np.isfinite(template)) or not np.all((template > 0) & (template < 1)):
        raise BundleError(f"{where}: field 'alignment.template' must hold [x, y] fractions in (0, 1) for each point")
    if template[1, 0] <= template[0, 0]:
        raise BundleError(f"{where}: field 'alignment.template': the left eye must be left of the right eye")
    return template


def template_pixels(template: np.ndarray, size: int) -> np.ndarray:
    """Template fractions [k, 2] -> pixel coordinates in a size x size crop (pixel centres at integers)."""
    return np.asarray(template, np.float64) * size - 0.5


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The least-squares similarity (rotation, uniform scale, shift; no reflection) taking points src [k, 2]
    onto dst [k, 2], k >= 2, as a forward 2x3 matrix (Umeyama's closed form; exact for two points)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"similarity needs two [k, 2] point sets, k >= 2; got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    var = (a * a).sum()
    if var <= 1e-12:
        raise ValueError("similarity: the source points coincide")
    # As complex numbers: dst ~ z * src, z = sum(conj(a) b) / sum(|a|^2).
    re = (a[:, 0] * b[:, 0] + a[:, 1] * b[:, 1]).sum() / var
    im = (a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]).sum() / var
    rot = np.array([[re, -im], [im, re]])
    return np.hstack([rot, (mu_d - rot @ mu_s)[:, None]])


def align_matrix(points: np.ndarray, template: np.ndarray, size: int) -> np.ndarray:
    """Forward 2x3 matrix: frame pixels -> crop pixels, taking points [k, 2] (eyes first) onto the template's
    first k points in a size x size crop."""
    points = np.asarray(points, np.float64)
    return similarity(points, template_pixels(template[: len(points)], size))


def align_crop(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """The size x size crop of an RGB uint8 frame under a forward similarity `matrix`, cut by ops.warp_crop.

    A face much larger than the crop is first shrunk with area averaging (what a camera at that distance
    would record, and what the SynthAU crops look like), so the bilinear warp does not alias.
    """
    matrix = np.asarray(matrix, np.float64)
    scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    if scale < 0.5:
        corners = np.array([[-1, -1], [size, -1], [-1, size], [size, size]], np.float64)
        inverse = cv2.invertAffineTransform(matrix)
        source = corners @ inverse[:, :2].T + inverse[:, 2]  # the crop's corners in the frame
        h, w = image.shape[:2]
        x0, y0 = (max(0, int(math.floor(v)) - 1) for v in source.min(0))
        x1, y1 = min(w, int(math.ceil(source[:, 0].max())) + 2), min(h, int(math.ceil(source[:, 1].max())) + 2)
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            region = image[y0:y1, x0:x1]
            out_w, out_h = max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))
            small = cv2.resize(region, (out_w, out_h), interpolation=cv2.INTER_AREA)
            fx, fy = out_w / (x1 - x0), out_h / (y1 - y0)
            # resize maps pixel centres as frame = origin + (small + 0.5) / f - 0.5; then crop = matrix @ frame
            to_frame = np.array([[1 / fx, 0, x0 + 0.5 / fx - 0.5], [0, 1 / fy, y0 + 0.5 / fy - 0.5], [0, 0, 1]])
            matrix, image = matrix @ to_frame, np.ascontiguousarray(small)
    return ops.warp_crop(np.ascontiguousarray(image), np.ascontiguousarray(matrix), (size, size), border="replicate")


def align_frames(frames: Iterable[np.ndarray], size: int, face: str = "haar", template: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Align a raw video for training (BP4D, DISFA frames) exactly as the runtime does: RGB uint8 frames ->
    crops uint8 [T, size, size, 3] (zeros where no face), success bool [T], confidence float [T]."""
    stage = create_face_stage(face, Preprocess(size=size), template)
    crops, success, confidence = [], [], []
    for index, frame in enumerate(frames):
        found = stage(frame, index)
        crops.append(found.crop if found.success else np.zeros((size, size, 3), np.uint8))
        success.append(found.success)
        confidence.append(found.confidence)
    if not crops:
        return np.zeros((0, size, size, 3), np.uint8), np.zeros(0, bool), np.zeros(0, np.float32)
    return np.stack(crops), np.array(success), np.array(confidence, np.float32)
