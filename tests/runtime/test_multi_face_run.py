"""Every face through a whole run (issue 18): `max_faces` gives a row per face with its face_id, each face scored
as its own stream (a face's numbers are those of a run that sees it alone), one overlay frame per video frame,
every face of a group picture by default, and a warning when faces were left out."""

import cv2
import numpy as np
import pytest

from ks_runtime.cli import main
from ks_runtime.detector import Detector
from ks_runtime.synth.scene import SceneOptions, render_scene_sequence
from ks_runtime.tools.face_eval import EVAL_CONFIG

FRAMES = 24


@pytest.fixture(scope="module")
def pair():
    """24 frames of two faces side by side (640 x 480), and the left face alone in the same place."""
    config = EVAL_CONFIG.with_overrides(frames=FRAMES)
    options = SceneOptions(face_width_px=(110.0, 130.0), exit_prob=0.0, motion=0.3)
    left, right = (
        render_scene_sequence(config, s, s, (320, 480), options, frame_indices=range(FRAMES)) for s in (0, 1)
    )
    both = np.concatenate([left.frames, right.frames], axis=2)
    alone = np.concatenate([left.frames, np.full_like(right.frames, 128)], axis=2)
    return both, alone


def probs(table):
    return table[[c for c in table.columns if c.endswith("_r")]].to_numpy()


def test_a_row_per_face_each_face_its_own_stream(bundle, pair, tmp_path):
    both, alone = pair
    detector = Detector(bundle, face="haar", max_faces=0)
    table = detector.detect(both, csv_format="openface", overlay=tmp_path / "o.avi")
    assert sorted(set(table["face_id"])) == [0, 1] and len(table) == 2 * FRAMES
    assert table["frame"].tolist() == sorted(table["frame"].tolist())
    assert (detector.summary.frames, detector.summary.faces, detector.summary.streams) == (FRAMES, FRAMES, 2)
    video = cv2.VideoCapture(str(tmp_path / "o.avi"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == FRAMES  # one overlay frame a video frame, both faces on it
    # The left face's numbers do not depend on the other face being there: its own ring and clips.
    left_id = int(table.groupby("face_id")["ks_face_x0"].mean().idxmin())
    single = Detector(bundle, face="haar", max_faces=0).detect(alone, csv_format="openface")
    assert len(single) == FRAMES
    np.testing.assert_allclose(probs(table[table["face_id"] == left_id]), probs(single), atol=1e-5)


def test_a_group_picture_scores_every_face_and_a_video_says_what_it_left_out(bundle, pair, tmp_path, caplog):
    both, _ = pair
    picture = tmp_path / "group.png"
    cv2.imwrite(str(picture), cv2.cvtColor(both[0], cv2.COLOR_RGB2BGR))
    detector = Detector(bundle, face="haar")
    table = detector.detect(picture)  # a picture: every face by default, as OpenFace's FaceLandmarkImg
    assert table["face_id"].tolist() == [0, 1] and table["file"].tolist() == [str(picture)] * 2
    video = detector.detect(both[:6])  # a video: the largest face by default, as OpenFace's FeatureExtraction
    assert (video["face_id"] == 0).all() and len(video) == 6
    assert any("found more faces than --max-faces 1" in w for w in detector.summary.warnings)
    assert any("--max-faces 0 scores every face" in r.getMessage() for r in caplog.records)


def test_the_command_line_takes_max_faces(bundle, pair, tmp_path, capsys):
    both, _ = pair
    picture = tmp_path / "group.png"
    cv2.imwrite(str(picture), cv2.cvtColor(both[0], cv2.COLOR_RGB2BGR))
    out = tmp_path / "one.csv"
    assert (
        main(["--bundle", str(bundle), "-f", str(picture), "--face", "haar", "--max-faces", "1", "--csv", str(out)])
        == 0
    )
    assert out.read_text().count("\n") == 2  # the header and the largest face
    with pytest.raises(SystemExit):
        main(["--bundle", str(bundle), "-f", str(picture), "--max-faces", "-1"])
    assert "--max-faces" in capsys.readouterr().err
