"""ks_runtime/io/head_pose.py: the head pose from 68 landmarks. A known rotation and translation of the generic
model, projected through the documented camera by this test's own pinhole code, is estimated back."""

import math

import numpy as np
import pytest

from ks_runtime.core.errors import DataError
from ks_runtime.core.results import Face, FrameResult, KeptFrames
from ks_runtime.io.head_pose import (
    GENERIC_FACE_MM,
    RIGID_LANDMARKS,
    add_face_geometry,
    camera_matrix,
    euler_angles,
    head_pose,
)


def rotation(rx: float, ry: float, rz: float) -> np.ndarray:
    """R = Rx @ Ry @ Rz, OpenFace's composition, written out here independently of the module."""
    cx, sx, cy, sy, cz, sz = math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry), math.cos(rz), math.sin(rz)
    x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return x @ y @ z


def project(angles, translation, width, height) -> np.ndarray:
    """The model's rigid points seen by an ideal pinhole camera with OpenFace's default intrinsics, placed in a
    [68, 2] landmark array (the other landmarks NaN: the estimate must not read them)."""
    focal = (500 * width / 640 + 500 * height / 480) / 2
    camera = GENERIC_FACE_MM @ rotation(*angles).T + np.asarray(translation, np.float64)
    pixels = focal * camera[:, :2] / camera[:, 2:] + np.array([width / 2, height / 2])
    landmarks = np.full((68, 2), np.nan)
    landmarks[list(RIGID_LANDMARKS)] = pixels
    return landmarks


def test_the_camera_is_openfaces_uncalibrated_default():
    assert np.allclose(camera_matrix(640, 480), [[500, 0, 320], [0, 500, 240], [0, 0, 1]])
    # 1280 x 720: fx = 500 * 2 = 1000 and fy = 500 * 1.5 = 750, averaged
    assert np.allclose(camera_matrix(1280, 720), [[875, 0, 640], [0, 875, 360], [0, 0, 1]])


@pytest.mark.parametrize(
    ("angles", "translation", "size"),
    [
        ((0.0, 0.0, 0.0), (0.0, 0.0, 600.0), (640, 480)),
        ((0.25, -0.4, 0.1), (-80.0, 40.0, 500.0), (640, 480)),
        ((-0.3, 0.7, -0.35), (120.0, -60.0, 900.0), (1280, 720)),
        ((0.1, 0.2, 0.6), (10.0, 20.0, 350.0), (320, 240)),
    ],
)
def test_a_projected_pose_is_estimated_back(angles, translation, size):
    pose = head_pose(project(angles, translation, *size), *size)
    assert pose is not None and pose.shape == (6,)
    assert np.allclose(pose[:3], translation, atol=1e-3)  # millimetres
    assert np.allclose(pose[3:], angles, atol=1e-6)  # radians


def test_pixel_noise_moves_the_estimate_a_little():
    rng = np.random.default_rng(3)
    angles, translation = (0.15, -0.3, 0.05), (30.0, -20.0, 600.0)
    errors = []
    for _ in range(50):
        noisy = project(angles, translation, 640, 480) + rng.normal(0, 0.5, (68, 2))
        pose = head_pose(noisy, 640, 480)
        errors.append(np.abs(pose[3:] - angles).max())
    assert np.median(errors) < math.radians(3)


def test_signs_pitch_down_turns_the_nose_tip_down_the_image():
    level = project((0.0, 0.0, 0.0), (0.0, 0.0, 600.0), 640, 480)
    down = project((0.3, 0.0, 0.0), (0.0, 0.0, 600.0), 640, 480)
    assert down[30, 1] - down[36, 1] > level[30, 1] - level[36, 1]  # nose tip lower against the eye corners
    assert head_pose(down, 640, 480)[3] == pytest.approx(0.3, abs=1e-6)


def test_euler_angles_invert_the_composition():
    rng = np.random.default_rng(0)
    for angles in rng.uniform([-1.2, -1.2, -1.2], [1.2, 1.2, 1.2], (20, 3)):
        assert np.allclose(euler_angles(rotation(*angles)), angles, atol=1e-9)


def test_landmarks_that_cannot_give_a_pose():
    landmarks = project((0.0, 0.0, 0.0), (0.0, 0.0, 600.0), 640, 480)
    landmarks[30] = np.nan
    assert head_pose(landmarks, 640, 480) is None
    with pytest.raises(ValueError, match=r"68 landmarks \[68, 2\], got an array of shape \(5, 2\)"):
        head_pose(np.zeros((5, 2)), 640, 480)


def test_add_face_geometry_fills_results_with_landmarks_and_names_a_bad_frame():
    landmarks = project((0.2, 0.1, 0.0), (0.0, 0.0, 500.0), 640, 480)
    landmarks[np.isnan(landmarks)] = 0.0  # the other landmarks: anything finite
    image = np.zeros((480, 640, 3), np.uint8)
    results = [FrameResult("clip.mp4", i, 0.0, True, 0.9, np.zeros(2), 0.0) for i in range(3)]
    kept = KeptFrames(
        {0: (image, {0: Face(image[:8, :8], 0.9, landmarks=landmarks)}), 1: (image, {0: Face(image[:8, :8], 0.9)})}
    )
    add_face_geometry(results, kept)
    assert np.allclose(results[0].pose[3:], (0.2, 0.1, 0.0), atol=1e-6) and results[0].landmarks.shape == (68, 2)
    assert results[1].landmarks is None and results[1].pose is None  # a stage without landmarks
    assert results[2].pose is None  # no frame kept
    kept.frames[2] = (image, {0: Face(image[:8, :8], 0.9, landmarks=np.zeros((5, 2)))})
    with pytest.raises(DataError, match=r"clip.mp4: frame 3: the face stage gave landmarks of shape \(5, 2\)"):
        add_face_geometry(results, kept)
