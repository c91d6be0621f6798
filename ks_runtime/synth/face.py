"""SynthAU faces: per-frame nuisances and the parametric renderer (identities in identity.py, the landmark model
in face_model.py, the drawing in drawing.py).

A face is a set of control landmarks in canonical units (the aligned crop spans [-1, 1], y down). Each AU adds a
fixed displacement field (a blend shape) scaled by its intensity and the subject's gain, so AUs combine
additively; resting-face quirks are standing offsets on the same blend shapes. Head pose rotates the landmarks
in 2.5D (a depth per landmark), alignment jitter is a small similarity, and OpenCV draws anti-aliased polygons
through spline-densified landmarks (see drawing.py). AU textures (wrinkles, bulges, pits) darken or lighten with the
AU's amount, each scaled by a TextureStrengths field. A rare occluder (a hand, a strand of hair) is drawn over the
face; then the camera: lighting ramp and colour cast, occasional blur, sensor noise, occasional JPEG re-encoding.

Pixel convention: a point at canonical (x, y) lands at pixel ((x + 1) S / 2 - 0.5, ...) of an S px crop, pixel
centres being integers, so a crop fraction f = (pixel + 0.5) / S.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import cv2
import numpy as np

from ks_runtime.core.template import TEMPLATE_POINTS
from ks_runtime.synth import drawing
from ks_runtime.synth.face_model import AU_INDEX, IRIS_POINTS, TEXTURES, FaceModel, build_model
from ks_runtime.synth.identity import Identity
from ks_runtime.synth.labels import RENDERED_AUS


@dataclass(frozen=True)
class NuisanceStrengths:
    """How strong each per-frame nuisance is; 0 turns it off. Calibrated once, then frozen with the version."""

    # Version 2.1's calibrated strengths; how they were chosen, and version 2.0's, are in docs/synthau.md,
    # 'Calibration (generator 2.1)'.
    head_pose_deg: float = 3.0  # yaw range is about +-this; pitch and roll are smaller
    jitter_px: float = 0.2  # alignment jitter sd, in pixels of a 112 px crop (plus matching scale/rotation)
    lighting: float = 0.1  # amplitude of the multiplicative lighting ramp across the crop
    noise: float = 1.5  # sensor noise sd in grey levels
    colour_cast: float = 0.02  # sd of the per-channel white-balance gain (log units), drifting slowly
    blur_prob: float = 0.02  # share of frames inside a blur episode (a few frames of Gaussian or motion blur)
    blur_px: float = 1.2  # blur sd (Gaussian) or half-length / 2 (motion), in pixels of a 112 px crop
    jpeg_prob: float = 0.05  # share of frames re-encoded as JPEG
    jpeg_quality_min: float = 20.0  # the quality of a re-encoded frame is uniform in [min, max]
    jpeg_quality_max: float = 70.0
    occlusion_prob: float = 0.05  # chance that a sequence has one occlusion episode (a hand or a hair strand)
    occlusion_seconds: float = 2.0  # mean length of an occlusion episode


@dataclass(frozen=True)
class TextureStrengths:
    """How visible each texture cue is, as a multiple of its designed darkness; 0 turns the cue off.

    AU cues follow the AU's blend-shape amount (intensity and the subject's gain); `permanent` scales the
    identity's standing wrinkles, which are there whatever the AUs do.
    """

    glabella: float = 1.0  # AU4: vertical lines between the brows
    forehead: float = 1.0  # AU1 / AU2: horizontal forehead lines
    crow: float = 1.0  # AU6: crow's feet at the outer eye corners
    lid_bulge: float = 1.0  # AU6: bag under the lower lid and the infraorbital furrow below it
    cheek: float = 1.0  # AU6 / AU12: raised cheek highlight
    nose_wrinkle: float = 1.0  # AU9: lines across the nose root
    nasolabial: float = 1.0  # AU9 / AU10 / AU12: deepened nasolabial fold
    dimple: float = 1.0  # AU14: dimple and the tucked lip corner
    chin: float = 1.0  # AU17: pitted chin boss and the mentolabial sulcus
    lip_bulge: float = 1.0  # AU23 / AU24: bulges above and below pressed lips
    permanent: float = 1.0  # the identity's standing wrinkles


# Which TextureStrengths field scales each texture of face_model.TEXTURES.
_TEXTURE_FIELD = {
    "glabella": "glabella",
    "forehead_c": "forehead",
    "forehead_l": "forehead",
    "crow": "crow",
    "furrow": "lid_bulge",
    "lid_bulge": "lid_bulge",
    "cheek": "cheek",
    "nose_wrinkle": "nose_wrinkle",
    "nasolabial": "nasolabial",
    "dimple": "dimple",
    "corner": "dimple",
    "sulcus": "chin",
    "chin_tex": "chin",
    "chin_boss": "chin",
    "lip_bulge": "lip_bulge",
}
_TEXTURE_MAX = 1.6  # alpha cap: strengths above 1 can darken a cue further, up to this


@functools.lru_cache(maxsize=32)
def _texture_gains(strengths: TextureStrengths) -> np.ndarray:
    """TextureStrengths -> one gain per texture row [X]."""
    return np.array([getattr(strengths, _TEXTURE_FIELD[name]) for name in TEXTURES])


@dataclass
class Occlusion:
    """One occlusion episode of a sequence, in canonical units of the face (it moves with the head)."""

    kind: str  # "hand" or "hair"
    amount: np.ndarray  # [T] 0 absent .. 1 in place: rises as it comes in, falls as it leaves
    drift: np.ndarray  # [T, 2] slow wander while in place
    anchor: tuple[float, float]  # hand: palm centre; hair: strand roots' centre
    entry: tuple[float, float]  # offset it comes in from (at amount 0 it sits at anchor + entry)
    angle: float  # radians; hand: fingers' direction from straight up; hair: sideways lean of the strands
    size: float  # scale of the hand / length of the strands
    side: int  # -1 or 1: a left or right hand (thumb side) / which way the strands fall
    tint: float  # hand colour relative to the face's skin; hair strands' brightness
    shape: np.ndarray  # [8, 3] uniform draws for per-strand offsets (hair), unused by a hand


@dataclass
class NuisanceTrack:
    """Per-frame nuisance values of one sequence; arrays are [T]."""

    yaw: np.ndarray  # degrees
    pitch: np.ndarray
    roll: np.ndarray
    dx: np.ndarray  # alignment jitter, canonical units (the crop spans 2)
    dy: np.ndarray
    scale: np.ndarray  # multiplicative
    rotation: np.ndarray  # jitter rotation, degrees
    light_angle: np.ndarray  # radians, direction the lighting ramp rises toward
    light_strength: np.ndarray  # ramp amplitude
    brightness: np.ndarray  # global exposure gain
    noise_sd: float = 0.0
    colour: np.ndarray | None = None  # [T, 3] white-balance gain per channel (None: 1)
    blur_sigma: np.ndarray | None = None  # [T] px of a 112 px crop, 0 = sharp (None: never blurred)
    blur_angle: np.ndarray | None = None  # [T] radians of a motion blur; NaN = Gaussian blur
    jpeg_quality: np.ndarray | None = None  # [T] JPEG quality of a re-encoded frame, 0 = not re-encoded
    occlusion: Occlusion | None = None

    def __len__(self) -> int:
        return len(self.yaw)


@dataclass(frozen=True)
class FaceGeometry:
    """Where the rendered face is, in pixel coordinates of the output image (x right, y down, pixel centres at
    integers). The face box spans the face contour from cheek to cheek (ears excluded) and from a quarter of the
    brow-to-chin height above the brows (about the hairline) down to the chin, like a face detector's box."""

    eye_centres: np.ndarray  # [2, 2] middle of each eye opening (mean of the lid points), image-left eye first
    face_box: tuple[float, float, float, float]  # x0, y0, x1, y1 (see above); not clipped to the image
    points5: np.ndarray  # [5, 2] the usual alignment landmarks: eyes, nose tip, mouth corners (image-left first)
    landmarks: np.ndarray  # [V, 2] every drawn point
    groups: dict[str, slice]  # named groups of `landmarks` (contour, brow0, lid_up0, lip_uo, ...)


def _smooth_noise(n: int, rng: np.random.Generator, timescale_frames: float) -> np.ndarray:
    """Unit-variance Gaussian process, smooth on `timescale_frames` (white noise through a Gaussian kernel)."""
    sigma = max(timescale_frames, 1e-3)
    half = int(np.ceil(3 * sigma))
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    kernel /= np.sqrt(np.sum(kernel**2))  # unit output variance, whatever the sequence length
    return np.convolve(rng.standard_normal(n + 2 * half), kernel, mode="valid")


def sample_nuisance(
    n_frames: int, rng: np.random.Generator, strengths: NuisanceStrengths, fps: float = 25.0
) -> NuisanceTrack:
    """Per-frame nuisances: head pose and lighting drift over seconds, alignment jitter changes every frame,
    blur comes in episodes of a few frames, JPEG re-encoding hits single frames, an occlusion lasts seconds.

    The same number of random draws is made whatever the strengths, so turning one nuisance off leaves the
    others unchanged.
    """
    s = strengths
    pose = []
    for share, offset_share, timescale in ((0.5, 0.3, 1.2), (0.3, 0.2, 1.0), (0.22, 0.15, 1.5)):
        process = offset_share * rng.standard_normal() + share * _smooth_noise(n_frames, rng, timescale * fps)
        limit = 2.0 * max(s.head_pose_deg, 1e-9)
        pose.append(limit * np.tanh(s.head_pose_deg * process / limit))  # soft limit at +-2 x strength
    jitter = s.jitter_px * 2.0 / 112.0  # px at 112 -> canonical units
    shake = rng.standard_normal((4, n_frames))
    angle = rng.uniform(0, 2 * np.pi) + 0.6 * _smooth_noise(n_frames, rng, 3.0 * fps)
    strength = s.lighting * (0.75 + 0.35 * np.abs(_smooth_noise(n_frames, rng, 4.0 * fps)))
    brightness = np.exp(s.lighting * (0.5 * rng.standard_normal() + 0.2 * _smooth_noise(n_frames, rng, 2.0 * fps)))
    # Version 2 nuisances draw after all of version 1's, so pose, jitter and lighting keep their values.
    cast = rng.standard_normal(3)[None, :] + 0.3 * np.stack(
        [_smooth_noise(n_frames, rng, 5.0 * fps) for _ in range(3)], 1
    )
    colour = np.exp(s.colour_cast * (cast - cast.mean(1, keepdims=True)))  # [T, 3], hue only: exposure is above
    return NuisanceTrack(
        yaw=pose[0],
        pitch=pose[1],
        roll=pose[2],
        dx=jitter * shake[0],
        dy=jitter * shake[1],
        scale=np.exp(0.01 * s.jitter_px * shake[2]),
        rotation=0.5 * s.jitter_px * shake[3],
        light_angle=angle,
        light_strength=strength,
        brightness=brightness,
        noise_sd=float(s.noise),
        colour=colour,
        **_sample_blur(n_frames, rng, s),
        jpeg_quality=_sample_jpeg(n_frames, rng, s),
        occlusion=_sample_occlusion(n_frames, rng, s, fps),
    )


BLUR_EPISODE_FRAMES = 4.0  # mean length of a blur episode


def _sample_blur(n: int, rng: np.random.Generator, s: NuisanceStrengths) -> dict[str, np.ndarray]:
    """Blur episodes: each starts with probability blur_prob / mean length per frame and lasts 1..7 frames,
    at one sd and one kind (half Gaussian, half motion blur in a random direction) throughout."""
    starts = rng.uniform(size=n) < s.blur_prob / BLUR_EPISODE_FRAMES
    lengths = rng.integers(1, 2 * int(BLUR_EPISODE_FRAMES), size=n)
    sds = s.blur_px * rng.uniform(0.5, 1.0, size=n)
    motion = rng.uniform(size=n) < 0.5
    angles = np.where(motion, rng.uniform(0, np.pi, size=n), np.nan)
    sigma, angle = np.zeros(n), np.full(n, np.nan)
    if s.blur_px > 0:
        for t in np.flatnonzero(starts):
            sigma[t : t + lengths[t]] = sds[t]
            angle[t : t + lengths[t]] = angles[t]
    return {"blur_sigma": sigma, "blur_angle": angle}


def _sample_jpeg(n: int, rng: np.random.Generator, s: NuisanceStrengths) -> np.ndarray:
    """JPEG quality per frame: 0 (not re-encoded) except on a jpeg_prob share of frames."""
    hit = rng.uniform(size=n) < s.jpeg_prob
    lo, hi = sorted((s.jpeg_quality_min, s.jpeg_quality_max))
    quality = np.clip(np.round(lo + (hi - lo) * rng.uniform(size=n)), 1, 100)
    return np.where(hit, quality, 0).astype(np.int64)


def _sample_occlusion(n: int, rng: np.random.Generator, s: NuisanceStrengths, fps: float) -> Occlusion | None:
    """At most one episode per sequence (probability occlusion_prob): a hand over the mouth, a cheek or an eye
    (60%), or strands of hair falling over the forehead and an eye (40%); it comes in, stays, and leaves."""
    u = rng.uniform(size=12)
    shape = rng.uniform(size=(8, 3))
    drift = 0.025 * np.stack([_smooth_noise(n, rng, 0.8 * fps), _smooth_noise(n, rng, 0.8 * fps)], 1)
    if not (u[0] < s.occlusion_prob and s.occlusion_seconds > 0 and n >= 4):
        return None
    length = int(np.clip(round(s.occlusion_seconds * fps * (0.5 + u[1])), 4, n))
    start = int(u[2] * (n - length + 1))
    ramp = max(1, min(int(0.3 * fps), length // 3))  # frames to come in, and to leave
    t = np.arange(n) - start
    rise = np.clip((t + 1) / ramp, 0, 1)
    fall = np.clip((length - t) / ramp, 0, 1)
    amount = np.where((t >= 0) & (t < length), 0.5 - 0.5 * np.cos(np.pi * np.minimum(rise, fall)), 0.0)
    side = 1 if u[3] < 0.5 else -1
    if u[4] < 0.6:
        where = u[5]
        if where < 0.5:  # over the mouth and chin, from below
            anchor, entry, angle = (side * 0.12 * u[6], 0.45 + 0.35 * u[7]), (0.0, 1.7), side * 0.3 * (u[8] - 0.5)
        elif where < 0.8:  # on a cheek, from below and the side
            anchor = (side * (0.35 + 0.2 * u[6]), 0.1 + 0.35 * u[7])
            entry, angle = (side * 0.7, 1.5), -side * (0.1 + 0.4 * u[8])
        else:  # over an eye or the forehead, from the side
            anchor = (side * (0.15 + 0.25 * u[6]), -0.35 + 0.3 * u[7])
            entry, angle = (side * 1.2, 1.2), side * (0.3 + 0.6 * u[8])
        return Occlusion(
            "hand", amount, drift, anchor, entry, float(angle), 1.15 + 0.3 * u[9], side, 0.92 + 0.14 * u[10], shape
        )
    anchor = (side * (0.05 + 0.35 * u[6]), 0.0)  # y: the identity's hairline, filled in when drawn
    return Occlusion(
        "hair",
        amount,
        drift,
        anchor,
        (0.0, 0.0),
        float(side * (0.1 + 0.3 * u[8])),
        0.5 + 0.45 * u[9],
        side,
        0.8 + 0.35 * u[10],
        shape,
    )


def still_nuisance(n_frames: int = 1) -> NuisanceTrack:
    """Every nuisance off: frontal pose, no jitter, flat lighting, no noise (for previews and tests)."""
    z = [np.zeros(n_frames) for _ in range(8)]
    return NuisanceTrack(
        yaw=z[0],
        pitch=z[1],
        roll=z[2],
        dx=z[3],
        dy=z[4],
        scale=np.ones(n_frames),
        rotation=z[5],
        light_angle=z[6],
        light_strength=z[7],
        brightness=np.ones(n_frames),
        noise_sd=0.0,
    )


def without_jitter(nuisance: NuisanceTrack) -> NuisanceTrack:
    """The same track with the alignment jitter removed (scene mode: the face is not aligned yet)."""
    n = len(nuisance)
    return replace(nuisance, dx=np.zeros(n), dy=np.zeros(n), scale=np.ones(n), rotation=np.zeros(n))


@functools.lru_cache(maxsize=128)
def _model(identity: Identity) -> tuple[FaceModel, drawing.Palette]:
    return build_model(identity), drawing.palette(identity)


@functools.lru_cache(maxsize=64)
def _au_columns(au_numbers: tuple[int, ...]) -> np.ndarray:
    unknown = [au for au in au_numbers if au not in AU_INDEX]
    if unknown:
        raise ValueError(f"the SynthAU renderer has no blend shape for AUs {unknown}; it knows {RENDERED_AUS}")
    return np.array([AU_INDEX[au] for au in au_numbers], dtype=np.int64)


def au_response(intensity: np.ndarray) -> np.ndarray:
    """Intensity 0..5 -> blend-shape amount 0..1: zero at 0, about half at 2 (where occurrence starts)."""
    return (np.clip(np.asarray(intensity, dtype=np.float64), 0.0, 5.0) / 5.0) ** 0.75


def _amounts(identity: Identity, au_numbers: tuple[int, ...], intensity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Blend-shape amounts [K] for geometry (quirks included) and for textures (AUs only)."""
    intensity = np.asarray(intensity, dtype=np.float64).reshape(-1)
    if len(intensity) != len(au_numbers):
        raise ValueError(f"intensity has {len(intensity)} values for {len(au_numbers)} AUs {au_numbers}")
    active = np.zeros(len(RENDERED_AUS))
    active[_au_columns(tuple(au_numbers))] = au_response(intensity)
    active *= identity.gain * np.asarray(identity.au_gain)
    return active + np.asarray(identity.rest), active


def _shape(model: FaceModel, geometry: np.ndarray) -> np.ndarray:
    """Control points [N, 2] for these blend-shape amounts, with lids and lips kept from crossing."""
    pts = model.neutral + (geometry @ model.basis).reshape(-1, 2)
    sl = model.slices
    for side in (0, 1):
        up, lo = pts[sl[f"lid_up{side}"], 1], pts[sl[f"lid_lo{side}"], 1]
        short = np.maximum(up + 0.006 - lo, 0.0) / 2  # a closing eye: the lids meet halfway
        pts[sl[f"lid_up{side}"], 1] = up - short
        pts[sl[f"lid_lo{side}"], 1] = lo + short
    ui, li = pts[sl["lip_ui"], 1], pts[sl["lip_li"], 1]
    li = np.maximum(li, ui)  # pressed lips meet; they never cross
    pts[sl["lip_li"], 1] = li
    uo = pts[sl["lip_uo"], 1]
    uo[[0, 2, 4]] = np.minimum(uo[[0, 2, 4]], ui - 0.008)  # a lip keeps some thickness
    uo[[1, 3]] = np.minimum(uo[[1, 3]], (ui[:2] + ui[1:]) / 2 - 0.01)
    pts[sl["lip_uo"], 1] = uo
    pts[sl["lip_lo"], 1] = np.maximum(pts[sl["lip_lo"], 1], li + 0.012)
    return pts


_CIRCLE = np.stack(
    [
        np.cos(np.arange(IRIS_POINTS) * (2 * np.pi / IRIS_POINTS)),
        np.sin(np.arange(IRIS_POINTS) * (2 * np.pi / IRIS_POINTS)),
    ],
    1,
)


def _iris_polygon(centre: np.ndarray, radius: float, upper: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """The iris disc clipped to the eye opening: circle points clamped between the lid curves."""
    if upper[0, 0] > upper[-1, 0]:  # np.interp needs increasing x
        upper, lower = upper[::-1], lower[::-1]
    circle = centre + radius * _CIRCLE
    x = np.clip(circle[:, 0], max(upper[0, 0], lower[0, 0]), min(upper[-1, 0], lower[-1, 0]))
    top, bottom = np.interp(x, upper[:, 0], upper[:, 1]), np.interp(x, lower[:, 0], lower[:, 1])
    circle[:, 0] = x
    circle[:, 1] = np.clip(circle[:, 1], top, np.maximum(bottom, top))
    return circle


@functools.lru_cache(maxsize=8)
def _teeth_taper(n: int) -> np.ndarray:
    return np.sin(np.linspace(0, np.pi, n)) ** 0.5  # no teeth in the mouth corners


def _teeth_polygons(ui: np.ndarray, li: np.ndarray, upper_h: float, lower_h: float) -> tuple[np.ndarray, np.ndarray]:
    """Upper and lower teeth: bands under the upper inner lip and above the lower one, inside the opening."""
    gap = np.maximum(li[:, 1] - ui[:, 1], 0)
    taper = _teeth_taper(len(ui))
    h_up = np.minimum(upper_h * taper, gap)
    h_lo = np.minimum(lower_h * taper, gap - h_up)
    top_edge, bottom_edge = ui.copy(), li.copy()
    top_edge[:, 1] += h_up
    bottom_edge[:, 1] -= h_lo
    return np.concatenate([ui, top_edge[::-1]]), np.concatenate([li, bottom_edge[::-1]])


def _pose_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rotation, [3, 3]: yaw about the vertical axis, then pitch about the horizontal one, then roll in-plane."""
    y, p, r = np.radians([yaw, pitch, roll])
    cy, sy, cp, sp, cr, sr = np.cos(y), np.sin(y), np.cos(p), np.sin(p), np.cos(r), np.sin(r)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return rz @ rx @ ry


def _project(model: FaceModel, xy: np.ndarray, z: np.ndarray, nuisance: NuisanceTrack, t: int) -> np.ndarray:
    """Canonical points [V, 2] with depth [V] -> canonical image points [V, 2] after pose and alignment jitter."""
    rot = _pose_matrix(nuisance.yaw[t], nuisance.pitch[t], nuisance.roll[t] + nuisance.rotation[t])
    proj = rot[:2] * nuisance.scale[t]  # [2, 3] orthographic projection of the rotated, rescaled head
    offset = model.pivot[:2] * nuisance.scale[t] - proj @ model.pivot + np.array([nuisance.dx[t], nuisance.dy[t]])
    return xy @ proj[:, :2].T + np.outer(z, proj[:, 2]) + offset


@functools.lru_cache(maxsize=8)
def _ramp_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Lighting-ramp coordinates [1, W] and [H, 1]: -1..1 along the longer side, isotropic."""
    m = max(height, width)
    gx = np.linspace(-width / m, width / m, width, dtype=np.float32)
    gy = np.linspace(-height / m, height / m, height, dtype=np.float32)
    return gx[None, :], gy[:, None]


@functools.lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
    """A fixed bank of N(0, 1) samples; each frame reads a random window (generating fresh normals per frame
    costs more than the whole drawing)."""
    return np.random.default_rng(20240611).standard_normal(1 << 20, dtype=np.float32)


def _sensor_noise(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise of this shape, unit sd: a window of the bank at a random offset and a random sign."""
    bank = _noise_bank()
    n = int(np.prod(shape))
    start = int(rng.integers(0, len(bank) - min(n, len(bank) // 2)))
    sign = np.float32(1.0 if rng.integers(0, 2) else -1.0)
    if n <= len(bank) - start:
        return (bank[start : start + n] * sign).reshape(shape)
    pieces, left = [bank[start:]], n - (len(bank) - start)  # a large scene frame: wrap around the bank
    while left > 0:
        pieces.append(bank[:left])
        left -= len(pieces[-1])
    return (np.concatenate(pieces) * sign).reshape(shape)


def _motion_kernel(sigma: float, angle: float) -> np.ndarray:
    """A motion-blur kernel: an anti-aliased line 4 sigma long at `angle` (radians), summing to one."""
    half = max(1.0, 2.0 * sigma)
    k = 2 * int(np.ceil(half)) + 1
    kernel = np.zeros((k, k), np.float32)
    c = k // 2
    d = half * np.array([np.cos(angle), np.sin(angle)])
    ends = [drawing.fixed_point(c - d), drawing.fixed_point(c + d)]
    cv2.line(kernel, tuple(int(v) for v in ends[0]), tuple(int(v) for v in ends[1]), 1.0, 1, cv2.LINE_AA, 4)
    return kernel / kernel.sum()


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """Re-encode an RGB uint8 image as JPEG at `quality` and decode it (block and ringing artefacts)."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def apply_camera(
    image: np.ndarray, nuisance: NuisanceTrack, t: int, rng: np.random.Generator, scale: float | None = None
) -> np.ndarray:
    """Image-space nuisances of frame t on a drawn RGB uint8 image [H, W, 3]: lighting ramp, exposure and colour
    cast, blur, sensor noise, then JPEG re-encoding. `scale` is the face's crop size in px (default: H), which
    blur is relative to. `rng` draws the sensor noise."""
    scale = float(image.shape[0] if scale is None else scale)
    amp, bright, noise = float(nuisance.light_strength[t]), float(nuisance.brightness[t]), nuisance.noise_sd
    colour = None if nuisance.colour is None else nuisance.colour[t].astype(np.float32)
    sigma = 0.0 if nuisance.blur_sigma is None else float(nuisance.blur_sigma[t]) * scale / 112.0
    img = image
    if amp != 0 or bright != 1 or noise > 0 or sigma >= 0.3 or (colour is not None and np.any(colour != 1)):
        gx, gy = _ramp_grid(*image.shape[:2])
        ang = float(nuisance.light_angle[t])
        gain = np.float32(bright) * (1 + np.float32(amp * np.cos(ang)) * gx + np.float32(amp * np.sin(ang)) * gy)
        gain = gain[:, :, None] if colour is None else gain[:, :, None] * colour  # [H, W, 1 or 3]
        img = image * gain  # float32 [H, W, 3]
        if sigma >= 0.3:  # below a third of a pixel blur does nothing visible
            angle = float(nuisance.blur_angle[t])
            if np.isnan(angle):
                img = cv2.GaussianBlur(img, (0, 0), sigma)
            else:
                img = cv2.filter2D(img, -1, _motion_kernel(sigma, angle), borderType=cv2.BORDER_REFLECT)
        if noise > 0:
            img += _sensor_noise(img.shape, rng) * np.float32(noise)
        img += 0.5
        np.clip(img, 0, 255, out=img)
        img = img.astype(np.uint8)
    quality = 0 if nuisance.jpeg_quality is None else int(nuisance.jpeg_quality[t])
    return _jpeg(img, quality) if quality > 0 else img


# --- occluders: shapes in canonical units, placed per frame -------------------------------------------------

_ARC = np.linspace(0.0, np.pi, 7)
_PALM_ANGLES = np.arange(16) * (2 * np.pi / 16)
# Fingers from the thumb side (index .. little): base x, length, fan angle; the hand points up (-y).
_FINGERS = ((-0.14, 0.29, -0.1), (-0.047, 0.33, -0.03), (0.047, 0.31, 0.03), (0.14, 0.24, 0.1))
_OCCLUDER_DEPTH = {"hand": 0.9, "hair": 0.6}  # in front of the facial plane (z = 0.55)


def _capsule(base: np.ndarray, angle: float, length: float, half_width: float) -> np.ndarray:
    """A finger: a bar from `base`, `angle` radians off straight up, with a round tip; polygon [9, 2]."""
    d = np.array([np.sin(angle), -np.cos(angle)])
    p = np.array([-d[1], d[0]])
    tip = base + length * d
    arc = tip + half_width * (np.outer(np.cos(_ARC), p) + np.outer(np.sin(_ARC), d))
    return np.concatenate([[base + half_width * p], arc, [base - half_width * p]])


def _hand_polygons(occ: Occlusion, t: int) -> list[np.ndarray]:
    """Forearm, palm, thumb and four fingers of the hand at frame t, canonical units, in drawing order."""
    k = occ.side
    c, sn = np.cos(_PALM_ANGLES), np.sin(_PALM_ANGLES)
    palm = np.stack([0.19 * np.sign(c) * np.abs(c) ** 0.7, 0.02 + 0.2 * np.sign(sn) * np.abs(sn) ** 0.7], 1)
    forearm = np.array([[-0.15, 0.1], [0.15, 0.1], [0.24, 6.0], [-0.24, 6.0]])  # long enough to leave a scene
    thumb = _capsule(np.array([-0.14 * k, 0.06]), -0.85 * k, 0.24, 0.052)
    fingers = [_capsule(np.array([x * k, -0.12]), fan * k, length, 0.044) for x, length, fan in _FINGERS]
    ca, sa = np.cos(occ.angle), np.sin(occ.angle)
    rot = np.array([[ca, -sa], [sa, ca]]) * occ.size
    shift = np.asarray(occ.anchor) + (1.0 - occ.amount[t]) * np.asarray(occ.entry) + occ.drift[t]
    return [poly @ rot.T + shift for poly in (forearm, palm, thumb, *fingers)]


_BEZIER = np.linspace(0.0, 1.0, 10)[:, None]


def _strand_curves(occ: Occlusion, t: int, hairline: float) -> tuple[list[np.ndarray], list[float], list[float]]:
    """Hair strands at frame t: curves [10, 2] in canonical units, widths (canonical) and brightness factors.
    The strands fall from the hairline into place as `amount` rises, their tips swaying with the drift."""
    n = 4 + int(occ.shape[7, 0] * 4)
    root_y = max(hairline, -0.9) + 0.03
    curves, widths, shades = [], [], []
    for r in occ.shape[:n]:
        root = np.array([occ.anchor[0] + 0.14 * (r[0] - 0.5), root_y])
        lean = occ.angle + 0.2 * (r[2] - 0.5)
        length = occ.size * (0.75 + 0.35 * r[1]) * occ.amount[t]
        end = root + length * np.array([np.sin(lean), np.cos(lean)])
        bend = occ.side * 0.12 * length * (0.3 + r[2]) * np.array([np.cos(lean), -np.sin(lean)])
        mid = (root + end) / 2 + bend
        s = _BEZIER
        curve = (1 - s) ** 2 * root + 2 * s * (1 - s) * mid + s**2 * end + s**2 * occ.drift[t]
        curves.append(curve)
        widths.append(0.01 + 0.014 * r[1])
        shades.append(occ.tint * (0.85 + 0.3 * r[0]))
    return curves, widths, shades


def _draw_occluder(
    canvas: np.ndarray,
    identity: Identity,
    model: FaceModel,
    nuisance: NuisanceTrack,
    t: int,
    size: float,
    centre: np.ndarray,
) -> None:
    """Draw frame t's occluder (if any) over the face, in place; it moves with the head like the face does."""
    occ = nuisance.occlusion
    if occ is None or occ.amount[t] <= 0:
        return
    z = _OCCLUDER_DEPTH[occ.kind]

    def to_px(xy: np.ndarray) -> np.ndarray:
        return _project(model, xy, np.full(len(xy), z), nuisance, t) * (size / 2.0) + centre

    if occ.kind == "hand":
        colour = tuple(min(255.0, v * occ.tint) for v in identity.skin_rgb)
        drawing.draw_hand(canvas, [to_px(p) for p in _hand_polygons(occ, t)], colour, size)
    else:
        curves, widths, shades = _strand_curves(occ, t, identity.hairline)
        colours = [tuple(min(255.0, v * k) for v in identity.hair_rgb) for k in shades]
        px_widths = [max(1, int(round(w * size / 2.0))) for w in widths]
        drawing.draw_strands(canvas, [to_px(c) for c in curves], colours, px_widths)


# --- a frame -----------------------------------------------------------------------------------------------


@dataclass
class _Frame:
    """Drawn points of one frame in pixels and what the drawing needs beside them."""

    px: np.ndarray  # [V, 2]
    slices: dict[str, slice]
    alphas: np.ndarray  # [len(TEXTURES)]
    palette: drawing.Palette
    model: FaceModel
    centre: np.ndarray  # [2] pixel position of the crop centre (canonical 0, 0)


_DEFAULT_TEXTURE = TextureStrengths()


def _frame(
    identity: Identity,
    au_numbers: tuple[int, ...],
    intensity: np.ndarray,
    nuisance: NuisanceTrack,
    t: int,
    size: float,
    texture: TextureStrengths | None = None,
    centre: tuple[float, float] | None = None,
) -> _Frame:
    """Blend shapes -> control points -> drawn points (with iris and teeth) -> pose -> pixels.

    `size` is the aligned crop's side in pixels; `centre` is where the crop's centre lands (default: the middle
    of a size x size image), so a scene can draw the face anywhere at any scale.
    """
    model, palette = _model(identity)
    geometry, active = _amounts(identity, au_numbers, intensity)
    ctrl = _shape(model, geometry)
    dense = model.dense @ ctrl  # [V, 2]
    ds = model.dense_slices
    irises = [
        _iris_polygon(
            dense[ds[f"iris{side}"]][0], model.iris_radius, dense[ds[f"lid_up{side}"]], dense[ds[f"lid_lo{side}"]]
        )
        for side in (0, 1)
    ]
    teeth = _teeth_polygons(dense[ds["lip_ui"]], dense[ds["lip_li"]], 0.045, 0.03)
    xy = np.concatenate([dense, *irises, *teeth])
    img_xy = _project(model, xy, model.frame_z, nuisance, t)
    middle = np.array([size / 2.0 - 0.5] * 2) if centre is None else np.asarray(centre, dtype=np.float64)
    px = img_xy * (size / 2.0) + middle
    texture = _DEFAULT_TEXTURE if texture is None else texture
    gains = _texture_gains(texture)
    alphas = np.clip(model.texture_base * texture.permanent + gains * (model.textures @ active), 0.0, _TEXTURE_MAX)
    return _Frame(px, model.frame_slices, alphas, palette, model, middle)


def render_frame(
    identity: Identity,
    au_numbers: tuple[int, ...],
    intensity: np.ndarray,
    nuisance: NuisanceTrack,
    t: int,
    size: int,
    rng: np.random.Generator,
    texture: TextureStrengths | None = None,
) -> np.ndarray:
    """One RGB frame, uint8 [size, size, 3]: the face with these AU intensities (0..5) under frame t's nuisances.

    `au_numbers` may be any subset of RENDERED_AUS; AUs not listed are at 0. `rng` draws the sensor noise.
    `texture` scales the texture cues (default: TextureStrengths()).
    """
    if size < 16:
        raise ValueError(f"image size {size} is too small to draw a face (>= 16 px)")
    frame = _frame(identity, tuple(au_numbers), intensity, nuisance, t, size, texture)
    canvas = drawing.draw_face(frame.palette, frame.px, frame.slices, frame.alphas, size)
    _draw_occluder(canvas, identity, frame.model, nuisance, t, size, frame.centre)
    return apply_camera(canvas, nuisance, t, rng, size)


def draw_face_into(
    canvas: np.ndarray,
    identity: Identity,
    au_numbers: tuple[int, ...],
    intensity: np.ndarray,
    nuisance: NuisanceTrack,
    t: int,
    size: float,
    centre: tuple[float, float],
    texture: TextureStrengths | None = None,
    body: tuple[np.ndarray, tuple] | None = None,
) -> FaceGeometry:
    """Draw the face (and frame t's occluder) onto `canvas` in place, its aligned crop `size` px wide and centred
    at `centre` (pixels); no camera effects. `body` (polygon in pixels, RGB) is drawn under the head. Scene mode."""
    frame = _frame(identity, tuple(au_numbers), intensity, nuisance, t, size, texture, centre)
    drawing.draw_face(frame.palette, frame.px, frame.slices, frame.alphas, size, canvas=canvas, body=body)
    _draw_occluder(canvas, identity, frame.model, nuisance, t, size, frame.centre)
    return _geometry(frame)


def render_face(
    identity: Identity,
    au_numbers: tuple[int, ...],
    intensity: np.ndarray,
    nuisance: NuisanceTrack,
    t: int,
    size: int,
    rng: np.random.Generator,
    texture: TextureStrengths | None = None,
) -> tuple[np.ndarray, FaceGeometry]:
    """render_frame, and where the eyes and the face are in that image."""
    image = render_frame(identity, au_numbers, intensity, nuisance, t, size, rng, texture)
    return image, face_geometry(identity, au_numbers, intensity, nuisance, t, size)


def face_geometry(
    identity: Identity,
    au_numbers: tuple[int, ...],
    intensity: np.ndarray,
    nuisance: NuisanceTrack,
    t: int,
    size: float,
    centre: tuple[float, float] | None = None,
) -> FaceGeometry:
    """Eye centres, face box and drawn points in pixels of a size x size frame (or of a scene, the crop centred
    at `centre`), without drawing."""
    return _geometry(_frame(identity, tuple(au_numbers), intensity, nuisance, t, size, None, centre))


def _geometry(frame: _Frame) -> FaceGeometry:
    """The frame's FaceGeometry (see there for what the eye centres and the face box are)."""
    px, sl = frame.px, frame.slices
    eyes = np.stack([np.concatenate([px[sl[f"lid_up{side}"]], px[sl[f"lid_lo{side}"]]]).mean(0) for side in (0, 1)])
    contour = px[sl["contour"]]
    brows = np.concatenate([px[sl["brow0"]], px[sl["brow1"]]])
    top = brows[:, 1].min() - 0.25 * (contour[:, 1].max() - brows[:, 1].min())
    box = (float(contour[:, 0].min()), float(top), float(contour[:, 0].max()), float(contour[:, 1].max()))
    mouth = px[sl["lip_ui"]]
    points5 = np.stack([eyes[0], eyes[1], px[sl["nose_tip"]][0], mouth[0], mouth[-1]])
    return FaceGeometry(eye_centres=eyes, face_box=box, points5=points5, landmarks=px, groups=dict(sl))


@functools.lru_cache(maxsize=1)
def _template_points() -> tuple[tuple[float, float], ...]:
    size = 1000.0
    g = face_geometry(Identity(), RENDERED_AUS, np.zeros(len(RENDERED_AUS)), still_nuisance(1), 0, size)
    return tuple((float(x), float(y)) for x, y in (g.points5 + 0.5) / size)


def alignment_template() -> dict[str, list[float]]:
    """Where the neutral canonical face's eyes, nose tip and mouth corners sit in a SynthAU aligned crop, as
    fractions of the crop side (x right, y down; pixel = fraction * S - 0.5 in an S px crop), image-left first.

    A raw-frame aligner that maps detected eyes (or all five points) onto these with a similarity transform gets
    crops that look like SynthAU's aligned crops.
    """
    return {name: list(xy) for name, xy in zip(TEMPLATE_POINTS, _template_points(), strict=True)}
