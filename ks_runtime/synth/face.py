"""SynthAU faces: identities, per-frame nuisances, and the parametric renderer.

A face is a set of control landmarks in canonical units (the aligned crop spans [-1, 1], y down). Each AU adds a
fixed displacement field (a blend shape) scaled by its intensity and the subject's gain, so AUs combine
additively; resting-face quirks are standing offsets on the same blend shapes. Head pose rotates the landmarks
in 2.5D (a depth per landmark), alignment jitter is a small similarity, and OpenCV draws anti-aliased polygons
through spline-densified landmarks (see _draw.py). Lighting and sensor noise are then applied to the image.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ks_runtime.synth import _draw
from ks_runtime.synth._model import ALL_AUS, IRIS_POINTS, FaceModel, build_model

_K = len(ALL_AUS)
_AU_INDEX = {au: k for k, au in enumerate(ALL_AUS)}

# Ten skin tones from light to dark (RGB), in the spirit of the Monk Skin Tone scale.
SKIN_TONES: tuple[tuple[int, int, int], ...] = (
    (240, 212, 190), (230, 196, 168), (222, 182, 148), (206, 162, 126), (188, 140, 102),
    (162, 116, 82), (136, 94, 66), (110, 74, 52), (86, 58, 42), (64, 44, 34),
)
_HAIR_COLOURS = ((25, 20, 18), (52, 36, 26), (92, 62, 40), (138, 102, 66), (196, 160, 106), (146, 68, 38),
                 (140, 138, 134), (196, 194, 190))
_IRIS_COLOURS = ((62, 40, 26), (98, 62, 36), (118, 96, 58), (86, 106, 70), (76, 108, 148), (106, 118, 128))


@dataclass(frozen=True)
class NuisanceStrengths:
    """How strong each per-frame nuisance is; 0 turns it off. Calibrated once, then frozen with the version."""

    head_pose_deg: float = 15.0  # yaw range is about +-this; pitch and roll are smaller
    jitter_px: float = 1.0  # alignment jitter sd, in pixels of a 112 px crop (plus matching scale/rotation)
    lighting: float = 0.25  # amplitude of the multiplicative lighting ramp across the crop
    noise: float = 3.0  # sensor noise sd in grey levels
    # Later nuisances (texture cues, blur, JPEG, occlusion) are added here as fields defaulting to "off".


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

    def __len__(self) -> int:
        return len(self.yaw)


@dataclass(frozen=True)
class Identity:
    """One synthetic subject: face shape in canonical units, colours, expressiveness and resting-face quirks.

    `rest` holds standing offsets on the AU blend shapes (ordered as ALL_AUS): a subject with high brows has a
    positive rest on AU1/AU2, so one neutral frame can look like an AU and only change over time tells them apart.
    """

    face_width: float = 0.62  # half-width at the cheekbones
    chin_y: float = 0.86
    jaw_taper: float = 0.42  # how much the jaw narrows toward the chin
    eye_y: float = -0.16
    eye_spacing: float = 0.27  # half the distance between eye centres
    eye_size: float = 0.125  # half-width of an eye
    eye_open: float = 0.5  # aperture / width
    eye_tilt: float = 0.01  # outer corner above inner corner
    brow_height: float = 0.17  # brow above the eye centre
    brow_thickness: float = 0.042
    brow_arch: float = 0.03
    nose_length: float = 0.3  # eye line to nose tip
    nose_width: float = 0.1
    mouth_y: float = 0.44
    mouth_width: float = 0.22  # half-width
    upper_lip: float = 0.046
    lower_lip: float = 0.062
    hairline: float = -0.62
    hair_volume: float = 0.5
    hair_part: float = 0.0  # -1..1, asymmetry of the hairline
    skin_tone: int = 2  # 0 (light) .. 9 (dark)
    skin_rgb: tuple[float, float, float] = SKIN_TONES[2]
    lip_rgb: tuple[float, float, float] = (190, 110, 105)
    hair_rgb: tuple[float, float, float] = _HAIR_COLOURS[1]
    brow_rgb: tuple[float, float, float] = _HAIR_COLOURS[1]
    iris_rgb: tuple[float, float, float] = _IRIS_COLOURS[1]
    background_rgb: tuple[float, float, float] = (120, 130, 140)
    wrinkles: float = 0.15  # permanent line strength (forehead, nasolabial, crow's feet)
    gain: float = 1.0  # expressiveness: scales every AU's deformation
    au_gain: tuple[float, ...] = (1.0,) * _K  # per-AU expressiveness, ordered as ALL_AUS
    rest: tuple[float, ...] = (0.0,) * _K  # resting-face quirks, in blend-shape amounts, ordered as ALL_AUS

    @property
    def quirks(self) -> dict[int, float]:
        """AU number -> resting offset, for the AUs this face mimics at rest."""
        return {au: r for au, r in zip(ALL_AUS, self.rest, strict=True) if r > 0}


@dataclass(frozen=True)
class FaceGeometry:
    """Where the rendered face is, in pixel coordinates of the output image (x right, y down)."""

    eye_centres: np.ndarray  # [2, 2], image-left eye first
    face_box: tuple[float, float, float, float]  # x0, y0, x1, y1: contour sides and chin, top above the brows
    points5: np.ndarray  # [5, 2] the usual alignment landmarks: eyes, nose tip, mouth corners (image-left first)
    landmarks: np.ndarray  # [V, 2] every drawn point
    groups: dict[str, slice]  # named groups of `landmarks` (contour, brow0, lid_up0, lip_uo, ...)


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _tint(rgb, rng: np.random.Generator, sd: float) -> tuple[float, float, float]:
    """A colour varied mostly in brightness (sd) and a little in hue (sd / 4 per channel)."""
    k = 1 + rng.normal(0, sd) + rng.normal(0, sd / 4, 3)
    return tuple(float(v) for v in np.clip(np.asarray(rgb, dtype=np.float64) * k, 0, 255))


def draw_identity(rng: np.random.Generator, quirk_scale: float = 1.0) -> Identity:
    """A random subject. The number of draws never depends on `quirk_scale`, so scaling keeps the same faces."""
    tone = int(rng.integers(0, len(SKIN_TONES)))
    skin = _tint(SKIN_TONES[tone], rng, 0.03)
    red = np.array([0.86, 0.64, 0.7]) if tone < 6 else np.array([0.78, 0.58, 0.6])
    lip = tuple(float(c) for c in np.clip(np.array(skin) * red + np.array([14, 2, 10]), 0, 255))
    hair_i = int(rng.integers(0, len(_HAIR_COLOURS)))
    if tone >= 6 and 2 <= hair_i <= 5:  # darker skin: mostly black or dark-brown hair
        hair_i %= 2
    hair = _tint(_HAIR_COLOURS[hair_i], rng, 0.08)
    brow = tuple(float(c) for c in np.array(hair) * (0.75 if hair_i >= 4 else 1.0))
    iris = _tint(_IRIS_COLOURS[int(rng.integers(0, len(_IRIS_COLOURS)))], rng, 0.08)
    hue = rng.uniform(0, 2 * np.pi)
    base = rng.uniform(80, 190)
    background = tuple(float(np.clip(base * (1 + 0.18 * np.cos(hue + p)), 0, 255)) for p in (0, 2.1, 4.2))
    gain = float(np.clip(rng.lognormal(0.0, 0.25), 0.55, 1.7))
    au_gain = tuple(float(g) for g in np.clip(rng.lognormal(0.0, 0.15, _K), 0.6, 1.5))
    hair_volume = _u(rng, 0.0, 1.0)
    bald = rng.uniform() < 0.06
    identity = dict(
        face_width=_u(rng, 0.56, 0.68), chin_y=_u(rng, 0.8, 0.92), jaw_taper=_u(rng, 0.3, 0.55),
        eye_y=_u(rng, -0.2, -0.12), eye_spacing=_u(rng, 0.245, 0.295), eye_size=_u(rng, 0.11, 0.135),
        eye_open=_u(rng, 0.42, 0.58), eye_tilt=_u(rng, -0.01, 0.03), brow_height=_u(rng, 0.145, 0.2),
        brow_thickness=_u(rng, 0.028, 0.055), brow_arch=_u(rng, 0.0, 0.05), nose_length=_u(rng, 0.25, 0.34),
        nose_width=_u(rng, 0.085, 0.125), mouth_y=_u(rng, 0.4, 0.48), mouth_width=_u(rng, 0.19, 0.25),
        upper_lip=_u(rng, 0.035, 0.058), lower_lip=_u(rng, 0.048, 0.075),
        hairline=-1.2 if bald else _u(rng, -0.78, -0.55), hair_volume=0.0 if bald else hair_volume,
        hair_part=_u(rng, -1.0, 1.0),
    )
    # Resting-face quirks: each appears in some subjects, at the size of an AU at intensity ~1.5-3.
    rest = np.zeros(_K)
    draws = rng.uniform(size=8)
    sizes = rng.uniform(0.25, 0.7, size=8)
    if draws[0] < 0.25:  # high brows ~ AU1+AU2
        rest[_AU_INDEX[1]] += sizes[0]
        rest[_AU_INDEX[2]] += sizes[0] * 0.9
    elif draws[1] < 0.15:  # lowered, knit brows ~ AU4
        rest[_AU_INDEX[4]] += sizes[1] * 0.8
    if draws[2] < 0.25:  # down-turned mouth ~ AU15
        rest[_AU_INDEX[15]] += sizes[2]
    elif draws[3] < 0.1:  # smiley mouth ~ AU12
        rest[_AU_INDEX[12]] += sizes[3] * 0.6
    if draws[4] < 0.25:  # narrow eyes ~ AU7
        rest[_AU_INDEX[7]] += sizes[4]
    if draws[5] < 0.15:  # full, raised cheeks ~ AU6
        rest[_AU_INDEX[6]] += sizes[5] * 0.8
    if draws[6] < 0.15:  # thin, pressed lips ~ AU24/AU23
        rest[_AU_INDEX[24]] += sizes[6] * 0.8
    if draws[7] < 0.1:  # raised chin ~ AU17
        rest[_AU_INDEX[17]] += sizes[7] * 0.7
    return Identity(
        **identity, skin_tone=tone, skin_rgb=skin, lip_rgb=lip, hair_rgb=hair, brow_rgb=brow, iris_rgb=iris,
        background_rgb=background, wrinkles=_u(rng, 0.0, 0.35), gain=gain, au_gain=au_gain,
        rest=tuple(float(r) for r in rest * quirk_scale),
    )


def _smooth_noise(n: int, rng: np.random.Generator, timescale_frames: float) -> np.ndarray:
    """Unit-variance Gaussian process, smooth on `timescale_frames` (white noise through a Gaussian kernel)."""
    sigma = max(timescale_frames, 1e-3)
    half = int(np.ceil(3 * sigma))
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    kernel /= np.sqrt(np.sum(kernel**2))  # unit output variance, whatever the sequence length
    return np.convolve(rng.standard_normal(n + 2 * half), kernel, mode="valid")


def sample_nuisance(n_frames: int, rng: np.random.Generator, strengths: NuisanceStrengths,
                    fps: float = 25.0) -> NuisanceTrack:
    """Per-frame nuisances: head pose and lighting drift over seconds, alignment jitter changes every frame.

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
    return NuisanceTrack(
        yaw=pose[0], pitch=pose[1], roll=pose[2],
        dx=jitter * shake[0], dy=jitter * shake[1],
        scale=np.exp(0.01 * s.jitter_px * shake[2]), rotation=0.5 * s.jitter_px * shake[3],
        light_angle=angle, light_strength=strength, brightness=brightness, noise_sd=float(s.noise),
    )


def still_nuisance(n_frames: int = 1) -> NuisanceTrack:
    """Every nuisance off: frontal pose, no jitter, flat lighting, no noise (for previews and tests)."""
    z = [np.zeros(n_frames) for _ in range(8)]
    return NuisanceTrack(yaw=z[0], pitch=z[1], roll=z[2], dx=z[3], dy=z[4], scale=np.ones(n_frames), rotation=z[5],
                         light_angle=z[6], light_strength=z[7], brightness=np.ones(n_frames), noise_sd=0.0)


@functools.lru_cache(maxsize=128)
def _model(identity: Identity) -> tuple[FaceModel, _draw.Palette]:
    return build_model(identity), _draw.palette(identity)


@functools.lru_cache(maxsize=64)
def _au_columns(au_numbers: tuple[int, ...]) -> np.ndarray:
    unknown = [au for au in au_numbers if au not in _AU_INDEX]
    if unknown:
        raise ValueError(f"the SynthAU renderer has no blend shape for AUs {unknown}; it knows {ALL_AUS}")
    return np.array([_AU_INDEX[au] for au in au_numbers], dtype=np.int64)


def au_response(intensity: np.ndarray) -> np.ndarray:
    """Intensity 0..5 -> blend-shape amount 0..1: zero at 0, about half at 2 (where occurrence starts)."""
    return (np.clip(np.asarray(intensity, dtype=np.float64), 0.0, 5.0) / 5.0) ** 0.75


def _amounts(identity: Identity, au_numbers: tuple[int, ...], intensity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Blend-shape amounts [K] for geometry (quirks included) and for textures (AUs only)."""
    intensity = np.asarray(intensity, dtype=np.float64).reshape(-1)
    if len(intensity) != len(au_numbers):
        raise ValueError(f"intensity has {len(intensity)} values for {len(au_numbers)} AUs {au_numbers}")
    active = np.zeros(_K)
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


_CIRCLE = np.stack([np.cos(np.arange(IRIS_POINTS) * (2 * np.pi / IRIS_POINTS)),
                    np.sin(np.arange(IRIS_POINTS) * (2 * np.pi / IRIS_POINTS))], 1)


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
def _ramp_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    g = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    return g[None, :], g[:, None]


@functools.lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
    """A fixed bank of N(0, 1) samples; each frame reads a random window (generating fresh normals per frame
    costs more than the whole drawing)."""
    return np.random.default_rng(20240611).standard_normal(1 << 20, dtype=np.float32)


def _sensor_noise(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise of this shape, unit sd: a window of the bank at a random offset and a random sign."""
    bank = _noise_bank()
    n = int(np.prod(shape))
    start = int(rng.integers(0, len(bank) - n))
    sign = np.float32(1.0 if rng.integers(0, 2) else -1.0)
    return (bank[start:start + n] * sign).reshape(shape)


def _camera(canvas: np.ndarray, nuisance: NuisanceTrack, t: int, rng: np.random.Generator) -> np.ndarray:
    """Image-space nuisances on the drawn face: a multiplicative lighting ramp, exposure, sensor noise."""
    amp, bright, noise = float(nuisance.light_strength[t]), float(nuisance.brightness[t]), nuisance.noise_sd
    if amp == 0 and bright == 1 and noise <= 0:
        return canvas
    gx, gy = _ramp_grid(canvas.shape[0])
    ang = float(nuisance.light_angle[t])
    gain = np.float32(bright) * (1 + np.float32(amp * np.cos(ang)) * gx + np.float32(amp * np.sin(ang)) * gy)
    img = canvas * gain[:, :, None]  # float32 [S, S, 3]
    if noise > 0:
        img += _sensor_noise(img.shape, rng) * np.float32(noise)
    img += 0.5
    np.clip(img, 0, 255, out=img)
    return img.astype(np.uint8)


@dataclass
class _Frame:
    """Drawn points of one frame in pixels and what the drawing needs beside them."""

    px: np.ndarray  # [V, 2]
    slices: dict[str, slice]
    alphas: np.ndarray  # [len(TEXTURES)]
    palette: _draw.Palette


def _frame(identity: Identity, au_numbers: tuple[int, ...], intensity: np.ndarray, nuisance: NuisanceTrack,
           t: int, size: int) -> _Frame:
    """Blend shapes -> control points -> drawn points (with iris and teeth) -> pose -> pixels."""
    model, palette = _model(identity)
    geometry, active = _amounts(identity, au_numbers, intensity)
    ctrl = _shape(model, geometry)
    dense = model.dense @ ctrl  # [V, 2]
    ds = model.dense_slices
    irises = [_iris_polygon(dense[ds[f"iris{side}"]][0], model.iris_radius, dense[ds[f"lid_up{side}"]],
                            dense[ds[f"lid_lo{side}"]]) for side in (0, 1)]
    teeth = _teeth_polygons(dense[ds["lip_ui"]], dense[ds["lip_li"]], 0.045, 0.03)
    xy = np.concatenate([dense, *irises, *teeth])
    img_xy = _project(model, xy, model.frame_z, nuisance, t)
    px = (img_xy + 1.0) * (size / 2.0) - 0.5
    alphas = np.clip(model.texture_base + model.textures @ active, 0.0, 1.0)
    return _Frame(px, model.frame_slices, alphas, palette)


def render_frame(identity: Identity, au_numbers: tuple[int, ...], intensity: np.ndarray, nuisance: NuisanceTrack,
                 t: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One RGB frame, uint8 [size, size, 3]: the face with these AU intensities (0..5) under frame t's nuisances.

    `au_numbers` may be any subset of ALL_AUS; AUs not listed are at 0. `rng` draws the sensor noise.
    """
    if size < 16:
        raise ValueError(f"image size {size} is too small to draw a face (>= 16 px)")
    frame = _frame(identity, tuple(au_numbers), intensity, nuisance, t, size)
    canvas = _draw.draw_face(frame.palette, frame.px, frame.slices, frame.alphas, size)
    return _camera(canvas, nuisance, t, rng)


def render_face(identity: Identity, au_numbers: tuple[int, ...], intensity: np.ndarray, nuisance: NuisanceTrack,
                t: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, FaceGeometry]:
    """render_frame, and where the eyes and the face are in that image (scene mode places faces with it)."""
    image = render_frame(identity, au_numbers, intensity, nuisance, t, size, rng)
    return image, face_geometry(identity, au_numbers, intensity, nuisance, t, size)


def face_geometry(identity: Identity, au_numbers: tuple[int, ...], intensity: np.ndarray, nuisance: NuisanceTrack,
                  t: int, size: int) -> FaceGeometry:
    """Eye centres, face box and drawn points in pixels of a size x size frame, without drawing."""
    frame = _frame(identity, tuple(au_numbers), intensity, nuisance, t, size)
    px, sl = frame.px, frame.slices
    eyes = np.stack([np.concatenate([px[sl[f"lid_up{side}"]], px[sl[f"lid_lo{side}"]]]).mean(0) for side in (0, 1)])
    contour = px[sl["contour"]]
    brows = np.concatenate([px[sl["brow0"]], px[sl["brow1"]]])
    # Like a detector's box: contour sides and chin, top a little above the brows.
    top = brows[:, 1].min() - 0.25 * (contour[:, 1].max() - brows[:, 1].min())
    box = (float(contour[:, 0].min()), float(top), float(contour[:, 0].max()), float(contour[:, 1].max()))
    mouth = px[sl["lip_ui"]]
    points5 = np.stack([eyes[0], eyes[1], px[sl["nose_tip"]][0], mouth[0], mouth[-1]])
    return FaceGeometry(eye_centres=eyes, face_box=box, points5=points5, landmarks=px, groups=dict(sl))
