"""A one-page PNG to look at SynthAU: every AU of a set at apex beside neutral, and a labelled sequence.

Used by `ks-train synth-preview` and when tuning the renderer: if two rows look alike, the AUs are not distinct.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from ks_runtime.au import AU_NAMES, get_au_set
from ks_runtime.synth import face

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
        row[:size, x:x + size] = tile
    return row


def _pad_width(block: np.ndarray, width: int) -> np.ndarray:
    out = np.full((block.shape[0], width, 3), _PAPER, np.uint8)
    out[:, :block.shape[1]] = block
    return out


def au_grid(au_set: str = "bp4d", size: int = 96, seed: int = 0) -> np.ndarray:
    """One row per AU of the set: three identities, each at neutral and then at apex, nuisances off. RGB uint8."""
    aus = get_au_set(au_set)
    numbers = aus.numbers
    identities = [face.draw_identity(np.random.default_rng([seed, i])) for i in range(N_IDENTITIES)]
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
    from ks_runtime.synth.generate import SynthConfig, generate_sequence  # late: generate imports face

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
    rows = [np.concatenate(cells[i:i + per_row], 1) for i in range(0, len(cells), per_row)]
    width = max(r.shape[1] for r in rows)
    title = np.full((line_px + 8, width, 3), _PAPER, np.uint8)
    _text(title, [f"{sequence.subject} {sequence.task}: frames of a generated sequence ({au_set}, labels = "
                  f"intensity >= 2)"], 2, line_px + 2, scale, 0)
    return np.concatenate([title, *[_pad_width(r, width) for r in rows]])


def render_preview(path: str | Path, au_set: str = "bp4d", size: int = 96, seed: int = 0) -> Path:
    """Write the AU grid above a labelled sequence strip to one PNG at `path`; returns the path."""
    path = Path(path)
    grid = au_grid(au_set, size, seed)
    strip = sequence_strip(au_set, size, seed)
    width = max(grid.shape[1], strip.shape[1])
    sep = np.full((max(8, size // 6), width, 3), _PAPER, np.uint8)
    page = np.concatenate([_pad_width(grid, width), sep, _pad_width(strip, width)])
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(page, cv2.COLOR_RGB2BGR)):
        raise OSError(f"{path}: could not write the preview PNG")
    log.info("wrote SynthAU preview %s (%d x %d px)", path, page.shape[1], page.shape[0])
    return path
