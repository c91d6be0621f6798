"""`ks-run`'s OpenFace outputs end to end: the OpenFace 2 CSV as the default format (`--format ks` still ours), and
`--save-crops` (OpenFace's -simalign). The dlib stage runs on a stand-in for the dlib package (not installed
here): a detector that boxes the bright square of the test video and a predictor that returns known 68 landmarks,
the generic head model projected at a known pose, so the CSV's landmarks and head pose can be checked."""

import json
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from ks_runtime.cli import main
from ks_runtime.core.preprocess import resize_square
from ks_runtime.detector import Detector
from ks_runtime.faces import dlib as face_dlib
from ks_runtime.inputs import SynthAUSource
from ks_runtime.io.head_pose import GENERIC_FACE_MM, RIGID_LANDMARKS, camera_matrix
from ks_runtime.io.table import read_results_csv
from ks_runtime.tools.policy_report import write_lossless_video
from tests.runtime.io.test_head_pose import rotation
from tests.runtime.io.test_openface import PYFEAT_AU_COLUMNS, PYFEAT_LANDMARKS, PYFEAT_POSE, read_openface_like_pyfeat

SPEC = "synthau:tiny:S05:T1"
WIDTH, HEIGHT, FRAMES = 320, 240, 12
ANGLES, TRANSLATION = (0.1, -0.25, 0.05), (5.0, -10.0, 330.0)


def face_points_mm() -> np.ndarray:
    """68 points in the model's frame: the model's rigid ones, eyelids between the eye corners, the mouth corners
    below the nose, and the rest on the chin (only the first ones matter to the stage and the pose)."""
    points = np.tile([0.0, 80.0, -20.0], (68, 1))
    points[list(RIGID_LANDMARKS)] = GENERIC_FACE_MM
    for outer, inner, lids in ((36, 39, (37, 38, 40, 41)), (45, 42, (44, 43, 47, 46))):
        for k, lid in enumerate(lids):
            t = (k % 2 + 1) / 3
            points[lid] = points[outer] + t * (points[inner] - points[outer]) + [0.0, -3.0 if k < 2 else 3.0, 0.0]
    points[48], points[54] = [-25.0, 70.0, -12.0], [25.0, 70.0, -12.0]
    return points


def true_landmarks() -> np.ndarray:
    camera = face_points_mm() @ rotation(*ANGLES).T + np.asarray(TRANSLATION)
    pixels = camera @ camera_matrix(WIDTH, HEIGHT).T
    return pixels[:, :2] / pixels[:, 2:]


class Rect:
    def __init__(self, left, top, right, bottom):
        self.box = (int(left), int(top), int(right), int(bottom))

    def left(self):
        return self.box[0]

    def top(self):
        return self.box[1]

    def right(self):
        return self.box[2]

    def bottom(self):
        return self.box[3]


def detect_bright_square(grey, upsample):
    ys, xs = np.nonzero(grey > 200)
    return [Rect(xs.min(), ys.min(), xs.max(), ys.max())] if len(xs) else []


def predict_landmarks(grey, rect):
    """dlib's predictor returns whole pixels."""
    return SimpleNamespace(
        parts=lambda: [SimpleNamespace(x=int(round(x)), y=int(round(y))) for x, y in true_landmarks()]
    )


@pytest.fixture
def fake_dlib(monkeypatch):
    monkeypatch.setattr(face_dlib, "dlib", SimpleNamespace(rectangle=Rect))
    monkeypatch.setattr(face_dlib, "dlib_missing", lambda: None)
    monkeypatch.setattr(face_dlib, "_models", lambda: (detect_bright_square, predict_landmarks))


@pytest.fixture(scope="module")
def square_video(tmp_path_factory):
    """A textured grey frame with a bright 130 px square (the "face"), still, FRAMES frames."""
    rng = np.random.default_rng(0)
    frame = cv2.GaussianBlur(rng.integers(40, 160, (HEIGHT, WIDTH, 3), dtype=np.uint8), (5, 5), 0)
    frame[55:185, 95:225] = 255
    frame[90:100, 120:140] = frame[90:100, 180:200] = 120  # eyes, so the flow has corners inside the face
    frames = np.repeat(frame[None], FRAMES, axis=0)
    return write_lossless_video(frames, tmp_path_factory.mktemp("square") / "square", 25.0)


def run(argv):
    return main([*argv, "--no-progress"])


def test_the_default_csv_is_openface_2s_and_ks_keeps_ours(bundle, tmp_path, capsys):
    assert run([str(bundle), "--input", SPEC, "--csv", str(tmp_path / "of.csv")]) == 0
    assert run([str(bundle), "--input", SPEC, "--csv", str(tmp_path / "ks.csv"), "--format", "ks"]) == 0
    capsys.readouterr()
    openface = read_openface_like_pyfeat(tmp_path / "of.csv")
    ours = read_results_csv(tmp_path / "ks.csv")
    assert (tmp_path / "of.csv").read_text().startswith("frame, face_id, timestamp, confidence, success, AU01_r")
    assert not set(PYFEAT_LANDMARKS) & set(openface.columns)  # aligned crops: no landmarks, so none written
    assert openface[PYFEAT_AU_COLUMNS].dtypes.map(lambda t: t.kind == "f").all()
    assert len(openface) == len(ours) and "AU01_p" in ours.columns and "AU01_p" not in openface.columns
    for au in ("AU01", "AU12"):
        assert np.allclose(openface[f"{au}_r"], 5 * ours[f"{au}_p"], atol=5e-4)
        assert (openface[f"{au}_c"] == ours[f"{au}_c"]).all()
    assert np.allclose(openface["ks_AU24_r"], 5 * ours["AU24_p"], atol=5e-4)


def test_dlib_landmarks_and_head_pose_reach_the_csv_and_the_crops(bundle, square_video, tmp_path, capsys, fake_dlib):
    crops = tmp_path / "aligned"
    code = run(
        [
            str(bundle),
            "--input",
            str(square_video),
            "--face",
            "dlib",
            "--csv",
            str(tmp_path / "of.csv"),
            "--save-crops",
            str(crops),
            "--json",
        ]  # fmt: skip
    )
    out = capsys.readouterr().out
    summary = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    assert code == 0 and summary["crops"] == str(crops)
    table = read_openface_like_pyfeat(tmp_path / "of.csv")
    assert len(table) == FRAMES and (table["success"] == 1).all()
    truth = true_landmarks()
    assert np.abs(table[[f"x_{i}" for i in range(68)]].to_numpy() - truth[:, 0]).max() < 0.6  # dlib's whole pixels
    assert np.abs(table[[f"y_{i}" for i in range(68)]].to_numpy() - truth[:, 1]).max() < 0.6
    pose = table[PYFEAT_POSE].to_numpy()
    assert np.abs(pose[:, 3:] - ANGLES).max() < 0.05  # radians, from landmarks rounded to whole pixels
    assert np.abs(pose[:, :3] - TRANSLATION).max() < 0.05 * TRANSLATION[2]  # millimetres

    names = sorted(p.name for p in crops.glob("*.png"))
    assert names == [f"frame_det_00_{frame:06d}.png" for frame in range(1, FRAMES + 1)]
    size = Detector(bundle).manifest.preprocess.size
    assert cv2.imread(str(crops / names[0])).shape == (size, size, 3)
    records = [json.loads(line) for line in (crops / "faces.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(1, FRAMES + 1)) and records[0]["file"] == names[0]
    assert np.abs(np.array(records[0]["landmarks"]) - truth).max() < 0.6 and len(records[0]["points"]) == 5
    assert records[0]["pose"]["pose_Rx"] == pytest.approx(table["pose_Rx"][0], abs=1e-3)


def test_the_crops_are_the_pixels_the_network_read(bundle, tmp_path, capsys):
    crops = tmp_path / "out" / "synthau_tiny_S05_T1_aligned"
    assert run([str(bundle), "--input", SPEC, "-out_dir", str(tmp_path / "out"), "-simalign"]) == 0
    assert f"crops -> {crops}" in capsys.readouterr().out  # OpenFace's folder: OUT_DIR/<name>_aligned
    frames = SynthAUSource(SPEC).frames
    saved = cv2.cvtColor(cv2.imread(str(crops / "frame_det_00_000003.png")), cv2.COLOR_BGR2RGB)
    size = Detector(bundle).manifest.preprocess.size
    assert np.array_equal(saved, resize_square(frames[2], size))  # the `aligned` stage's crop, bit for bit
    record = json.loads((crops / "faces.jsonl").read_text().splitlines()[0])
    assert record["landmarks"] is None and record["pose"] is None and record["points"] is None


def test_save_crops_names_one_folder(bundle, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        run([str(bundle), "--input", SPEC, "--input", SPEC, "--save-crops", str(tmp_path / "c")])
    assert exit_.value.code == 2 and "--save-crops DIR names one folder" in capsys.readouterr().err
