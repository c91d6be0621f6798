"""`--save-crops DIR` (OpenFace's `-simalign`): each aligned face crop the network read, as a PNG, and a JSON Lines
record of each crop with the face's landmarks.

- DIR/frame_det_00_000001.png: the face's face_id (2 digits), then the frame number as the CSV counts it (from 1),
  named as OpenFace names its aligned faces; the crop at the network's input size, exactly the pixels the face
  stage cut (before the network's normalisation).
- DIR/faces.jsonl: one JSON object per crop, in frame order: frame, face_id, timestamp, confidence, file (the PNG's
  name), box ([x0, y0, x1, y1]), points (the points the crop was aligned on: the eye centres, then the nose tip
  and mouth corners when the stage finds them), landmarks (the 68 points, or null for a stage without them) and
  pose (pose_Tx .. pose_Rz, or null); every coordinate in frame pixels.
A frame without a face gets no PNG and no record. Both are written as results come, flushed with each batch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from ks_runtime.core.errors import OutputError
from ks_runtime.core.results import Face, FrameResult, KeptFrames
from ks_runtime.io.openface import POSE_COLUMNS
from ks_runtime.io.table import TextSink

RECORDS = "faces.jsonl"


def crop_name(frame: int, face_id: int = 0) -> str:
    """OpenFace's name for an aligned face: frame_det_<face, 2 digits>_<frame, 6 digits>.png."""
    return f"frame_det_{face_id:02d}_{frame:06d}.png"


def _rounded(values: np.ndarray | Iterable[float] | None, digits: int = 2) -> list | None:
    return None if values is None else np.round(np.asarray(values, np.float64), digits).tolist()


def crop_record(result: FrameResult, face: Face, file: str) -> dict:
    """The JSON record of one saved crop."""
    pose = None if result.pose is None else dict(zip(POSE_COLUMNS, _rounded(result.pose, 4), strict=True))
    return {
        "frame": result.frame,
        "face_id": result.face_id,
        "timestamp": round(result.timestamp, 3),
        "confidence": round(result.confidence, 3),
        "file": file,
        "box": _rounded(result.box),
        "points": _rounded(face.points),
        "landmarks": _rounded(result.landmarks),
        "pose": pose,
    }


class CropSink:
    """Writes each result's aligned crop and its record into a folder (see the module docstring)."""

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(f"{self.folder}: cannot make the folder for the aligned crops: {error}") from None
        self.records = TextSink(self.folder / RECORDS)
        self.crops = 0

    def write(self, results: Iterable[FrameResult], kept: KeptFrames) -> None:
        """Save the crop of every result with a face whose frame a FrameTap kept."""
        lines = []
        for result in results:
            frame = kept.face(result)
            if not result.success or frame is None or frame[1].crop is None:
                continue
            face = frame[1]
            name = crop_name(result.frame, result.face_id)
            if not cv2.imwrite(str(self.folder / name), cv2.cvtColor(face.crop, cv2.COLOR_RGB2BGR)):
                raise OutputError(f"{self.folder / name}: cannot write the aligned crop of frame {result.frame}")
            lines.append(json.dumps(crop_record(result, face, name)))
            self.crops += 1
        self.records.write_lines(lines)

    def close(self) -> None:
        self.records.close()
