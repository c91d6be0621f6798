"""Head pose from the 68 facial landmarks, in OpenFace's units and angle convention.

- Model: GENERIC_FACE_MM, a generic adult face written for this project from round anthropometric figures (outer
  eye corners 90 mm apart, inner 32 mm, nose tip about 44 mm in front of the outer corners); not fitted to any
  data set and the same for every face. Only rigid landmarks are used (RIGID_LANDMARKS: the nose and the eye
  corners): brows, lids, lips and jaw move with the very AUs being measured.
- Model axes: x towards the image's right for a face looking at the camera, y down, z away from the camera;
  origin midway between the outer eye corners, so a frontal face has rotation 0.
- Camera: OpenFace's default when it is given no calibration, f = (500 W / 640 + 500 H / 480) / 2 pixels for a
  W x H frame, principal point at the image centre, no lens distortion.
- Output [6]: pose_Tx, pose_Ty, pose_Tz, the model origin in camera coordinates in millimetres (x right, y down,
  z forward), and pose_Rx, pose_Ry, pose_Rz in radians with R = Rx(pose_Rx) Ry(pose_Ry) Rz(pose_Rz) taking model
  into camera coordinates, OpenFace's composition (pitch, yaw, roll).
The translation scales with the assumed face size: a face 10% larger than the model reads 10% farther away.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from ks_runtime.core.errors import DataError
from ks_runtime.core.results import FrameResult, KeptFrames

LANDMARKS = 68
# iBUG 300-W indices: 27-30 the nose bridge down to its tip, 31-35 the nostrils' base (image-left first),
# 36 and 39 the image-left eye's outer and inner corners, 42 and 45 the image-right eye's inner and outer corners.
RIGID_LANDMARKS = (27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 39, 42, 45)
GENERIC_FACE_MM = np.array(
    [
        [0.0, -3.0, -20.0],  # 27 top of the nose bridge
        [0.0, 10.7, -28.0],  # 28
        [0.0, 24.3, -36.0],  # 29
        [0.0, 38.0, -44.0],  # 30 nose tip
        [-14.0, 44.0, -22.0],  # 31 nostril base, image-left side
        [-7.0, 46.0, -25.0],  # 32
        [0.0, 47.0, -27.0],  # 33 below the tip
        [7.0, 46.0, -25.0],  # 34
        [14.0, 44.0, -22.0],  # 35
        [-45.0, 0.0, 0.0],  # 36 image-left eye, outer corner
        [-16.0, 2.0, -10.0],  # 39 image-left eye, inner corner
        [16.0, 2.0, -10.0],  # 42 image-right eye, inner corner
        [45.0, 0.0, 0.0],  # 45 image-right eye, outer corner
    ]
)
OUTER_EYE_CORNERS_MM = 90.0


def camera_matrix(width: int, height: int) -> np.ndarray:
    """OpenFace's camera when uncalibrated: one focal length from the frame size, principal point at the centre."""
    focal = (500.0 * width / 640.0 + 500.0 * height / 480.0) / 2.0
    return np.array([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])


def euler_angles(rotation: np.ndarray) -> np.ndarray:
    """(Rx, Ry, Rz) in radians with rotation = Rx @ Ry @ Rz (OpenFace's order): R[0, 2] = sin Ry,
    R[1, 2] = -sin Rx cos Ry, R[2, 2] = cos Rx cos Ry, R[0, 1] = -cos Ry sin Rz, R[0, 0] = cos Ry cos Rz."""
    r = np.asarray(rotation, np.float64)
    yaw = math.asin(float(np.clip(r[0, 2], -1.0, 1.0)))
    return np.array([math.atan2(-r[1, 2], r[2, 2]), yaw, math.atan2(-r[0, 1], r[0, 0])])


def head_pose(landmarks: np.ndarray, width: int, height: int) -> np.ndarray | None:
    """[pose_Tx, pose_Ty, pose_Tz (mm), pose_Rx, pose_Ry, pose_Rz (rad)] of 68 landmarks [68, 2] in a W x H frame,
    by cv2.solvePnP on the rigid landmarks; None when the landmarks are not finite or no pose puts the face in
    front of the camera."""
    points = np.asarray(landmarks, np.float64)
    if points.shape != (LANDMARKS, 2):
        raise ValueError(f"head pose needs {LANDMARKS} landmarks [68, 2], got an array of shape {points.shape}")
    image = np.ascontiguousarray(points[list(RIGID_LANDMARKS)])
    if not np.isfinite(image).all():
        return None
    camera = camera_matrix(width, height)
    # Start from a frontal face at the distance its eye corners imply: iterating from there, not from the DLT's
    # guess, keeps the solver off the mirrored pose that a shallow point set also fits.
    eye_px = float(np.linalg.norm(points[45] - points[36]))
    if eye_px < 1.0:
        return None
    depth = camera[0, 0] * OUTER_EYE_CORNERS_MM / eye_px
    centre = (points[36] + points[45]) / 2
    tvec = np.array(
        [
            [(centre[0] - camera[0, 2]) * depth / camera[0, 0]],
            [(centre[1] - camera[1, 2]) * depth / camera[1, 1]],
            [depth],
        ]
    )
    rvec = np.zeros((3, 1))
    ok, rvec, tvec = cv2.solvePnP(GENERIC_FACE_MM, image, camera, None, rvec, tvec, True, cv2.SOLVEPNP_ITERATIVE)
    if not ok or not np.isfinite(tvec).all() or tvec[2, 0] <= 0:
        return None
    return np.concatenate([tvec.ravel(), euler_angles(cv2.Rodrigues(rvec)[0])])


def add_face_geometry(results: Sequence[FrameResult], kept: KeptFrames) -> None:
    """Give each result with a face its landmarks and head pose, from its frame and Face kept by a FrameTap;
    results whose face stage has no landmarks are left as they are."""
    for result in results:
        frame = kept.face(result)
        if not result.success or frame is None or frame[1].landmarks is None:
            continue
        image, face = frame
        landmarks = np.asarray(face.landmarks, np.float64)
        if landmarks.shape != (LANDMARKS, 2):
            raise DataError(
                f"{result.source}: frame {result.frame}: the face stage gave landmarks of shape {landmarks.shape}, "
                f"not ({LANDMARKS}, 2)"
            )
        result.landmarks = landmarks
        result.pose = head_pose(landmarks, image.shape[1], image.shape[0])
