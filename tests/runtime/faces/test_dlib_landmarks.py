"""ks_runtime/faces/dlib.py: each Face carries the 68 landmarks, placed with the track's smoothing so that they agree
with the points the crop was aligned on. dlib itself is replaced by the stand-in of test_cli_openface."""

from types import SimpleNamespace

import numpy as np

from ks_runtime.core.preprocess import Preprocess
from ks_runtime.faces import dlib as face_dlib
from ks_runtime.faces.dlib import five_points
from ks_runtime.faces.registry import create_face_stage
from tests.runtime.test_cli_openface import HEIGHT, WIDTH, Rect, detect_bright_square, true_landmarks


def test_the_landmarks_follow_the_smoothed_track_and_keep_their_shape(monkeypatch):
    start = np.array([95, 55])
    base = true_landmarks() - start  # the landmarks relative to the square's corner

    def predict(grey, rect):  # the landmarks move with the square the detector found
        points = base + [rect.left(), rect.top()]
        return SimpleNamespace(parts=lambda: [SimpleNamespace(x=x, y=y) for x, y in points])

    monkeypatch.setattr(face_dlib, "dlib", SimpleNamespace(rectangle=Rect))
    monkeypatch.setattr(face_dlib, "dlib_missing", lambda: None)
    monkeypatch.setattr(face_dlib, "_models", lambda: (detect_bright_square, predict))
    stage = create_face_stage("dlib", Preprocess(size=32))
    assert stage.landmark_count == 68
    rng = np.random.default_rng(0)
    background = rng.integers(40, 160, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    faces = []
    for t, shift in enumerate([0, 0, 3, 6, 9]):  # still, then moving right 3 px a frame
        frame = background.copy()
        x0, y0 = start + [shift, 0]
        frame[y0 : y0 + 130, x0 : x0 + 130] = 255
        faces.append(stage(frame, t))
    assert np.allclose(faces[0].landmarks, base + start)  # a new track: exactly as measured
    for face in faces:
        assert face.success and face.landmarks.shape == (68, 2)
        # The alignment points are a smoothed, moved copy of the measured five; the landmarks moved the same way.
        assert np.allclose(five_points(face.landmarks), face.points, atol=1e-6)
        assert np.allclose(face.landmarks - face.landmarks[30], base - base[30], atol=1e-6)  # shape kept
    moved = faces[-1].landmarks - (base + start + [9, 0])
    assert np.abs(moved).max() > 0.1  # the smoothing lags the last measurement: the landmarks lag with it
    stage.reset()
    assert stage.track is None and stage.tracks == []
