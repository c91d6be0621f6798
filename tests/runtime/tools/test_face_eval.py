"""ks_runtime/tools/face_eval.py: the face-stage evaluation report."""

from ks_runtime.tools import face_eval


def test_the_face_report_prints_a_row_per_backend(capsys):
    assert face_eval.main(["--sequences", "1", "--frames", "20", "--backends", "haar,dlib"]) == 0
    out = capsys.readouterr().out
    assert "| haar | " in out and "| dlib | " in out and "detection rate" in out
