"""ks_runtime/tools/face_eval.py: the face-stage evaluation report."""

from ks_runtime.tools import face_eval


def test_the_face_report_prints_a_row_per_backend(capsys):
    assert face_eval.main(["--sequences", "1", "--frames", "20", "--backends", "haar,dlib"]) == 0
    out = capsys.readouterr().out
    assert "| haar | " in out and "| dlib | " in out and "detection rate" in out


def test_the_pose_sets_score_the_haar_fallback_with_and_without_the_roll_search(capsys):
    args = ["--sequences", "1", "--frames", "8", "--poses", "roll20", "--backends", "haar-noeyes,haar-noeyes-level"]
    assert face_eval.main(args) == 0
    out = capsys.readouterr().out
    assert "| roll20 | haar-noeyes | " in out and "| roll20 | haar-noeyes-level | " in out and "crop roll" in out


def test_an_unknown_pose_is_refused(capsys):
    import pytest

    with pytest.raises(SystemExit):
        face_eval.main(["--poses", "profile90"])
    assert "unknown poses ['profile90']" in capsys.readouterr().err
