"""ks_runtime/io/crops.py (`--save-crops`): a PNG and a JSON record per frame with a face, named as OpenFace names
its aligned faces; none for a frame without one; a folder that cannot be made is refused by name."""

import json

import cv2
import numpy as np
import pytest

from ks_runtime.core.errors import OutputError
from ks_runtime.core.results import NO_FACE, Face, FrameResult, KeptFrames
from ks_runtime.io.crops import CropSink, crop_name


def result(index, face=True):
    return FrameResult(
        "0", index, index / 30, face, 0.9 if face else 0.0, None, 0.0, box=(1, 2, 3, 4) if face else None
    )


def test_each_face_of_a_frame_gets_its_own_crop_named_by_its_face_id(tmp_path):
    rng = np.random.default_rng(1)
    crops = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(2)]
    kept = KeptFrames({0: (None, {0: Face(crops[0], 0.9), 3: Face(crops[1], 0.8, face_id=3)})})
    second = result(0)
    second.face_id = 3
    sink = CropSink(tmp_path / "aligned")
    sink.write([result(0), second], kept)
    sink.close()
    assert sorted(p.name for p in (tmp_path / "aligned").glob("*.png")) == [crop_name(1, 0), crop_name(1, 3)]
    saved = cv2.cvtColor(cv2.imread(str(tmp_path / "aligned" / crop_name(1, 3))), cv2.COLOR_BGR2RGB)
    assert np.array_equal(saved, crops[1])  # face 3's own crop, not face 0's
    records = [json.loads(line) for line in (tmp_path / "aligned" / "faces.jsonl").read_text().splitlines()]
    assert [r["face_id"] for r in records] == [0, 3]


def test_a_crop_and_a_record_per_frame_with_a_face(tmp_path):
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(3)]
    points = np.array([[4.0, 5.0], [10.0, 5.0]])
    kept = KeptFrames(
        {
            0: (None, {0: Face(crops[0], 0.9, (1, 2, 3, 4), points)}),
            1: (None, {0: NO_FACE}),
            2: (None, {0: Face(crops[2], 0.9)}),
        }
    )
    with_pose = result(2)
    with_pose.landmarks, with_pose.pose = np.ones((68, 2)), np.arange(6.0)
    sink = CropSink(tmp_path / "aligned")
    sink.write([result(0), result(1, face=False), with_pose], kept)
    sink.close()
    assert sorted(p.name for p in (tmp_path / "aligned").glob("*.png")) == [crop_name(1), crop_name(3)]
    assert crop_name(12) == "frame_det_00_000012.png"
    saved = cv2.cvtColor(cv2.imread(str(tmp_path / "aligned" / crop_name(1))), cv2.COLOR_BGR2RGB)
    assert np.array_equal(saved, crops[0])  # lossless, RGB as cut
    records = [json.loads(line) for line in (tmp_path / "aligned" / "faces.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records] == [1, 3] and records[0]["points"] == points.tolist()
    assert records[0]["landmarks"] is None and records[1]["landmarks"] == np.ones((68, 2)).tolist()
    assert records[1]["pose"] == {"pose_Tx": 0, "pose_Ty": 1, "pose_Tz": 2, "pose_Rx": 3, "pose_Ry": 4, "pose_Rz": 5}


def test_a_folder_that_cannot_be_made_is_named(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match="file/aligned: cannot make the folder for the aligned crops"):
        CropSink(tmp_path / "file" / "aligned")
