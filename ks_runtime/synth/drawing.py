"""Drawing a SynthAU face with OpenCV: anti-aliased polygons and curves through pixel-space landmarks.

face.py computes where every drawn point is; this module only decides colours, order and line widths.
Coordinates are passed to OpenCV in fixed point (`shift=4`, 1/16 px) so small faces stay smooth.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from ks_runtime.synth.face_model import TEXTURES
from ks_runtime.synth.identity import Identity

_SHIFT = 4
_ONE = 1 << _SHIFT
_AA = cv2.LINE_AA
_HEXAGON = np.stack([np.cos(np.arange(6) * np.pi / 3), np.sin(np.arange(6) * np.pi / 3)], 1)


@dataclass(frozen=True)
class Palette:
    """Colours of one identity (RGB floats) and whether it has hair to draw."""

    skin: tuple
    shade: tuple  # neck, nose sides
    ear: tuple
    lip: tuple
    lip_line: tuple
    mouth: tuple
    teeth: tuple
    sclera: tuple
    iris: tuple
    pupil: tuple
    lash: tuple
    brow: tuple
    hair: tuple
    background: tuple
    has_hair_back: bool
    has_fringe: bool


def _mul(rgb, k) -> tuple:
    """A colour scaled by k (a number, or one factor per channel), capped at white."""
    ks = (k, k, k) if isinstance(k, (int, float)) else k
    return (min(255.0, rgb[0] * ks[0]), min(255.0, rgb[1] * ks[1]), min(255.0, rgb[2] * ks[2]))


def palette(identity: Identity) -> Palette:
    """The colours an identity is drawn with."""
    skin = identity.skin_rgb
    dark = identity.skin_tone >= 6
    return Palette(
        skin=skin,
        shade=_mul(skin, 0.8),
        ear=_mul(skin, 0.9),
        lip=identity.lip_rgb,
        lip_line=_mul(identity.lip_rgb, 0.55),
        mouth=(58.0, 22.0, 26.0),
        teeth=(228.0, 222.0, 206.0),
        sclera=(226.0, 222.0, 214.0) if not dark else (212.0, 206.0, 196.0),
        iris=identity.iris_rgb,
        pupil=(14.0, 12.0, 12.0),
        lash=(40.0, 28.0, 24.0),
        brow=identity.brow_rgb,
        hair=identity.hair_rgb,
        background=identity.background_rgb,
        has_hair_back=identity.hair_volume > 0.05,
        has_fringe=identity.hairline > -1.0,
    )


@functools.lru_cache(maxsize=64)
def _background(rgb: tuple, size: int) -> np.ndarray:
    """A plain backdrop with a soft vertical gradient, [size, size, 3] uint8 (copied before drawing)."""
    ramp = np.linspace(1.08, 0.88, size)[:, None, None]
    column = np.clip(np.asarray(rgb)[None, None, :] * ramp, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.broadcast_to(column, (size, size, 3)))


def _texture(skin: tuple, alpha: float, k: float = 0.5) -> tuple:
    """A crease or wrinkle: skin darkened in proportion to its alpha."""
    return _mul(skin, 1.0 - k * alpha)


def fixed_point(px: np.ndarray) -> np.ndarray:
    """Pixel coordinates -> OpenCV fixed point (int32, 1/16 px) for the `shift` argument."""
    return np.round(px * _ONE).astype(np.int32)


def line_width(scale: float) -> int:
    """Width of a drawn line for a face whose aligned crop is `scale` px wide."""
    return 1 if scale < 160 else 2 if scale < 320 else 3


@functools.lru_cache(maxsize=8)
def _resample_weights(n: int, m: int) -> np.ndarray:
    """[m, n] linear interpolation weights resampling n points to m evenly in index (ends kept)."""
    u = np.linspace(0, n - 1, m)
    return np.stack([np.interp(u, np.arange(n), np.eye(n)[i]) for i in range(n)], 1)


class _Painter:
    """Draws onto one image: named groups of the frame's points (fixed point), filled or stroked anti-aliased."""

    def __init__(self, img: np.ndarray, px: np.ndarray, slices: dict[str, slice], size: int) -> None:
        self.img = img
        self.q = fixed_point(px)  # [V, 2] int32
        self.slices = slices
        self.lw = line_width(size)

    def pts(self, name: str) -> np.ndarray:
        return self.q[self.slices[name]]

    def fill(self, poly: np.ndarray, colour) -> None:
        cv2.fillPoly(self.img, [poly], colour, _AA, _SHIFT)

    def line(self, polys: list[np.ndarray], colour, width: int | None = None, closed: bool = False) -> None:
        cv2.polylines(self.img, polys, closed, colour, self.lw if width is None else width, _AA, _SHIFT)


def _draw_head(p: _Painter, c: Palette, body: tuple[np.ndarray, tuple] | None) -> None:
    """Hair behind the head, neck, the body (scene mode), ears, then the face's skin."""
    if c.has_hair_back:
        p.fill(p.pts("hair_back"), c.hair)
    p.fill(p.pts("neck"), c.shade)
    if body is not None:
        p.fill(fixed_point(body[0]), body[1])
    for side in (0, 1):
        p.fill(p.pts(f"ear{side}"), c.ear)
    p.fill(p.pts("contour"), c.skin)


def _draw_highlights(p: _Painter, c: Palette, alpha: dict[str, float]) -> None:
    """Raised skin that catches the light: AU6's cheeks and lid bags, AU17's chin boss."""
    if alpha["cheek"] > 0.02:
        a = alpha["cheek"]
        tint = (a, 0.8 * a, 0.78 * a)
        for side in (0, 1):  # a soft-edged bulge: a faint wide patch under a brighter core
            cheek = p.pts(f"cheek{side}")
            p.fill(cheek, _mul(c.skin, [1.0 + 0.04 * x for x in tint]))
            centre = cheek.mean(0)
            core = np.round(centre + (cheek - centre) * 0.6).astype(np.int32)
            p.fill(core, _mul(c.skin, [1.0 + 0.08 * x for x in tint]))
    if alpha["lid_bulge"] > 0.03:
        # AU6's bag under the eye: the skin between the lower lid and the infraorbital furrow puffs up and
        # catches the light, with a shadow in the furrow below it (drawn with the textures).
        a = alpha["lid_bulge"]
        for side in (0, 1):
            lid, furrow = p.pts(f"lid_lo{side}"), p.pts(f"furrow{side}")
            n = len(lid)
            upper = lid[n // 6 : n - n // 6]
            p.fill(np.concatenate([upper, furrow[::-1]]), _mul(c.skin, 1.0 + 0.06 * a))
            lower = _resample_weights(len(furrow), len(upper)) @ furrow  # the bag is fullest just under the lid
            p.fill(
                np.concatenate([upper, np.round(0.5 * upper + 0.5 * lower)[::-1].astype(np.int32)]),
                _mul(c.skin, 1.0 + 0.11 * a),
            )
    if alpha["chin_boss"] > 0.03:
        a = alpha["chin_boss"]
        boss = p.pts("chin_boss")
        p.fill(boss, _mul(c.skin, 1.0 + 0.05 * a))
        centre = boss.mean(0)
        p.fill(np.round(centre + (boss - centre) * 0.55).astype(np.int32), _mul(c.skin, 1.0 + 0.1 * a))


def _draw_textures(p: _Painter, c: Palette, alpha: dict[str, float], size: int) -> None:
    """Wrinkles, folds and pits: skin-darkened lines whose darkness follows their alpha."""

    def texture(name: str, groups: list[np.ndarray], k: float = 0.5) -> None:
        a = alpha[name]
        if a > 0.03:
            p.line(groups, _texture(c.skin, a, k))

    pts = p.pts
    texture("forehead_c", [pts("forehead_c0"), pts("forehead_c1")], 0.35)
    texture("forehead_l", [pts(f"forehead_l{s}") for s in (0, 1)] + [pts(f"forehead_l2{s}") for s in (0, 1)], 0.35)
    gl = pts("glabella")
    texture("glabella", [gl[0:2], gl[2:4]], 0.55)
    nw = pts("nose_wrinkle")
    texture("nose_wrinkle", [nw[0:2], nw[2:4], nw[4:6]], 0.35)
    crow = [pts(f"crow{s}")[i : i + 2] for s in (0, 1) for i in (0, 2, 4)]
    texture("crow", crow, 0.5)
    texture("furrow", [pts(f"furrow{s}") for s in (0, 1)], 0.4)
    if alpha["lid_bulge"] > 0.03:
        p.line([pts(f"furrow{s}") for s in (0, 1)], _texture(c.skin, alpha["lid_bulge"], 0.3))
    texture("nasolabial", [pts(f"nasolabial{s}") for s in (0, 1)], 0.45)
    texture("dimple", [pts(f"dimple{s}") for s in (0, 1)], 0.55)
    texture("corner", [pts(f"corner_mark{s}") for s in (0, 1)], 0.5)
    texture("sulcus", [pts("sulcus")], 0.4)
    if alpha["chin_tex"] > 0.03:
        radius = 0.0055 * size * _ONE  # 0.011 canonical units; a small hexagon fills better than a tiny circle
        pits = np.round(pts("chin_tex")[:, None, :] + radius * _HEXAGON).astype(np.int32)  # [P, 6, 2]
        cv2.fillPoly(p.img, list(pits), _texture(c.skin, alpha["chin_tex"], 0.3), _AA, _SHIFT)
    texture("lip_bulge", [pts("bulge_up"), pts("bulge_lo")], 0.35)


def _draw_nose(p: _Painter, c: Palette) -> None:
    """Faint bridge sides, the wings, nostrils."""
    p.line([p.pts(f"nose_side{s}") for s in (0, 1)], _mul(c.skin, 0.9))
    p.line([p.pts(f"alar{s}") for s in (0, 1)], _mul(c.skin, 0.72))
    for side in (0, 1):
        p.fill(p.pts(f"nostril{side}"), _mul(c.skin, 0.45))


def _draw_eyes(p: _Painter, c: Palette) -> None:
    """White, iris and pupil clipped to the opening, lid lines, crease; then the brow."""
    for side in (0, 1):
        up, lo = p.pts(f"lid_up{side}"), p.pts(f"lid_lo{side}")
        p.fill(np.concatenate([up, lo[::-1]]), c.sclera)
        iris = p.pts(f"iris_poly{side}")
        p.fill(iris, c.iris)
        centre = p.pts(f"iris{side}")[0]
        p.fill(np.round(centre + (iris - centre) * 0.45).astype(np.int32), c.pupil)
        p.line([up], c.lash, p.lw)
        p.line([lo], _mul(c.skin, 0.62))
        p.line([p.pts(f"crease{side}")], _mul(c.skin, 0.78))
        p.fill(p.pts(f"brow{side}"), c.brow)


def _draw_mouth(p: _Painter, c: Palette) -> None:
    """The opening (dark, with teeth), then the lips over it, then the line where they meet; the philtrum."""
    ui, li = p.pts("lip_ui"), p.pts("lip_li")
    if int(np.max(li[:, 1] - ui[:, 1])) > _ONE // 4:
        p.fill(np.concatenate([ui, li[::-1]]), c.mouth)
        p.fill(p.pts("teeth_up"), c.teeth)
        p.fill(p.pts("teeth_lo"), _mul(c.teeth, 0.92))
    p.fill(np.concatenate([p.pts("lip_uo"), ui[::-1]]), c.lip)
    p.fill(np.concatenate([li, p.pts("lip_lo")[::-1]]), _mul(c.lip, 1.04))
    p.line([ui, li], c.lip_line)
    ph = p.pts("philtrum")
    p.line([ph[0:2], ph[2:4]], _mul(c.skin, 0.92))


def draw_face(
    colours: Palette,
    px: np.ndarray,
    slices: dict[str, slice],
    alphas: np.ndarray,
    size: int,
    canvas: np.ndarray | None = None,
    body: tuple[np.ndarray, tuple] | None = None,
) -> np.ndarray:
    """Draw the face whose drawn points (pixels, [V, 2]) and texture alphas face.py computed; uint8 RGB.

    `size` is the side of the face's aligned crop in pixels (it sets line widths). Without `canvas` the face is
    drawn on its plain backdrop of size x size; with one (a scene frame) it is drawn onto it, in place, and
    `body` (a polygon in pixels and its colour) is drawn over the neck, under the head.
    """
    img = _background(colours.background, size).copy() if canvas is None else canvas
    p = _Painter(img, px, slices, size)
    alpha = dict(zip(TEXTURES, alphas.tolist(), strict=True))
    _draw_head(p, colours, body)
    _draw_highlights(p, colours, alpha)
    _draw_textures(p, colours, alpha, size)
    _draw_nose(p, colours)
    _draw_eyes(p, colours)
    _draw_mouth(p, colours)
    if colours.has_fringe:
        p.fill(p.pts("fringe"), colours.hair)
    return img


def draw_hand(img: np.ndarray, polygons: list[np.ndarray], colour: tuple, size: float) -> None:
    """A hand over the face, in place: forearm, palm, then fingers, each outlined so the fingers read apart."""
    edge = _mul(colour, 0.72)
    lw = line_width(size)
    for poly in polygons:
        q = fixed_point(poly)
        cv2.fillPoly(img, [q], colour, _AA, _SHIFT)
        cv2.polylines(img, [q], True, edge, lw, _AA, _SHIFT)


def draw_strands(img: np.ndarray, strands: list[np.ndarray], colours: list[tuple], widths: list[int]) -> None:
    """Hair strands across the face, in place: open curves in pixels, each with its colour and width."""
    for strand, colour, width in zip(strands, colours, widths, strict=True):
        cv2.polylines(img, [fixed_point(strand)], False, colour, width, _AA, _SHIFT)
