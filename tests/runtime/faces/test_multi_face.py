"""Every face of a frame (issue 18): a tracked stage with max_faces != 1 follows each face with a stable face_id,
a face that leaves and comes back is a new track, max_faces caps the count and says how often it did, and
max_faces 1 keeps the largest face only."""

import numpy as np
import pytest

from ks_runtime.core.errors import ConfigError
from ks_runtime.core.preprocess import Preprocess
from ks_runtime.faces.registry import create_face_stage
from ks_runtime.faces.tracking import Track, distinct_tracks, iou
from ks_runtime.synth.scene import SceneOptions, render_scene_sequence
from ks_runtime.tools.face_eval import EVAL_CONFIG

FRAMES = 60
GONE = range(25, 40)  # frames where the right-hand face is out of the picture


@pytest.fixture(scope="module")
def two_faces():
    """Two 320 x 480 scene videos side by side: 640 x 480 frames with two faces, and each face's true boxes; the
    right-hand face is blanked out for the frames of GONE."""
    config = EVAL_CONFIG.with_overrides(frames=FRAMES)
    options = SceneOptions(face_width_px=(90.0, 130.0), exit_prob=0.0, motion=0.5)
    left, right = (
        render_scene_sequence(config, s, s, (320, 480), options, frame_indices=range(FRAMES)) for s in (0, 1)
    )
    frames = np.concatenate([left.frames, right.frames], axis=2)
    frames[list(GONE), :, 320:] = 128
    boxes = [left.face_box, right.face_box + np.array([320, 0, 320, 0], np.float32)]
    return frames, boxes


def where(face, boxes, t):
    """Which true face (0 left, 1 right) a found face is on, by overlap; -1 for neither."""
    overlaps = [iou(np.asarray(face.box), b[t]) for b in boxes]
    return int(np.argmax(overlaps)) if max(overlaps) > 0.4 else -1


def test_every_face_is_tracked_with_a_stable_face_id_and_a_returning_face_is_new(two_faces):
    frames, boxes = two_faces
    stage = create_face_stage("haar", Preprocess(size=112), max_faces=0)
    found = [stage.faces(frame, t) for t, frame in enumerate(frames)]
    sides: dict[int, set[int]] = {}
    for t, faces in enumerate(found):
        assert [f.face_id for f in faces] == sorted(f.face_id for f in faces)
        for face in faces:
            assert face.crop.shape == (112, 112, 3)
            sides.setdefault(face.face_id, set()).add(where(face, boxes, t))
    # Left face: one id all along; right face: one id before it left, another after it came back.
    assert sides == {0: {0}, 1: {1}, 2: {1}}
    starts = [(f.face_id, f.starts_track) for faces in found for f in faces]
    assert [face_id for face_id, start in starts if start] == [0, 1, 2]  # each track's first face, only it
    present = [len(faces) for faces in found]
    assert sum(n == 2 for t, n in enumerate(present) if t not in GONE) >= 0.9 * (FRAMES - len(GONE))
    assert all(n == 1 for t, n in enumerate(present) if t in GONE[2:])  # gone within two frames of leaving
    assert stage.crowded_frames == 0


def test_max_faces_caps_the_faces_and_counts_the_frames_it_left_out(two_faces):
    frames, boxes = two_faces
    for limit in (1, 2):
        stage = create_face_stage("haar", Preprocess(size=112), max_faces=limit)
        found = [stage.faces(frame, t) for t, frame in enumerate(frames[:20])]
        assert max(len(faces) for faces in found) == limit
        assert (stage.crowded_frames > 0) == (limit == 1)
    # One face: the largest, as `stage(image)` gives it.
    largest = int(np.argmax([(b[0, 2] - b[0, 0]) * (b[0, 3] - b[0, 1]) for b in boxes]))
    single = create_face_stage("haar", Preprocess(size=112), max_faces=1)
    assert where(single.faces(frames[0], 0)[0], boxes, 0) == largest
    with pytest.raises(ConfigError, match="max_faces=-1"):
        create_face_stage("haar", Preprocess(size=112), max_faces=-1)


def test_a_track_that_drifted_onto_another_face_is_dropped_the_older_stays():
    box = np.array([10.0, 10.0, 60.0, 60.0])
    older = Track(box, np.zeros((2, 2)), 0.9, face_id=1)
    drifted = Track(box + 3, np.zeros((2, 2)), 0.9, face_id=4)
    apart = Track(box + 100, np.zeros((2, 2)), 0.9, face_id=2)
    assert [t.face_id for t in distinct_tracks([drifted, apart, older])] == [1, 2]
