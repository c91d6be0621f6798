"""The face alignment template: where a crop's eyes, nose tip and mouth corners sit, as fractions of its side.

A raw-frame face stage maps the detected eyes (or all five points) onto the template with a similarity transform,
so its crops look like the training crops. The default is SynthAU's neutral face (the bundled models were
trained on it), kept here as data so that the core never renders a face; a test checks that SynthAU's renderer
still puts its points here. A bundle may carry its own template in the manifest's `alignment` field.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ks_runtime.core.errors import BundleError

TEMPLATE_POINTS = ("left_eye", "right_eye", "nose_tip", "mouth_left", "mouth_right")  # image-left first

# SynthAU's neutral canonical face: x right, y down, fractions of the crop side (pixel = fraction * S - 0.5).
SYNTHAU_TEMPLATE = {
    "left_eye": (0.365, 0.4146624195772059),
    "right_eye": (0.635, 0.4146624195772059),
    "nose_tip": (0.5, 0.57),
    "mouth_left": (0.39, 0.72),
    "mouth_right": (0.61, 0.72),
}


def default_template() -> np.ndarray:
    """SynthAU's template [5, 2] (fractions of the crop side): what the bundled models were trained on."""
    return np.array([SYNTHAU_TEMPLATE[name] for name in TEMPLATE_POINTS], np.float64)


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
