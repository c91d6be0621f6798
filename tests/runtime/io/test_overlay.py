"""The overlay (ks_runtime/io/overlay.py, faces/tap.py): the face box, points and AU bars drawn on each frame, the
overlay video beside the CSV from `ks-run` on a raw SynthAU scene video, and the live window refused where there is
no display."""

import cv2
import numpy as np
import pytest

from ks_runtime.cli import main
from ks_runtime.core.errors import ConfigError
from ks_runtime.core.results import Face, FrameResult, KeptFrames
from ks_runtime.faces.tap import FrameTap
from ks_runtime.io.live_view import LiveView, display_problem
from ks_runtime.io.overlay import (
    FACE_COLOUR,
    OFF,
    ON,
    OVERLAY_MIN_HEIGHT,
    PANEL_WIDTH,
    OverlaySink,
    draw_overlay,
    overlay_frames,
)
from ks_runtime.io.table import read_results_csv
from ks_runtime.synth.generate import SynthConfig
from ks_runtime.synth.scene import SceneOptions, read_scene_csv, render_scene_sequence, write_scene_video

COLUMNS = ("AU01", "AU02", "AU12")


def result(probs, success=True, box=(100.0, 80.0, 220.0, 200.0)):
    return FrameResult(
        "0",
        4,
        0.16,
        success,
        0.9 if success else 0.0,
        None if probs is None else np.asarray(probs),
        arrival=0.0,
        final=0.001,
        stream=0 if success else -1,
        box=box if success else None,
    )


def colour_count(image, colour):
    return int(np.all(image == np.array(colour, np.uint8), axis=2).sum())


def test_the_overlay_draws_the_box_points_and_a_bar_per_au():
    frame = np.zeros((240, 320, 3), np.uint8)
    points = np.array([[140.0, 120.0], [180.0, 120.0]])
    face = Face(np.zeros((32, 32, 3), np.uint8), 0.9, (100.0, 80.0, 220.0, 200.0), points)
    low = draw_overlay(frame, result([0.2, 0.6, 0.9]), face, COLUMNS, (0.5, 0.5, 0.5))
    zoom = int(np.ceil(OVERLAY_MIN_HEIGHT / 240))
    assert low.shape == (240 * zoom, 320 * zoom + PANEL_WIDTH, 3)
    assert colour_count(low[:, : 320 * zoom], FACE_COLOUR) > 100  # the box
    x, y = (points[0] + 0.5) * zoom - 0.5
    assert low[int(y), int(x)].tolist() != [0, 0, 0]  # an eye point
    high = draw_overlay(frame, result([0.9, 0.6, 0.9]), face, COLUMNS, (0.5, 0.5, 0.5))
    panel_low, panel_high = low[:, 320 * zoom :], high[:, 320 * zoom :]
    assert colour_count(panel_high, ON) > colour_count(panel_low, ON)  # AU01 crossed its threshold
    assert colour_count(panel_low, OFF) > colour_count(panel_high, OFF) + 100  # and is no longer grey
    empty = draw_overlay(frame, result(None, success=False), None, COLUMNS, (0.5, 0.5, 0.5))
    assert colour_count(empty, FACE_COLOUR) == colour_count(empty, ON) == 0


def test_small_frames_are_scaled_up_so_the_overlay_is_legible():
    canvas = draw_overlay(
        np.zeros((32, 32, 3), np.uint8), result([0.5] * 3, box=(0.0, 0.0, 32.0, 32.0)), None, COLUMNS, (0.5,) * 3
    )
    assert canvas.shape[0] >= OVERLAY_MIN_HEIGHT


def test_the_frame_tap_keeps_frames_until_their_result_comes():
    class Stage:
        preprocess, template, name, max_faces = None, None, "fake", 1

        def __call__(self, image, index):
            return Face(None, 0.0)

    tap = FrameTap(Stage())
    for i in range(5):
        tap(np.full((4, 4, 3), i, np.uint8), i)
    image, faces = tap.take(2)
    assert image[0, 0, 0] == 2 and not faces[0].success
    assert tap.take(1) is None  # older frames went with it
    assert tap.take(4) is not None and tap.take(3) is None


def test_an_unknown_overlay_suffix_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"\.gif"):
        OverlaySink(tmp_path / "x.gif")


def test_the_live_window_is_refused_with_the_reason_where_there_is_no_display(bundle, tmp_path, capsys):
    problem = display_problem()
    if problem is None:
        pytest.skip("this machine has a display and a GUI OpenCV: --show would open a window")
    with pytest.raises(ConfigError, match="--show"):
        LiveView()
    code = main([str(bundle), "--input", "synthau:tiny:S01:T1", "--show", "--csv", str(tmp_path / "x.csv")])
    err = capsys.readouterr().err
    assert code == 1 and problem in err and not (tmp_path / "x.csv").exists()


@pytest.fixture(scope="module")
def scene_video(tmp_path_factory):
    """A raw 320x240 SynthAU scene video (FFV1, lossless) whose face leaves the frame, and its ground truth."""
    cfg = SynthConfig(size="tiny", frames=100, seed=11)
    seq = render_scene_sequence(
        cfg, 0, 0, (320, 240), SceneOptions(face_width_px=(90.0, 120.0), exit_prob=1.0, exit_seconds=0.4)
    )
    return write_scene_video(seq, tmp_path_factory.mktemp("scene") / "scene.mkv")


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_ks_run_on_a_raw_scene_video_writes_a_row_per_frame_and_the_overlay(
    bundle, scene_video, tmp_path, suffix, capsys
):
    video, truth_csv = scene_video
    truth = read_scene_csv(truth_csv)
    overlay = tmp_path / f"overlay{suffix}"
    code = main(
        [
            str(bundle),
            "--input",
            str(video),
            "--csv",
            str(tmp_path / "out.csv"),
            "--overlay",
            str(overlay),
            "--policy",
            "center",
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and f"overlay -> {overlay}" in out
    table = read_results_csv(tmp_path / "out.csv")
    assert table["frame"].tolist() == list(range(1, len(truth.frame) + 1))  # every frame has a row
    success = table["success"].to_numpy() == 1
    assert success[truth.face_visible].mean() > 0.9 and not success[~truth.face_visible].all()
    assert table.loc[~success, "AU01_r"].isna().all() and table.loc[success, "AU01_r"].notna().all()
    capture = cv2.VideoCapture(str(overlay))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, first = capture.read()
    capture.release()
    assert ok and first.shape == (240 * 2, 320 * 2 + PANEL_WIDTH, 3)
    assert abs(count - len(table)) <= 1  # containers' counts may be estimates


def test_a_frame_with_two_faces_is_one_overlay_frame_with_both_boxes():
    frame = np.zeros((240, 320, 3), np.uint8)
    first = result([0.2, 0.6, 0.9], box=(10.0, 10.0, 100.0, 100.0))
    second = result([0.9, 0.9, 0.9], box=(200.0, 100.0, 300.0, 200.0))
    second.face_id = 1
    faces = {0: Face(np.zeros((32, 32, 3), np.uint8), 0.9), 1: Face(np.zeros((32, 32, 3), np.uint8), 0.9, face_id=1)}
    kept = KeptFrames({4: (frame, faces)})
    canvases = list(overlay_frames([first, second], kept, COLUMNS, (0.5, 0.5, 0.5)))
    assert len(canvases) == 1
    canvas = canvases[0]
    alone = draw_overlay(frame, first, faces[0], COLUMNS, (0.5, 0.5, 0.5))

    def green(image, box):  # box-coloured pixels in a box's area (the frame is scaled by 2 to 480 px)
        x0, y0, x1, y1 = (2 * v for v in box)
        area = image[y0 - 3 : y1 + 4, x0 - 3 : x1 + 4].astype(int)
        return int(((area[..., 1] > 150) & (area[..., 0] < 120) & (area[..., 2] < 120)).sum())

    assert green(canvas, (10, 10, 100, 100)) > 100 and green(alone, (10, 10, 100, 100)) > 100
    assert green(canvas, (200, 100, 300, 200)) > 100 and green(alone, (200, 100, 300, 200)) == 0
    # The panel shows the first face's bars: one of three above its threshold, as drawn for that face alone.
    panel = slice(-PANEL_WIDTH, None)
    assert colour_count(canvas[:, panel], ON) == colour_count(alone[:, panel], ON) > 0
