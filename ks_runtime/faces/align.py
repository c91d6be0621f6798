"""Similarity alignment: the transform that maps a face's points onto the template, and the crop it cuts."""

from __future__ import annotations

import math

import cv2
import numpy as np

from ks_runtime.core import kernels
from ks_runtime.core.template import template_pixels


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
    """The size x size crop of an RGB uint8 frame under a forward similarity `matrix`, cut by kernels.warp_crop.

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
    image, matrix = np.ascontiguousarray(image), np.ascontiguousarray(matrix)
    return kernels.warp_crop(image, matrix, (size, size), border="replicate")
