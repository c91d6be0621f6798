"""A one-page PNG to look at SynthAU: every AU of a set at apex beside neutral, a labelled sequence, the texture
cues with and without their texture, the per-frame nuisances, and scene-mode frames with their true box and eyes.

Used by `ks-train synth-preview` and when tuning the renderer: if two rows look alike, the AUs are not distinct.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from ks_runtime.core.au import AU_NAMES, get_au_set
from ks_runtime.synth import face
from ks_runtime.synth.generate import SynthConfig, generate_sequence
from ks_runtime.synth.identity import Identity, draw_identity
from ks_runtime.synth.labels import RENDERED_AUS
from ks_runtime.synth.scene import render_scene_sequence

log = logging.getLogger(__name__)

APEX_INTENSITY = 5.0
N_IDENTITIES = 3
N_SEQUENCE_FRAMES = 12
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_INK = (20, 20, 20)
_PAPER = 255


def _text(img: np.ndarray, lines: list[str], x: int, y: int, scale: float, line_px: int) -> None:
    """Write lines of text downward from (x, y), y being the first baseline."""
    for i, line in enumerate(lines):
        cv2.putText(img, line, (x, y + i * line_px), _FONT, scale, _INK, 1, cv2.LINE_AA)


def _labelled_row(label: list[str], tiles: list[np.ndarray], label_w: int, gap: int, scale: float) -> np.ndarray:
    """A label cell followed by image tiles separated by `gap` px of paper."""
    size = tiles[0].shape[0]
    row = np.full((size + gap, label_w + len(tiles) * (size + gap), 3), _PAPER, np.uint8)
    _text(row, label, 4, size // 2 - 2, scale, int(28 * scale) + 4)
    for i, tile in enumerate(tiles):
        x = label_w + i * (size + gap)
        row[:size, x : x + size] = tile
    return row


def _pad_width(block: np.ndarray, width: int) -> np.ndarray:
    out = np.full((block.shape[0], width, 3), _PAPER, np.uint8)
    out[:, : block.shape[1]] = block
    return out


def au_grid(au_set: str = "bp4d", size: int = 96, seed: int = 0) -> np.ndarray:
    """One row per AU of the set: three identities, each at neutral and then at apex, nuisances off. RGB uint8."""
    aus = get_au_set(au_set)
    numbers = aus.numbers
    identities = [draw_identity(np.random.default_rng([seed, i])) for i in range(N_IDENTITIES)]
    still = face.still_nuisance(1)
    rng = np.random.default_rng(seed)
    neutral = [face.render_frame(idn, numbers, np.zeros(len(numbers)), still, 0, size, rng) for idn in identities]
    scale, label_w, gap = 0.38 * size / 96 + 0.05, int(1.5 * size), max(2, size // 24)
    header = np.full((int(22 * scale / 0.43), label_w + 2 * N_IDENTITIES * (size + gap), 3), _PAPER, np.uint8)
    for i in range(N_IDENTITIES):
        x = label_w + 2 * i * (size + gap)
        _text(header, [f"subject {i + 1}: neutral | apex"], x, header.shape[0] - 6, scale, 0)
    rows = [header]
    for k, au in enumerate(numbers):
        intensity = np.zeros(len(numbers))
        intensity[k] = APEX_INTENSITY
        tiles = []
        for idn, rest in zip(identities, neutral, strict=True):
            tiles += [rest, face.render_frame(idn, numbers, intensity, still, 0, size, rng)]
        rows.append(_labelled_row([f"AU{au}", *_wrap(AU_NAMES[au], 12)], tiles, label_w, gap, scale))
    return np.concatenate(rows)


def _wrap(text: str, width: int) -> list[str]:
    """Greedy word wrap to lines of at most `width` characters (a long word gets its own line)."""
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def sequence_strip(au_set: str = "bp4d", size: int = 96, seed: int = 0, per_row: int = 6) -> np.ndarray:
    """Frames sampled from one generated sequence (nuisances on), with the active AU labels under each. RGB."""
    cfg = SynthConfig(size="tiny", au_set=au_set, seed=seed, image_size=size)
    sequence = generate_sequence(cfg, 0, 0)
    frames, labels = sequence.frames, np.asarray(sequence.labels)
    numbers = cfg.aus.numbers
    picks = np.linspace(0, len(frames) - 1, N_SEQUENCE_FRAMES).round().astype(int)
    scale = 0.3 * size / 96 + 0.05
    line_px = int(28 * scale) + 3
    cell_w, text_h = size + max(4, size // 12), 4 * line_px + 4
    cells = []
    for t in picks:
        cell = np.full((size + text_h, cell_w, 3), _PAPER, np.uint8)
        cell[:size, :size] = frames[t]
        active = [str(au) for au, on in zip(numbers, labels[t], strict=True) if on == 1]
        lines = [f"t={t}", *_wrap("AU " + (" ".join(active) if active else "none"), max(8, size // 8))]
        _text(cell, lines[:4], 2, size + line_px, scale, line_px)
        cells.append(cell)
    rows = [np.concatenate(cells[i : i + per_row], 1) for i in range(0, len(cells), per_row)]
    width = max(r.shape[1] for r in rows)
    title = np.full((line_px + 8, width, 3), _PAPER, np.uint8)
    _text(
        title,
        [f"{sequence.subject} {sequence.task}: frames of a generated sequence ({au_set}, labels = intensity >= 2)"],
        2,
        line_px + 2,
        scale,
        0,
    )
    return np.concatenate([title, *[_pad_width(r, width) for r in rows]])


# Texture cues: title, AU, the TextureStrengths fields that draw it, and the canonical box (x0, x1, y0, y1)
# around it for the magnified view.
TEXTURE_CUES = (
    ("AU4 glabella lines", 4, ("glabella",), (-0.35, 0.35, -0.6, 0.1)),
    ("AU6 crow's feet, lid bag", 6, ("crow", "lid_bulge", "cheek"), (-0.75, -0.05, -0.45, 0.25)),
    ("AU9 nose wrinkle", 9, ("nose_wrinkle", "nasolabial"), (-0.35, 0.35, -0.35, 0.35)),
    ("AU14 dimple", 14, ("dimple",), (-0.4, 0.4, 0.1, 0.8)),
    ("AU17 chin texture", 17, ("chin",), (-0.35, 0.35, 0.3, 1.0)),
)
ZOOM = 3


def _title(text: str, width: int, scale: float) -> np.ndarray:
    line_px = int(28 * scale) + 4
    block = np.full((line_px + 8, width, 3), _PAPER, np.uint8)
    _text(block, [text], 2, line_px + 2, scale, 0)
    return block


def _zoom(
    identity: Identity, intensity: np.ndarray, box: tuple, size: int, texture: face.TextureStrengths
) -> np.ndarray:
    """The face drawn ZOOM times larger, cropped to a size x size window around `box` (canonical units)."""
    big = face.render_frame(
        identity, RENDERED_AUS, intensity, face.still_nuisance(1), 0, size * ZOOM, np.random.default_rng(0), texture
    )
    cx, cy = (box[0] + box[1]) / 2, (box[2] + box[3]) / 2
    x = int(round((cx + 1) * size * ZOOM / 2 - size / 2))
    y = int(round((cy + 1) * size * ZOOM / 2 - size / 2))
    x, y = min(max(x, 0), size * (ZOOM - 1)), min(max(y, 0), size * (ZOOM - 1))
    return big[y : y + size, x : x + size]


def texture_panel(size: int = 96, seed: int = 0) -> np.ndarray:
    """One row per texture cue: neutral, apex, apex with the cue's texture off, and both magnified. RGB uint8."""
    identity = Identity()
    still = face.still_nuisance(1)
    rng = np.random.default_rng(seed)
    scale, label_w, gap = 0.38 * size / 96 + 0.05, int(1.5 * size), max(2, size // 24)
    zero = np.zeros(len(RENDERED_AUS))
    neutral = face.render_frame(identity, RENDERED_AUS, zero, still, 0, size, rng)
    heads = ["neutral", "apex", "apex, cue off", f"x{ZOOM} apex", f"x{ZOOM} cue off"]
    header = np.full((int(22 * scale / 0.43), label_w + len(heads) * (size + gap), 3), _PAPER, np.uint8)
    for i, head in enumerate(heads):
        _text(header, [head], label_w + i * (size + gap), header.shape[0] - 6, scale, 0)
    rows = [header]
    for title, au, fields, box in TEXTURE_CUES:
        apex = zero.copy()
        apex[RENDERED_AUS.index(au)] = APEX_INTENSITY
        on = face.TextureStrengths()
        off = face.TextureStrengths(**{f: 0.0 for f in fields})
        tiles = [
            neutral,
            face.render_frame(identity, RENDERED_AUS, apex, still, 0, size, rng, on),
            face.render_frame(identity, RENDERED_AUS, apex, still, 0, size, rng, off),
            _zoom(identity, apex, box, size, on),
            _zoom(identity, apex, box, size, off),
        ]
        rows.append(_labelled_row(_wrap(title, 12), tiles, label_w, gap, scale))
    return np.concatenate(rows)


def _occluded_frame(identity: Identity, kind: str, size: int) -> np.ndarray:
    """A frame with a hand or hair strands in place (the first seed whose occlusion is of that kind)."""
    strengths = face.NuisanceStrengths(
        head_pose_deg=0, jitter_px=0, lighting=0, noise=0, colour_cast=0, blur_prob=0, jpeg_prob=0, occlusion_prob=1.0
    )
    for k in range(100):
        track = face.sample_nuisance(100, np.random.default_rng([kind == "hand", k]), strengths)
        if track.occlusion is not None and track.occlusion.kind == kind:
            t = int(np.argmax(track.occlusion.amount))
            return face.render_frame(
                identity, RENDERED_AUS, np.zeros(len(RENDERED_AUS)), track, t, size, np.random.default_rng(0)
            )
    raise RuntimeError(f"no {kind} occlusion in 100 draws")  # cannot happen at these odds


def nuisance_panel(size: int = 96, seed: int = 0) -> np.ndarray:
    """One subject under each image nuisance alone: blur, motion blur, JPEG, a hand, hair, lighting. RGB uint8."""
    identity = draw_identity(np.random.default_rng([seed, 1]))
    zero = np.zeros(len(RENDERED_AUS))
    scale, label_w, gap = 0.38 * size / 96 + 0.05, int(1.5 * size), max(2, size // 24)
    edits = {
        "Gaussian blur": {"blur_sigma": np.array([1.2]), "blur_angle": np.array([np.nan])},
        "motion blur": {"blur_sigma": np.array([1.2]), "blur_angle": np.array([0.4])},
        "JPEG q25": {"jpeg_quality": np.array([25])},
        "light, cast": {
            "light_strength": np.array([0.35]),
            "light_angle": np.array([0.3]),
            "colour": np.array([[1.07, 1.0, 0.92]]),
        },
        "head pose": {"yaw": np.array([18.0]), "pitch": np.array([-6.0]), "roll": np.array([8.0])},
    }
    tiles, names = [], []
    for name, changes in edits.items():
        track = face.still_nuisance(1)
        for key, value in changes.items():
            setattr(track, key, value)
        tiles.append(face.render_frame(identity, RENDERED_AUS, zero, track, 0, size, np.random.default_rng(0)))
        names.append(name)
    for kind in ("hand", "hair"):
        tiles.append(_occluded_frame(identity, kind, size))
        names.append(kind)
    header = np.full((int(22 * scale / 0.43), label_w + len(tiles) * (size + gap), 3), _PAPER, np.uint8)
    for i, name in enumerate(names):
        _text(header, [name], label_w + i * (size + gap), header.shape[0] - 6, scale, 0)
    return np.concatenate([header, _labelled_row(["nuisances", "(one", "at a time)"], tiles, label_w, gap, scale)])


def scene_panel(
    au_set: str = "bp4d", seed: int = 0, frame_size: tuple[int, int] = (640, 480), shrink: int = 2
) -> np.ndarray:
    """Scene-mode frames (shrunk) with their true face box (green) and eye centres (red: image-left, blue)."""
    cfg = SynthConfig(size="tiny", au_set=au_set, seed=seed)
    picks = ((0, 0, 30), (1, 1, 90), (2, 0, 60))
    tiles = []
    for subject, task, t in picks:
        for t_try in (t, *range(0, cfg.shape.frames, 10)):  # the first frame with a face in view
            seq = render_scene_sequence(cfg, subject, task, frame_size, frame_indices=[t_try])
            if seq.face_visible[0]:
                break
        w, h = frame_size[0] // shrink, frame_size[1] // shrink
        tile = cv2.resize(seq.frames[0], (w, h), interpolation=cv2.INTER_AREA)
        if seq.face_visible[0]:
            x0, y0, x1, y1 = ((seq.face_box[0] + 0.5) / shrink - 0.5).round().astype(int)
            cv2.rectangle(tile, (int(x0), int(y0)), (int(x1), int(y1)), (0, 220, 0), 1, cv2.LINE_AA)
            for (x, y), colour in zip((seq.eyes[0] + 0.5) / shrink - 0.5, ((230, 0, 0), (0, 60, 255)), strict=True):
                cv2.circle(tile, (int(round(x)), int(round(y))), 2, colour, -1, cv2.LINE_AA)
        gap = np.full((h, 6, 3), _PAPER, np.uint8)
        tiles += [tile, gap]
    return np.concatenate(tiles[:-1], 1)


def render_preview(path: str | Path, au_set: str = "bp4d", size: int = 96, seed: int = 0) -> Path:
    """Write the AU grid, a labelled sequence strip, the texture cues, the nuisances and scene-mode frames to one
    PNG at `path`; returns the path."""
    path = Path(path)
    scale = 0.38 * size / 96 + 0.05
    grid = au_grid(au_set, size, seed)
    strip = sequence_strip(au_set, size, seed)
    textures = texture_panel(size, seed)
    nuisances = nuisance_panel(size, seed)
    scenes = scene_panel(au_set, seed)
    width = max(block.shape[1] for block in (grid, strip, textures, nuisances, scenes))
    sep = np.full((max(8, size // 6), width, 3), _PAPER, np.uint8)
    blocks = [
        grid,
        sep,
        strip,
        sep,
        _title("texture cues (subject: the average face)", width, scale),
        textures,
        sep,
        nuisances,
        sep,
        _title("scene mode: true face box (green), image-left eye (red), right eye (blue)", width, scale),
        scenes,
    ]
    page = np.concatenate([_pad_width(block, width) for block in blocks])
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(page, cv2.COLOR_RGB2BGR)):
        raise OSError(f"{path}: could not write the preview PNG")
    log.info("wrote SynthAU preview %s (%d x %d px)", path, page.shape[1], page.shape[0])
    return path
