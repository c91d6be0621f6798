"""The SynthAU landmark model of one identity: neutral control points with depth, AU blend shapes, texture
weights, and the spline maps from control points to drawn points.

Canonical units: the aligned crop spans [-1, 1] in x and y, y points down, z toward the camera. Each AU's blend
shape is its displacement of every control point at amount 1 (intensity 5, gain 1); FACS says where each acts.
Per side, side 0 is the image-left side (x sign s = -1) and side 1 the image-right one (s = +1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ks_runtime.synth.identity import Identity
from ks_runtime.synth.labels import RENDERED_AUS

# Blend shapes, gains and quirks are indexed in RENDERED_AUS order.
K = len(RENDERED_AUS)
AU_INDEX = {au: k for k, au in enumerate(RENDERED_AUS)}
IRIS_POINTS = 20  # vertices of an iris polygon
# Whole-blend-shape boosts for AUs whose displacements are small in pixels (tuned so each AU changes a
# comparable number of pixels at intensity 2; see tests/runtime/synth/test_face.py).
BLEND_SCALE = {7: 1.25, 14: 1.45, 15: 1.2, 17: 1.15, 23: 1.45}

_SIDES = ((0, -1.0), (1, 1.0))  # (side, x sign s)
_FACE_DEPTH = 0.55  # depth of the facial plane in front of the head's rotation centre
_CONTOUR_ANGLE = np.arange(24) * (2 * np.pi / 24)  # face contour: 24 points clockwise from the top of the head
_CONTOUR_X, _CONTOUR_Y = np.sin(_CONTOUR_ANGLE), -np.cos(_CONTOUR_ANGLE)  # [24] on the unit circle
_HAIR_ANGLE = np.arange(14) * (2 * np.pi / 14)  # hair behind the head: 14 points
_OCTAGON = np.arange(8) * (2 * np.pi / 8)  # cheek and chin boss outlines
# AU17's "orange peel": small pits scattered over the chin boss, [12, 2] offsets from its centre.
_CHIN_PITS = np.array(
    [
        [-0.1, -0.01],
        [-0.058, -0.036],
        [-0.016, -0.018],
        [0.034, -0.04],
        [0.088, -0.02],
        [-0.075, 0.026],
        [-0.03, 0.008],
        [0.012, 0.034],
        [0.058, 0.012],
        [0.108, 0.03],
        [-0.045, 0.055],
        [0.035, 0.06],
    ]
)
# Mouth blend-shape helpers: the x direction, then per point the side (-1 image-left .. 1) and the weight of the
# mouth corners' pull, for the 2 corners, the 5-point upper outer lip and the 3-point inner and lower lips.
_X = np.array([1.0, 0.0])
_CORNER_SIDE = np.array([-1.0, 1.0])[:, None]
_SIDE5 = np.array([-1.0, -0.3, 0.0, 0.3, 1.0])[:, None]
_WEIGHT5 = np.array([1.0, 0.3, 0.0, 0.3, 1.0])[:, None]
_SIDE3 = np.array([-1.0, 0.0, 1.0])[:, None]
_WEIGHT3 = np.array([1.0, 0.0, 1.0])[:, None]


class _Builder:
    """Collects named groups of control points with their depth."""

    def __init__(self) -> None:
        self.points: list[np.ndarray] = []
        self.depth: list[np.ndarray] = []
        self.slices: dict[str, slice] = {}
        self.n = 0

    def add(self, name: str, xy, z) -> None:
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        self.points.append(xy)
        self.depth.append(np.broadcast_to(np.asarray(z, dtype=np.float64), (len(xy),)))
        self.slices[name] = slice(self.n, self.n + len(xy))
        self.n += len(xy)

    def idx(self, name: str) -> list[int]:
        s = self.slices[name]
        return list(range(s.start, s.stop))


def _catmull_rom_rows(idx: list[int], n_total: int, per_seg: int, closed: bool) -> np.ndarray:
    """Rows of the linear map control points -> points sampled on a uniform Catmull-Rom spline through them."""
    m = len(idx)
    segments = m if closed else m - 1
    rows = []
    for i in range(segments):
        quad = [i - 1, i, i + 1, i + 2]
        quad = [q % m for q in quad] if closed else [min(max(q, 0), m - 1) for q in quad]
        for t in np.arange(per_seg) / per_seg:
            w = (
                (-t + 2 * t**2 - t**3) / 2,
                (2 - 5 * t**2 + 3 * t**3) / 2,
                (t + 4 * t**2 - 3 * t**3) / 2,
                (-(t**2) + t**3) / 2,
            )
            row = np.zeros(n_total)
            for q, wq in zip(quad, w, strict=True):
                row[idx[q]] += wq
            rows.append(row)
    if not closed:
        row = np.zeros(n_total)
        row[idx[-1]] = 1.0
        rows.append(row)
    return np.array(rows)


def _poly_rows(idx: list[int], n_total: int) -> np.ndarray:
    rows = np.zeros((len(idx), n_total))
    rows[np.arange(len(idx)), idx] = 1.0
    return rows


@dataclass
class FaceModel:
    """Everything about one identity that does not change from frame to frame."""

    neutral: np.ndarray  # [N, 2] control points at rest (quirks excluded)
    basis: np.ndarray  # [K, N*2] AU blend shapes, per unit amount
    dense: np.ndarray  # [V, N] control points -> drawn points
    dense_z: np.ndarray  # [V] depth of the drawn points
    slices: dict[str, slice]  # control-point groups
    dense_slices: dict[str, slice]  # drawn-point groups
    frame_slices: dict[str, slice]  # drawn groups plus the per-frame polygons (iris_poly0/1, teeth_up/lo)
    frame_z: np.ndarray  # [V'] depth of every point a frame draws
    textures: np.ndarray  # [X, K] AU amount -> texture alpha
    texture_base: np.ndarray  # [X] permanent texture alpha
    iris_radius: float
    pivot: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.05, 0.0]))  # head rotation centre


# Textures (lines and shading whose darkness follows AUs), in the order of FaceModel.textures rows.
TEXTURES = (
    "glabella",
    "forehead_c",
    "forehead_l",
    "crow",
    "furrow",
    "nose_wrinkle",
    "nasolabial",
    "dimple",
    "sulcus",
    "chin_tex",
    "lip_bulge",
    "cheek",
    "corner",
    "lid_bulge",
    "chin_boss",
)
# Texture alpha per unit AU amount: texture -> {AU: weight}.
_TEXTURE_AUS: dict[str, dict[int, float]] = {
    "glabella": {4: 1.1, 9: 0.3},
    "forehead_c": {1: 0.9, 2: 0.2},
    "forehead_l": {2: 0.9, 1: 0.2},
    "crow": {6: 1.0, 12: 0.15},
    "furrow": {6: 0.9, 7: 0.25},
    "nose_wrinkle": {9: 1.1},
    "nasolabial": {6: 0.25, 9: 0.5, 10: 0.7, 12: 0.6},
    "dimple": {14: 1.4, 12: 0.15},
    "sulcus": {17: 0.7, 15: 0.2, 24: 0.2},
    "chin_tex": {17: 1.0},
    "chin_boss": {17: 1.0},
    "lip_bulge": {24: 1.0, 23: 0.3},
    "lid_bulge": {6: 1.0, 7: 0.2},  # AU6 bags the lower lid; AU7 tightens it flat
    "cheek": {6: 1.0, 12: 0.35},
    "corner": {14: 1.0, 15: 0.3, 12: 0.3},
}
# Permanent texture alpha per unit of Identity.wrinkles.
_STANDING_WRINKLES = (
    ("forehead_c", 0.8),
    ("forehead_l", 0.6),
    ("crow", 0.5),
    ("furrow", 0.6),
    ("nasolabial", 0.9),
    ("sulcus", 0.5),
    ("glabella", 0.3),
)

# Drawn curves: (group, spline points per segment, closed); 0 points per segment keeps the control points as
# they are. Groups in the middle of the face, then the lips (open, from mouth corner to mouth corner), then the
# groups each side has after its ear, brow and lids.
_CENTRE_CURVES = (
    ("contour", 3, True),
    ("hair_back", 2, True),
    ("fringe", 3, True),
    ("neck", 0, True),
    ("nose_tip", 0, False),
    ("glabella", 0, False),
    ("nose_wrinkle", 0, False),
    ("philtrum", 0, False),
    ("chin_tex", 0, False),
    ("chin_boss", 2, True),
    ("sulcus", 4, False),
    ("bulge_up", 4, False),
    ("bulge_lo", 4, False),
    ("forehead_c0", 2, False),
    ("forehead_c1", 2, False),
)
_LIP_CURVES = (("lip_uo", 4), ("lip_ui", 5), ("lip_li", 5), ("lip_lo", 5))
_SIDE_CURVES = (
    ("crease", 3, False),
    ("furrow", 3, False),
    ("crow", 0, False),
    ("cheek", 2, True),
    ("forehead_l", 2, False),
    ("forehead_l2", 2, False),
    ("nose_side", 3, False),
    ("alar", 3, False),
    ("nostril", 2, True),
    ("nasolabial", 3, False),
    ("dimple", 3, False),
    ("corner_mark", 0, False),
    ("iris", 0, False),
)


def _side_xy(s: float, pts) -> np.ndarray:
    pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    return pts * np.array([s, 1.0])


def _surface_depth(idn: Identity, x, extra: float = 0.0) -> np.ndarray:
    """Depth of the facial surface at x: it curves back toward the sides of the head."""
    x = np.asarray(x, dtype=np.float64)
    return _FACE_DEPTH * (1 - 0.75 * (x / idn.face_width) ** 2) + extra


def _nose_tip_y(idn: Identity) -> float:
    return idn.eye_y + idn.nose_length


def _widest_y(idn: Identity) -> float:
    """Height where the face is widest: a little under the eyes."""
    return idn.eye_y + 0.06


# --- neutral control points, region by region (in the order they are stored) ----------------------------------


def _add_contour(b: _Builder, idn: Identity) -> None:
    """Face contour: an ellipse above, a squarer superellipse narrowed toward the chin below (a U, not a V)."""
    W, cy = idn.face_width, _widest_y(idn)
    ux, uy = _CONTOUR_X, _CONTOUR_Y
    lower = np.clip(uy, 0, 1)
    sq = np.sign(ux) * np.abs(ux) ** np.where(uy > 0, 0.75, 1.0)
    cx_ = W * sq * (1 - idn.jaw_taper * lower**2.5)
    cy_ = np.where(uy < 0, cy + uy * (cy + 1.15), cy + (idn.chin_y - cy) * (lower**0.75))
    b.add("contour", np.stack([cx_, cy_], 1), 0.05 + 0.35 * lower**3)


def _add_hair(b: _Builder, idn: Identity) -> None:
    """Hair behind the head and the fringe over the forehead."""
    W, ey, cy, hv = idn.face_width, idn.eye_y, _widest_y(idn), idn.hair_volume
    a = _HAIR_ANGLE
    hair_back = np.stack(
        [
            (W * 1.05 + 0.1 * hv) * np.sin(a),
            np.where(np.cos(a) > 0, cy - (cy + 1.3) * np.cos(a), cy - (0.05 + 0.6 * hv) * np.cos(a)),
        ],
        1,
    )
    b.add("hair_back", hair_back, -0.3)
    hl, part = idn.hairline, idn.hair_part
    temple = ey - 0.12 + 0.05 * hv
    hx = np.array([1.04, 0.97, 0.8, 0.5, 0.15, -0.2, -0.52, -0.8, -0.97, -1.04]) * W
    hy = hl + (temple - hl) * np.abs(hx / W) ** 2.2 + 0.05 * part * np.sin(np.pi * hx / W) * (hl > -1)
    hy[0] = hy[-1] = temple + 0.04
    # The fringe's outer edge follows the top of the head, just outside the skin contour.
    a0 = np.arccos(np.clip((cy - temple) / (cy + 1.15), -1, 1))
    ta = np.linspace(-a0, a0, 7)
    outer = np.stack([W * 1.04 * np.sin(ta), cy - (cy + 1.2) * np.cos(ta)], 1)
    b.add("fringe", np.concatenate([np.stack([hx, hy], 1), outer]), 0.2)


def _add_neck_and_ears(b: _Builder, idn: Identity) -> None:
    """Neck and ears (drawn before the face, which covers their inner parts)."""
    W, ey, ny = idn.face_width, idn.eye_y, _nose_tip_y(idn)
    nk = W * 0.6
    b.add("neck", [[-nk, idn.chin_y - 0.35], [nk, idn.chin_y - 0.35], [nk * 1.2, 1.4], [-nk * 1.2, 1.4]], -0.2)
    for side, s in _SIDES:
        ear = [
            [W * 0.95, ey - 0.05],
            [W + 0.06, ey - 0.06],
            [W + 0.085, ey + 0.06],
            [W + 0.06, ny + 0.0],
            [W + 0.02, ny + 0.06],
            [W * 0.9, ny + 0.02],
        ]
        b.add(f"ear{side}", _side_xy(s, ear), -0.1)


def _add_brow(b: _Builder, idn: Identity, side: int, s: float) -> None:
    """One brow: top and bottom edges, 5 points each from the inner end outward."""
    ex, ew = s * idn.eye_spacing, idn.eye_size
    u = np.linspace(0, 1, 5)
    bx = ex + s * (-0.9 * ew + u * 2.15 * ew)
    by = idn.eye_y - idn.brow_height - idn.brow_arch * np.sin(np.pi * np.clip(u * 1.1, 0, 1)) + 0.01 * (u - 0.5)
    half = idn.brow_thickness * (1.0 - 0.45 * u) / 2
    half[0] *= 1.1
    b.add(f"brow_top{side}", np.stack([bx, by - half], 1), _surface_depth(idn, bx, 0.03))
    b.add(f"brow_bot{side}", np.stack([bx, by + half], 1), _surface_depth(idn, bx, 0.03))


def _add_eye(b: _Builder, idn: Identity, side: int, s: float) -> None:
    """One eye: corners, lids (3 points each between the corners), iris centre, lid crease, infraorbital furrow
    and crow's feet."""
    ex, ey, ew = s * idn.eye_spacing, idn.eye_y, idn.eye_size
    ap = 2 * ew * idn.eye_open  # full eye aperture
    inner = np.array([ex - s * ew, ey + 0.008])
    outer = np.array([ex + s * ew, ey - idn.eye_tilt])
    fr = np.array([0.25, 0.5, 0.75])[:, None]
    line = inner + fr * (outer - inner)
    up = line - np.array([0, 1.0]) * ap * 0.62 * np.array([[0.86], [1.0], [0.8]])
    lo = line + np.array([0, 1.0]) * ap * 0.38 * np.array([[0.75], [1.0], [0.9]])
    b.add(f"eye_corners{side}", [inner, outer], _surface_depth(idn, [inner[0], outer[0]], -0.02))
    b.add(f"lid_up{side}", up, _surface_depth(idn, up[:, 0]))
    b.add(f"lid_lo{side}", lo, _surface_depth(idn, lo[:, 0]))
    b.add(f"iris{side}", [[ex, ey - 0.08 * ap]], _surface_depth(idn, ex))
    crease = line - np.array([0, 1.0]) * (ap * 0.62 + 0.028) * np.array([[0.9], [1.0], [0.85]])
    crease[:, 0] += s * np.array([-0.01, 0.0, 0.012])
    b.add(f"crease{side}", crease, _surface_depth(idn, crease[:, 0]))
    furrow = line + np.array([0, 1.0]) * (ap * 0.38 + 0.045) + np.array([[0, 0.01], [0, 0], [0, -0.01]])
    b.add(f"furrow{side}", furrow, _surface_depth(idn, furrow[:, 0]))
    oc = outer + np.array([s * 0.03, 0.0])
    crow = [oc + [0, -0.02], oc + [s * 0.06, -0.045], oc, oc + [s * 0.065, 0.0], oc + [0, 0.02], oc + [s * 0.055, 0.05]]
    b.add(f"crow{side}", crow, _surface_depth(idn, oc[0], -0.05))


def _add_cheek_and_forehead_lines(b: _Builder, idn: Identity, side: int, s: float) -> None:
    """One side's cheek outline and its two lateral forehead lines."""
    ex, ey = s * idn.eye_spacing, idn.eye_y
    ccx, ccy = ex + s * 0.03, ey + 0.21
    cheek = np.stack([ccx + 0.11 * np.cos(_OCTAGON), ccy + 0.065 * np.sin(_OCTAGON)], 1)
    b.add(f"cheek{side}", cheek, _surface_depth(idn, ccx))
    fx = s * 0.12 * np.array([0.2, 1.0, 1.8]) + s * 0.06
    fy = ey - idn.brow_height - idn.brow_arch - np.array([0.1, 0.085, 0.1])
    b.add(f"forehead_l{side}", np.stack([fx + s * 0.1, fy], 1), _surface_depth(idn, fx))
    b.add(f"forehead_l2{side}", np.stack([fx + s * 0.12, fy - 0.07], 1), _surface_depth(idn, fx))


def _add_forehead(b: _Builder, idn: Identity) -> None:
    """Glabella lines and central forehead lines."""
    by0 = idn.eye_y - idn.brow_height
    b.add("glabella", [[-0.04, by0 - 0.02], [-0.03, by0 + 0.06], [0.04, by0 - 0.02], [0.03, by0 + 0.06]], _FACE_DEPTH)
    fc = np.linspace(-0.17, 0.17, 5)
    for j, off in enumerate((0.11, 0.18)):
        b.add(
            f"forehead_c{j}",
            np.stack([fc, by0 - idn.brow_arch - off + 0.02 * (fc / 0.17) ** 2], 1),
            _surface_depth(idn, fc),
        )


def _add_nose(b: _Builder, idn: Identity) -> None:
    """Nose: sides of the bridge, wings, nostrils, tip, wrinkles across the bridge."""
    ey, ny, nw = idn.eye_y, _nose_tip_y(idn), idn.nose_width
    for side, s in _SIDES:
        b.add(
            f"nose_side{side}",
            [[s * 0.06, ey + 0.03], [s * 0.065, (ey + ny) / 2], [s * nw * 0.8, ny - 0.06]],
            _surface_depth(idn, 0.06, 0.08),
        )
        b.add(
            f"alar{side}",
            [
                [s * nw * 0.75, ny - 0.055],
                [s * nw * 1.02, ny - 0.005],
                [s * nw * 0.8, ny + 0.03],
                [s * nw * 0.35, ny + 0.035],
            ],
            _surface_depth(idn, nw, 0.1),
        )
        b.add(
            f"nostril{side}",
            [
                [s * nw * 0.28, ny + 0.028],
                [s * nw * 0.6, ny + 0.012],
                [s * nw * 0.72, ny + 0.03],
                [s * nw * 0.5, ny + 0.04],
            ],
            _surface_depth(idn, nw * 0.5, 0.12),
        )
    b.add("nose_tip", [[0, ny]], _FACE_DEPTH + 0.22)
    b.add(
        "nose_wrinkle",
        [
            [-0.055, ey + 0.06],
            [0.055, ey + 0.05],
            [-0.06, ey + 0.1],
            [0.06, ey + 0.09],
            [-0.05, ey + 0.14],
            [0.05, ey + 0.13],
        ],
        _FACE_DEPTH + 0.08,
    )


def _add_lips(b: _Builder, idn: Identity) -> None:
    """Mouth corners, outer and inner lip contours (inner lips coincide when the mouth is closed), philtrum."""
    ny, my, mw = _nose_tip_y(idn), idn.mouth_y, idn.mouth_width
    ul, ll = idn.upper_lip, idn.lower_lip
    b.add("corners", [[-mw, my], [mw, my]], _surface_depth(idn, mw, 0.0))
    b.add(
        "lip_uo",
        [
            [-0.62 * mw, my - ul * 0.8],
            [-0.2 * mw, my - ul * 1.05],
            [0, my - ul * 0.82],
            [0.2 * mw, my - ul * 1.05],
            [0.62 * mw, my - ul * 0.8],
        ],
        _surface_depth(idn, 0.6 * mw, 0.06),
    )
    b.add(
        "lip_ui",
        [[-0.5 * mw, my - 0.002], [0, my + 0.004], [0.5 * mw, my - 0.002]],
        _surface_depth(idn, 0.5 * mw, 0.05),
    )
    b.add(
        "lip_li",
        [[-0.5 * mw, my - 0.002], [0, my + 0.004], [0.5 * mw, my - 0.002]],
        _surface_depth(idn, 0.5 * mw, 0.05),
    )
    b.add(
        "lip_lo",
        [[-0.55 * mw, my + ll * 0.8], [0, my + ll], [0.55 * mw, my + ll * 0.8]],
        _surface_depth(idn, 0.5 * mw, 0.06),
    )
    b.add(
        "philtrum",
        [[-0.035, ny + 0.045], [-0.2 * mw, my - ul * 1.05], [0.035, ny + 0.045], [0.2 * mw, my - ul * 1.05]],
        _FACE_DEPTH + 0.07,
    )


def _add_mouth_folds(b: _Builder, idn: Identity) -> None:
    """Per side: the nasolabial fold, the dimple and the mark at the mouth corner."""
    ny, nw, my, mw = _nose_tip_y(idn), idn.nose_width, idn.mouth_y, idn.mouth_width
    for side, s in _SIDES:
        b.add(
            f"nasolabial{side}",
            [
                [s * (nw + 0.035), ny - 0.035],
                [s * (mw * 0.7 + 0.09), (ny + my) / 2 + 0.01],
                [s * (mw + 0.065), my + 0.06],
            ],
            _surface_depth(idn, mw, 0.02),
        )
        b.add(
            f"dimple{side}",
            [[s * (mw + 0.04), my - 0.025], [s * (mw + 0.052), my], [s * (mw + 0.042), my + 0.025]],
            _surface_depth(idn, mw),
        )
        b.add(f"corner_mark{side}", [[s * (mw - 0.005), my], [s * (mw + 0.022), my + 0.005]], _surface_depth(idn, mw))


def _add_chin(b: _Builder, idn: Identity) -> None:
    """Mentolabial sulcus, the bulges above and below pressed lips, AU17's chin pits and the chin boss."""
    my, mw = idn.mouth_y, idn.mouth_width
    ul, ll = idn.upper_lip, idn.lower_lip
    sy = my + ll + 0.07
    b.add("sulcus", [[-0.45 * mw, sy + 0.01], [0, sy], [0.45 * mw, sy + 0.01]], _FACE_DEPTH + 0.05)
    b.add(
        "bulge_up",
        [[-0.7 * mw, my - ul - 0.035], [0, my - ul - 0.045], [0.7 * mw, my - ul - 0.035]],
        _FACE_DEPTH + 0.05,
    )
    b.add(
        "bulge_lo", [[-0.65 * mw, my + ll + 0.03], [0, my + ll + 0.04], [0.65 * mw, my + ll + 0.03]], _FACE_DEPTH + 0.05
    )
    chin_c = (sy + idn.chin_y) / 2
    b.add("chin_tex", _CHIN_PITS + np.array([0, chin_c]), _FACE_DEPTH + 0.05)
    b.add("chin_boss", np.stack([0.13 * np.cos(_OCTAGON), chin_c + 0.06 * np.sin(_OCTAGON)], 1), _FACE_DEPTH + 0.05)


def _neutral_points(idn: Identity) -> _Builder:
    """Every control point group of the identity's neutral face, with depth."""
    b = _Builder()
    _add_contour(b, idn)
    _add_hair(b, idn)
    _add_neck_and_ears(b, idn)
    for side, s in _SIDES:
        _add_brow(b, idn, side, s)
        _add_eye(b, idn, side, s)
        _add_cheek_and_forehead_lines(b, idn, side, s)
    _add_forehead(b, idn)
    _add_nose(b, idn)
    _add_lips(b, idn)
    _add_mouth_folds(b, idn)
    _add_chin(b, idn)
    return b


# --- AU blend shapes, region by region ---------------------------------------------------------------------------


class _BlendShapes:
    """AU blend shapes being built: basis [K, N, 2], each control point's displacement per unit AU amount."""

    def __init__(self, b: _Builder, neutral: np.ndarray) -> None:
        self.basis = np.zeros((K, b.n, 2))
        self.slices = b.slices
        self.neutral = neutral

    def move(self, au: int, name: str, d) -> None:
        """Add displacement d ([2], or one row per point of the group) to group `name` under `au`."""
        self.basis[AU_INDEX[au], self.slices[name]] += np.asarray(d, dtype=np.float64)

    def rest(self, name: str) -> np.ndarray:
        """The group's neutral points [n, 2]."""
        return self.neutral[self.slices[name]]


def _col(values) -> np.ndarray:
    """Vertical displacements [n] -> [n, 2]."""
    return np.asarray(values, dtype=np.float64)[:, None] * np.array([0.0, 1.0])


def _brow_shapes(sh: _BlendShapes, side: int, s: float) -> None:
    mv, col = sh.move, _col
    up5 = np.linspace(0, 1, 5)
    for part in ("brow_top", "brow_bot"):
        name = f"{part}{side}"
        # AU1 inner brow up, AU2 outer brow up, AU4 brows down and together, AU9 inner brow down a little.
        mv(1, name, col(-0.12 * np.array([1.0, 0.78, 0.45, 0.18, 0.04])))
        mv(2, name, col(-0.11 * np.array([0.04, 0.22, 0.55, 0.88, 1.0])) + np.array([s * 0.012, 0]) * up5[:, None])
        mv(
            4,
            name,
            col(0.075 * np.array([1.0, 0.85, 0.62, 0.42, 0.28]))
            + np.array([-s * 0.05, 0]) * np.array([1.0, 0.75, 0.45, 0.25, 0.1])[:, None],
        )
        mv(9, name, col(0.035 * np.array([1.0, 0.7, 0.4, 0.2, 0.1])) + np.array([-s * 0.01, 0]))
    # AU4 knits the brow head: its top edge bunches downward more than the bottom, so the head thickens.
    mv(4, f"brow_bot{side}", col(-0.012 * np.array([1.0, 0.5, 0, 0, 0])))
    mv(1, f"crease{side}", col(-0.025 * np.array([1.0, 0.7, 0.4])))
    mv(2, f"crease{side}", col(-0.025 * np.array([0.4, 0.7, 1.0])))
    mv(4, f"crease{side}", col(0.02 * np.ones(3)))
    mv(1, f"lid_up{side}", col(-0.006 * np.ones(3)))
    mv(2, f"lid_up{side}", col(-0.006 * np.ones(3)))
    mv(4, f"lid_up{side}", col(0.01 * np.ones(3)))


def _eye_shapes(sh: _BlendShapes, side: int, s: float) -> None:
    """Lids: AU6 pushes the lower lid up with a bulge and closes the outer corner; AU7 straightens and raises the
    lower lid and lowers the upper lid a little. Both narrow the eye. Then the furrow, cheek, crow's feet and the
    lateral forehead lines."""
    mv, col = sh.move, _col
    lo = sh.rest(f"lid_lo{side}")
    corners = sh.rest(f"eye_corners{side}")
    line_y = corners[0, 1] + np.array([0.25, 0.5, 0.75]) * (corners[1, 1] - corners[0, 1])
    mv(6, f"lid_lo{side}", col(-0.048 * np.array([0.6, 1.0, 0.9])))
    mv(6, f"lid_up{side}", col(0.012 * np.array([0.3, 0.6, 1.0])))
    mv(6, f"eye_corners{side}", [[0, -0.004], [-s * 0.01, -0.01]])
    mv(7, f"lid_lo{side}", col(0.9 * (line_y - lo[:, 1]) - 0.016))
    mv(7, f"lid_up{side}", col(0.022 * np.array([0.7, 1.0, 0.8])))
    mv(7, f"eye_corners{side}", [[s * 0.004, 0], [-s * 0.006, 0]])
    mv(9, f"lid_lo{side}", col(-0.012 * np.ones(3)))
    mv(12, f"lid_lo{side}", col(-0.01 * np.ones(3)))
    mv(6, f"furrow{side}", col(-0.03 * np.array([0.7, 1.0, 0.9])))  # less than the lid: the bag grows
    mv(7, f"furrow{side}", col(-0.012 * np.ones(3)))
    mv(6, f"cheek{side}", np.array([s * 0.01, -0.065]))
    mv(12, f"cheek{side}", np.array([s * 0.012, -0.03]))
    mv(6, f"crow{side}", np.array([0, -0.01]))
    mv(1, f"forehead_l{side}", col(-0.02 * np.ones(3)))
    mv(2, f"forehead_l{side}", col(-0.04 * np.ones(3)))
    mv(2, f"forehead_l2{side}", col(-0.04 * np.ones(3)))


def _nose_shapes(sh: _BlendShapes, side: int, s: float) -> None:
    """AU9 shortens the nose (tip and wings up) and widens the wings; AU10 lifts the wings."""
    mv = sh.move
    mv(9, f"nose_side{side}", [[0, 0], [0, -0.015], [s * 0.01, -0.04]])
    mv(9, f"alar{side}", np.array([[0, -0.04], [s * 0.014, -0.045], [s * 0.01, -0.045], [0, -0.042]]))
    mv(9, f"nostril{side}", np.array([s * 0.008, -0.043]))
    mv(10, f"alar{side}", np.array([[0, -0.012], [s * 0.012, -0.018], [s * 0.008, -0.018], [0, -0.014]]))
    mv(10, f"nostril{side}", np.array([s * 0.005, -0.016]))
    mv(10, f"nose_side{side}", [[0, 0], [0, 0], [s * 0.008, -0.012]])


def _fold_shapes(sh: _BlendShapes, side: int, s: float) -> None:
    """Nasolabial fold: lifted and deepened by AU6/9/10/12, pulled out at the bottom by AU12. Dimple and corner
    mark follow the mouth corner."""
    mv = sh.move
    mv(9, f"nasolabial{side}", [[s * 0.01, -0.04], [s * 0.01, -0.025], [0, -0.01]])
    mv(10, f"nasolabial{side}", [[s * 0.01, -0.015], [s * 0.015, -0.03], [s * 0.01, -0.02]])
    mv(12, f"nasolabial{side}", [[s * 0.01, -0.01], [s * 0.03, -0.025], [s * 0.06, -0.045]])
    mv(6, f"nasolabial{side}", [[s * 0.008, -0.015], [s * 0.012, -0.015], [0, 0]])
    mv(15, f"nasolabial{side}", [[0, 0], [0, 0.005], [s * 0.005, 0.035]])
    mv(26, f"nasolabial{side}", [[0, 0], [0, 0.01], [-s * 0.01, 0.05]])
    mv(12, f"dimple{side}", np.array([s * 0.06, -0.06]))
    mv(14, f"dimple{side}", np.array([-s * 0.03, -0.006]))
    mv(15, f"dimple{side}", np.array([s * 0.01, 0.055]))
    mv(26, f"dimple{side}", np.array([-s * 0.01, 0.03]))
    for au, d in (
        (12, (s * 0.06, -0.065)),
        (14, (-s * 0.032, -0.008)),
        (15, (s * 0.012, 0.062)),
        (26, (-s * 0.012, 0.03)),
        (23, (-s * 0.026, 0)),
        (10, (0, -0.012)),
        (17, (0, 0.012)),
    ):
        mv(au, f"corner_mark{side}", np.array(d))


def _mouth_corner_shapes(sh: _BlendShapes) -> None:
    """Mouth corners: [image-left, image-right]."""
    mv, sgn, xy = sh.move, _CORNER_SIDE, _X
    mv(12, "corners", sgn * xy * 0.06 + np.array([0, -0.065]))
    mv(14, "corners", -sgn * xy * 0.032 + np.array([0, -0.008]))
    mv(15, "corners", sgn * xy * 0.012 + np.array([0, 0.062]))
    mv(23, "corners", -sgn * xy * 0.026)
    mv(24, "corners", sgn * xy * 0.005 + np.array([0, -0.004]))
    mv(26, "corners", -sgn * xy * 0.012 + np.array([0, 0.03]))
    mv(25, "corners", np.array([0, 0.006]))
    mv(10, "corners", np.array([0, -0.012]))
    mv(17, "corners", np.array([0, 0.012]))


def _upper_lip_shapes(sh: _BlendShapes, mouth_y: float) -> None:
    """Upper outer lip [5 points, left to right]; AU9/AU10 also lift the philtrum, AU9 the nose tip."""
    mv, col, xy, side5, w5 = sh.move, _col, _X, _SIDE5, _WEIGHT5
    uo = sh.rest("lip_uo")
    ui_y = mouth_y
    mv(10, "lip_uo", col(-0.06 * np.array([0.6, 0.9, 1.0, 0.9, 0.6])))
    mv(9, "lip_uo", col(-0.03 * np.array([0.6, 0.9, 1.0, 0.9, 0.6])))
    mv(12, "lip_uo", side5 * xy * 0.035 * w5 + col(-0.035 * w5[:, 0] - 0.006))
    mv(14, "lip_uo", -side5 * xy * 0.015 * w5)
    mv(15, "lip_uo", col(0.026 * w5[:, 0]))
    mv(23, "lip_uo", col(0.45 * (ui_y - uo[:, 1]) * np.array([0.8, 1, 1, 1, 0.8])) - side5 * xy * 0.012 * w5)
    mv(24, "lip_uo", col(0.62 * (ui_y - uo[:, 1]) * np.array([0.9, 1, 1, 1, 0.9])))
    mv(17, "lip_uo", col(-0.012 * np.array([0.5, 0.9, 1.0, 0.9, 0.5])))
    mv(26, "lip_uo", -side5 * xy * 0.01 * w5)
    mv(10, "philtrum", [[0, 0], [0, -0.055], [0, 0], [0, -0.055]])
    mv(9, "philtrum", [[0, -0.035], [0, -0.03], [0, -0.035], [0, -0.03]])
    mv(9, "nose_tip", [[0, -0.04]])


def _inner_lip_shapes(sh: _BlendShapes) -> None:
    """Inner lips [3 points each]; the lower inner lip carries the mouth opening."""
    mv, col, xy, side3, w3 = sh.move, _col, _X, _SIDE3, _WEIGHT3
    for name in ("lip_ui", "lip_li"):
        mv(12, name, side3 * xy * 0.03 * w3 + col(-0.04 * w3[:, 0] - 0.004))
        mv(14, name, -side3 * xy * 0.016 * w3 + col(-0.006 * w3[:, 0]))
        mv(15, name, col(0.034 * w3[:, 0]))
        mv(23, name, -side3 * xy * 0.014 * w3 + col(0.004 * w3[:, 0] - 0.004))
        mv(24, name, col(0.004 * w3[:, 0] - 0.006))
        mv(17, name, col(-0.022 * np.array([0.6, 1.0, 0.6])))
        mv(26, name, -side3 * xy * 0.01 * w3)
    mv(10, "lip_ui", col(-0.05 * np.array([0.75, 1.0, 0.75])))
    mv(9, "lip_ui", col(-0.022 * np.array([0.75, 1.0, 0.75])))
    mv(25, "lip_ui", col(-0.008 * np.array([0.7, 1.0, 0.7])))
    mv(25, "lip_li", col(0.065 * np.array([0.75, 1.0, 0.75])))
    mv(26, "lip_li", col(0.11 * np.array([0.75, 1.0, 0.75])))


def _lower_lip_shapes(sh: _BlendShapes, mouth_y: float) -> None:
    """Lower outer lip [3 points]."""
    mv, col, xy, side3, w3 = sh.move, _col, _X, _SIDE3, _WEIGHT3
    lo = sh.rest("lip_lo")
    my = mouth_y
    mv(12, "lip_lo", side3 * xy * 0.03 * w3 + col(-0.03 * w3[:, 0] - 0.004))
    mv(14, "lip_lo", -side3 * xy * 0.014 * w3 + col(-0.008 * w3[:, 0]))
    mv(15, "lip_lo", col(0.03 * w3[:, 0] + 0.008))
    mv(17, "lip_lo", col(-0.04 * np.array([0.8, 1.0, 0.8])))
    mv(23, "lip_lo", col(0.45 * (my - lo[:, 1])) - side3 * xy * 0.012 * w3)
    mv(24, "lip_lo", col(0.6 * (my - lo[:, 1])))
    mv(25, "lip_lo", col(0.06 * np.array([0.75, 1.0, 0.75])))
    mv(26, "lip_lo", col(0.115 * np.array([0.8, 1.0, 0.8])) - side3 * xy * 0.012 * w3)


def _jaw_shapes(sh: _BlendShapes) -> None:
    """Chin and lower face: AU17 raises the chin boss, AU25/AU26 lower the jaw; AU6/AU12 lift the cheekbones."""
    mv, col = sh.move, _col
    for name in ("sulcus", "chin_tex", "chin_boss"):
        mv(17, name, np.array([0, -0.035]))
        mv(26, name, np.array([0, 0.115]))
        mv(25, name, np.array([0, 0.03]))
    mv(15, "sulcus", [[-0.01, 0.015], [0, 0.004], [0.01, 0.015]])
    mv(24, "sulcus", np.array([0, -0.01]))
    for name in ("bulge_up", "bulge_lo"):
        mv(24, name, col(0.01 * np.ones(3) * (1 if name == "bulge_up" else -1)))
    mv(26, "bulge_lo", np.array([0, 0.11]))
    mv(25, "bulge_lo", np.array([0, 0.05]))
    jaw = np.clip((_CONTOUR_Y - 0.1) / 0.9, 0, 1) ** 1.2
    mv(26, "contour", col(0.11 * jaw))
    mv(25, "contour", col(0.015 * jaw))
    mv(17, "contour", col(-0.02 * np.clip((_CONTOUR_Y - 0.8) / 0.2, 0, 1)))
    bump = np.clip(1 - np.abs(_CONTOUR_Y - 0.1) / 0.25, 0, 1) * np.sign(_CONTOUR_X)  # at the cheekbones
    mv(6, "contour", np.stack([0.018 * bump, -0.01 * np.abs(bump)], 1))
    mv(12, "contour", np.stack([0.01 * bump, np.zeros_like(bump)], 1))
    mv(26, "neck", [[0, 0.08], [0, 0.08], [0, 0], [0, 0]])


def _blend_shapes(b: _Builder, neutral: np.ndarray, idn: Identity) -> np.ndarray:
    """AU blend shapes [K, N*2] of the identity's control points, BLEND_SCALE applied."""
    sh = _BlendShapes(b, neutral)
    for side, s in _SIDES:
        _brow_shapes(sh, side, s)
        _eye_shapes(sh, side, s)
        _nose_shapes(sh, side, s)
        _fold_shapes(sh, side, s)
    _mouth_corner_shapes(sh)
    _upper_lip_shapes(sh, idn.mouth_y)
    _inner_lip_shapes(sh)
    _lower_lip_shapes(sh, idn.mouth_y)
    _jaw_shapes(sh)
    for au, scale in BLEND_SCALE.items():
        sh.basis[AU_INDEX[au]] *= scale
    return sh.basis.reshape(K, -1)


# --- textures and the drawn points ------------------------------------------------------------------------------


def _texture_weights(idn: Identity) -> tuple[np.ndarray, np.ndarray]:
    """Texture alphas: [X, K] per unit AU amount (rows follow TEXTURES, columns RENDERED_AUS) and the identity's
    permanent alpha [X]."""
    tex = np.zeros((len(TEXTURES), K))
    base = np.zeros(len(TEXTURES))
    for name, weights in _TEXTURE_AUS.items():
        for au, w in weights.items():
            tex[TEXTURES.index(name), AU_INDEX[au]] = w
    for name, w in _STANDING_WRINKLES:
        base[TEXTURES.index(name)] = w * idn.wrinkles
    return tex, base


def _curves(b: _Builder) -> list[tuple[str, list[int], int, bool]]:
    """Every drawn curve: (group, control-point indices, spline points per segment, closed), in drawing-map order."""
    curves = [(name, b.idx(name), per_seg, closed) for name, per_seg, closed in _CENTRE_CURVES]
    ci = b.idx("corners")
    curves += [(name, [ci[0], *b.idx(name), ci[1]], per_seg, False) for name, per_seg in _LIP_CURVES]
    for side in (0, 1):
        ec = b.idx(f"eye_corners{side}")
        curves += [
            (f"ear{side}", b.idx(f"ear{side}"), 2, True),
            (f"brow{side}", b.idx(f"brow_top{side}") + b.idx(f"brow_bot{side}")[::-1], 3, True),
            (f"lid_up{side}", [ec[0], *b.idx(f"lid_up{side}"), ec[1]], 4, False),
            (f"lid_lo{side}", [ec[0], *b.idx(f"lid_lo{side}"), ec[1]], 4, False),
        ]
        curves += [(f"{name}{side}", b.idx(f"{name}{side}"), per_seg, closed) for name, per_seg, closed in _SIDE_CURVES]
    return curves


def _dense_map(b: _Builder) -> tuple[np.ndarray, dict[str, slice]]:
    """Drawn points as splines through the control points: the map [V, N] and its groups. Rows sum to one, so
    the map commutes with the pose."""
    rows, dense_slices, v = [], {}, 0
    for name, idx, per_seg, closed in _curves(b):
        r = _poly_rows(idx, b.n) if per_seg == 0 else _catmull_rom_rows(idx, b.n, per_seg, closed)
        rows.append(r)
        dense_slices[name] = slice(v, v + len(r))
        v += len(r)
    return np.concatenate(rows), dense_slices


def _frame_groups(dense_z: np.ndarray, dense_slices: dict[str, slice]) -> tuple[dict[str, slice], np.ndarray]:
    """The drawn groups plus the polygons made per frame (face.py): irises clipped to the lids, teeth inside the
    mouth opening; with the depth [V'] of every point."""
    v = len(dense_z)
    frame_slices, frame_z = dict(dense_slices), [dense_z]
    lip_z = dense_z[dense_slices["lip_ui"]]
    extras = [(f"iris_poly{side}", np.full(IRIS_POINTS, dense_z[dense_slices[f"iris{side}"]][0])) for side in (0, 1)]
    extras += [(name, np.concatenate([lip_z, lip_z[::-1]]) - 0.02) for name in ("teeth_up", "teeth_lo")]
    for name, depth in extras:
        frame_slices[name] = slice(v, v + len(depth))
        frame_z.append(depth)
        v += len(depth)
    return frame_slices, np.concatenate(frame_z)


def build_model(idn: Identity) -> FaceModel:
    """Neutral landmarks, blend shapes and spline maps for one identity."""
    b = _neutral_points(idn)
    neutral = np.concatenate(b.points)
    z = np.concatenate(b.depth)
    basis = _blend_shapes(b, neutral, idn)
    textures, texture_base = _texture_weights(idn)
    dense, dense_slices = _dense_map(b)
    dense_z = dense @ z
    frame_slices, frame_z = _frame_groups(dense_z, dense_slices)
    return FaceModel(
        neutral=neutral,
        basis=basis,
        dense=dense,
        dense_z=dense_z,
        slices=b.slices,
        dense_slices=dense_slices,
        frame_slices=frame_slices,
        frame_z=frame_z,
        textures=textures,
        texture_base=texture_base,
        iris_radius=0.42 * idn.eye_size,
    )
