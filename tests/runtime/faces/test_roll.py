"""A tilted head (ks_runtime/faces/roll.py): the roll search, haar's fallback eyes when the eye cascade finds no
pair, and dlib's landmarks measured upright; on SynthAU scene frames with the head rolled."""

import cv2
import numpy as np
import pytest

from ks_runtime.core.preprocess import Preprocess
from ks_runtime.faces.dlib import dlib_missing
from ks_runtime.faces.haar import HaarFaces
from ks_runtime.faces.roll import find_roll, peak, rotated_copy
from ks_runtime.synth.scene import SceneOptions, render_scene_sequence
from ks_runtime.tools import face_eval

ROLL = 20.0


@pytest.fixture(scope="module")
def tilted():
    """Frame 0 of face_eval's first scene video with the head rolled by ROLL degrees (the eye line slopes by
    about 21: the generator's own few degrees on top)."""
    cfg = face_eval.EVAL_CONFIG.with_overrides(frames=40)
    options = SceneOptions(exit_prob=0.0, head_pose_deg=(0.0, 0.0, ROLL))
    return render_scene_sequence(cfg, 0, 0, (640, 480), options, frame_indices=[0])


def slope(eyes: np.ndarray) -> float:
    gap = eyes[1] - eyes[0]
    return float(np.degrees(np.arctan2(gap[1], gap[0])))


def in_crop(stage, seq) -> tuple[float, float]:
    """The crop's roll (degrees) and alignment error of the stage's first Face on the frame."""
    face = stage(seq.frames[0], 0)
    assert face.success
    errors, rolls = face_eval.in_crop([face.points], seq.eyes[:1].astype(np.float64), stage.template, 64)
    return float(rolls[0]), float(errors[0])


def test_the_peak_of_a_parabola_is_found_between_the_angles():
    angles = np.arange(-45.0, 46.0, 15.0)
    np.testing.assert_allclose(peak(angles, -((angles - 7.0) ** 2)), 7.0)
    assert peak(angles, np.array([0, 0, 0, 0, 0, 0, 3.0])) == 45.0  # at the edge: the edge
    assert peak(angles, np.array([0, 0, 2.0, 2.0, 0, 0, 0])) == -7.5  # two equal tops: between them


def test_a_rotated_copy_maps_back_to_the_frame(tilted):
    grey = cv2.cvtColor(tilted.frames[0], cv2.COLOR_RGB2GRAY)
    stage = HaarFaces(Preprocess(size=64))
    box = stage.detect_full(grey)
    upright = find_roll(grey, box, stage.raw_windows, stage.detect)
    assert abs(upright.roll - slope(tilted.eyes[0])) < 5.0  # the roll search's error: a few degrees
    points = np.array([[10.0, 20.0], [300.0, 200.0]])
    np.testing.assert_allclose(upright.to_frame(points @ upright.matrix[:, :2].T + upright.matrix[:, 2]), points)
    bigger = upright.rescaled(grey, 120)  # the same face, cut again at the eye cascade's scale
    corners = upright.box.reshape(2, 2)
    assert bigger.box[2] - bigger.box[0] == pytest.approx(120)
    np.testing.assert_allclose(bigger.to_frame(bigger.box.reshape(2, 2)), upright.to_frame(corners), atol=1e-6)
    assert (
        find_roll(np.full((480, 640), 128, np.uint8), box, stage.raw_windows, stage.detect) is None
    )  # no face: no roll
    copy, matrix = rotated_copy(grey, np.array([320.0, 240.0]), 90.0, 0.5, 100)
    assert copy.shape == (100, 100)
    np.testing.assert_allclose(matrix @ [320.0, 240.0, 1.0], [50.0, 50.0])  # the centre in the copy's middle


def test_without_an_eye_pair_a_tilted_head_is_cropped_level(tilted, monkeypatch):
    """The eye cascade forced to fail: the fallback eyes turn with the head. The tolerance, 6 degrees, is 2.5 times
    the p90 of the crop's roll that face_eval measures for `haar-noeyes` on its roll20 set (2.4; docs/runtime.md),
    and under a third of the tilt that the old fallback (the eyes level in the box) leaves in the crop."""
    assert abs(slope(tilted.eyes[0]) - ROLL) < 3.0  # the scene's head_pose_deg tilts the head
    monkeypatch.setattr(HaarFaces, "find_eyes", lambda self, grey, box: np.zeros((0, 2)))
    roll, error = in_crop(HaarFaces(Preprocess(size=64)), tilted)
    assert roll < 6.0 and error < 0.12
    monkeypatch.setattr(HaarFaces, "roll_search", False)  # the old fallback
    old_roll, old_error = in_crop(HaarFaces(Preprocess(size=64)), tilted)
    assert old_roll > 15.0 and old_error > error + 0.05


def test_dlib_measures_the_landmarks_of_a_tilted_head_upright():
    """Thresholds below what face_eval measures on its roll35 set for dlib and dlib-noupright (docs/runtime.md)."""
    reason = dlib_missing()
    if reason:
        pytest.skip(reason)
    scenes = face_eval.pose_scenes("roll35", 2, 20)
    upright, level = face_eval.score_backends(["dlib", "dlib-noupright"], scenes)
    assert upright.detection_rate >= 0.95 and level.detection_rate >= 0.95
    assert upright.eye_stat("median", upright.crop_roll) < 2.0
    assert upright.eye_stat("median") < 0.06 < level.eye_stat("median")
