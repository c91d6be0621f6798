"""A bundle's provenance (issue 18): a model trained only on SynthAU's drawn faces says so at the start of every run,
once, on stderr (ks-run, Detector) and on the overlay, never in the CSV."""

import logging
import shutil

import cv2
import numpy as np
import pytest

from ks_runtime.cli import main
from ks_runtime.core.bundle import read_manifest
from ks_runtime.core.results import FrameResult
from ks_runtime.detector import Detector
from ks_runtime.io.overlay import NOTE_COLOUR, PANEL_WIDTH, draw_overlay, with_note
from tests.runtime.conftest import synth_frames
from tests.runtime.engine.int8_edit import edit_manifest

SAID = "this model was trained only on SynthAU's drawn faces; its outputs on real faces are not validated"


def with_dataset(bundle, folder, name):
    """A copy of the bundle whose manifest says its model was trained on `name` (None: says nothing)."""
    copy = shutil.copytree(bundle, folder)

    def change(data):
        if name is None:
            data["training"].pop("dataset")
        else:
            data["training"]["dataset"]["name"] = name

    edit_manifest(copy, change)
    return copy


@pytest.fixture()
def synthetic(bundle, tmp_path):
    return with_dataset(bundle, tmp_path / "synthetic", "synthau")


def provenance_records(caplog):
    return [r for r in caplog.records if "trained only on" in r.getMessage()]


def test_the_manifest_says_what_faces_the_model_saw(bundle, synthetic, tmp_path):
    assert read_manifest(synthetic).training_dataset == "synthau"
    assert read_manifest(synthetic).provenance_warning == SAID
    assert read_manifest(bundle).provenance_warning is None  # the test bundle's toy set is no face set we know
    assert read_manifest(with_dataset(bundle, tmp_path / "old", None)).provenance_warning is None


def test_a_detector_says_it_once_before_any_frame(synthetic, caplog):
    with caplog.at_level(logging.WARNING, logger="ks_runtime"):
        detector = Detector(synthetic)
        assert [r.levelno for r in provenance_records(caplog)] == [logging.WARNING]
        assert SAID in caplog.text and str(synthetic) in caplog.text
        Detector(synthetic).detect(synth_frames(4, size=32)[0])  # a report's second detector, a second run
        detector.detect(synth_frames(4, size=32)[0])
    assert len(provenance_records(caplog)) == 1


def test_ks_run_says_it_on_stderr_even_quiet_and_never_in_the_csv(synthetic, tmp_path, capsys, caplog):
    with caplog.at_level(logging.WARNING, logger="ks_runtime"):
        code = main(["-q", str(synthetic), "--input", "synthau:tiny:S01:T1", "--csv", str(tmp_path / "a.csv")])
    assert code == 0 and capsys.readouterr().out == "" and len(provenance_records(caplog)) == 1
    assert "SynthAU" not in (tmp_path / "a.csv").read_text() and "trained" not in (tmp_path / "a.csv").read_text()


def test_the_overlay_says_it_below_every_frame(bundle, synthetic, tmp_path):
    frames = synth_frames(3, size=32)[0]
    heights = {}
    for name, root in (("toy", bundle), ("synthetic", synthetic)):
        Detector(root).detect(frames, overlay=tmp_path / f"{name}.mkv")
        capture = cv2.VideoCapture(str(tmp_path / f"{name}.mkv"))
        heights[name] = [capture.read()[1].shape[0] for _ in range(3)]
        capture.release()
    assert all(s > t for s, t in zip(heights["synthetic"], heights["toy"], strict=True))


def test_the_note_is_wrapped_to_the_overlays_width():
    result = FrameResult("0", 0, 0.0, True, 1.0, np.full(3, 0.5), 0.0, 0.001, 0, (0.0, 0.0, 32.0, 32.0))
    plain = draw_overlay(np.zeros((360, 100, 3), np.uint8), result, None, ("AU01", "AU02", "AU12"), (0.5,) * 3)
    noted = with_note(plain, SAID)
    assert noted.shape[1] == plain.shape[1] == 100 + PANEL_WIDTH and noted.shape[0] > plain.shape[0]
    strip = noted[plain.shape[0] :]
    assert np.array_equal(noted[: plain.shape[0]], plain)
    assert (np.abs(strip.astype(int) - NOTE_COLOUR).sum(axis=2) < 60).any()  # the text, in the note's colour
    assert (strip[:, -8:] == strip[0, -1]).all()  # wrapped: nothing runs off the right edge
