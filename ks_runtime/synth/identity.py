"""SynthAU identities: one synthetic subject's face shape, colours, expressiveness and resting-face quirks, and
how a random one is drawn.

Shapes are in the canonical units of the aligned crop ([-1, 1] in x and y, y down); colours are RGB 0..255.
Per-AU values (gains, quirks) are ordered as labels.RENDERED_AUS.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ks_runtime.synth.labels import RENDERED_AUS

_N_AUS = len(RENDERED_AUS)

# Ten skin tones from light to dark (RGB), in the spirit of the Monk Skin Tone scale.
SKIN_TONES: tuple[tuple[int, int, int], ...] = (
    (240, 212, 190),
    (230, 196, 168),
    (222, 182, 148),
    (206, 162, 126),
    (188, 140, 102),
    (162, 116, 82),
    (136, 94, 66),
    (110, 74, 52),
    (86, 58, 42),
    (64, 44, 34),
)
_HAIR_COLOURS = (
    (25, 20, 18),
    (52, 36, 26),
    (92, 62, 40),
    (138, 102, 66),
    (196, 160, 106),
    (146, 68, 38),
    (140, 138, 134),
    (196, 194, 190),
)
_IRIS_COLOURS = ((62, 40, 26), (98, 62, 36), (118, 96, 58), (86, 106, 70), (76, 108, 148), (106, 118, 128))


@dataclass(frozen=True)
class Identity:
    """One synthetic subject: face shape in canonical units, colours, expressiveness and resting-face quirks.

    `rest` holds standing offsets on the AU blend shapes (ordered as RENDERED_AUS): a subject with high brows has
    a positive rest on AU1/AU2, so one neutral frame can look like an AU and only change over time tells them
    apart.
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
    au_gain: tuple[float, ...] = (1.0,) * _N_AUS  # per-AU expressiveness, ordered as RENDERED_AUS
    rest: tuple[float, ...] = (0.0,) * _N_AUS  # resting-face quirks, in blend-shape amounts, ordered as RENDERED_AUS

    @property
    def quirks(self) -> dict[int, float]:
        """AU number -> resting offset, for the AUs this face mimics at rest."""
        return {au: r for au, r in zip(RENDERED_AUS, self.rest, strict=True) if r > 0}


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _tint(rgb, rng: np.random.Generator, sd: float) -> tuple[float, float, float]:
    """A colour varied mostly in brightness (sd) and a little in hue (sd / 4 per channel)."""
    k = 1 + rng.normal(0, sd) + rng.normal(0, sd / 4, 3)
    return tuple(float(v) for v in np.clip(np.asarray(rgb, dtype=np.float64) * k, 0, 255))


def _resting_quirks(rng: np.random.Generator) -> np.ndarray:
    """Resting-face quirks [R] (blend-shape amounts): each appears in some subjects, at the size of an AU at
    intensity ~1.5-3. Always 16 draws."""
    rest = np.zeros(_N_AUS)
    column = RENDERED_AUS.index
    draws = rng.uniform(size=8)
    sizes = rng.uniform(0.25, 0.7, size=8)
    if draws[0] < 0.25:  # high brows ~ AU1+AU2
        rest[column(1)] += sizes[0]
        rest[column(2)] += sizes[0] * 0.9
    elif draws[1] < 0.15:  # lowered, knit brows ~ AU4
        rest[column(4)] += sizes[1] * 0.8
    if draws[2] < 0.25:  # down-turned mouth ~ AU15
        rest[column(15)] += sizes[2]
    elif draws[3] < 0.1:  # smiley mouth ~ AU12
        rest[column(12)] += sizes[3] * 0.6
    if draws[4] < 0.25:  # narrow eyes ~ AU7
        rest[column(7)] += sizes[4]
    if draws[5] < 0.15:  # full, raised cheeks ~ AU6
        rest[column(6)] += sizes[5] * 0.8
    if draws[6] < 0.15:  # thin, pressed lips ~ AU24/AU23
        rest[column(24)] += sizes[6] * 0.8
    if draws[7] < 0.1:  # raised chin ~ AU17
        rest[column(17)] += sizes[7] * 0.7
    return rest


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
    au_gain = tuple(float(g) for g in np.clip(rng.lognormal(0.0, 0.15, _N_AUS), 0.6, 1.5))
    hair_volume = _u(rng, 0.0, 1.0)
    bald = rng.uniform() < 0.06
    shape = dict(
        face_width=_u(rng, 0.56, 0.68),
        chin_y=_u(rng, 0.8, 0.92),
        jaw_taper=_u(rng, 0.3, 0.55),
        eye_y=_u(rng, -0.2, -0.12),
        eye_spacing=_u(rng, 0.245, 0.295),
        eye_size=_u(rng, 0.11, 0.135),
        eye_open=_u(rng, 0.42, 0.58),
        eye_tilt=_u(rng, -0.01, 0.03),
        brow_height=_u(rng, 0.145, 0.2),
        brow_thickness=_u(rng, 0.028, 0.055),
        brow_arch=_u(rng, 0.0, 0.05),
        nose_length=_u(rng, 0.25, 0.34),
        nose_width=_u(rng, 0.085, 0.125),
        mouth_y=_u(rng, 0.4, 0.48),
        mouth_width=_u(rng, 0.19, 0.25),
        upper_lip=_u(rng, 0.035, 0.058),
        lower_lip=_u(rng, 0.048, 0.075),
        hairline=-1.2 if bald else _u(rng, -0.78, -0.55),
        hair_volume=0.0 if bald else hair_volume,
        hair_part=_u(rng, -1.0, 1.0),
    )
    rest = _resting_quirks(rng)
    return Identity(
        **shape,
        skin_tone=tone,
        skin_rgb=skin,
        lip_rgb=lip,
        hair_rgb=hair,
        brow_rgb=brow,
        iris_rgb=iris,
        background_rgb=background,
        wrinkles=_u(rng, 0.0, 0.35),
        gain=gain,
        au_gain=au_gain,
        rest=tuple(float(r) for r in rest * quirk_scale),
    )
