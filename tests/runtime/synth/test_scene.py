"""SynthAU scene mode (ks_runtime/synth/scene.py) and the generator config it shares with the aligned crops
(generate.py): labels unchanged by rendering, ground truth where the face pixels are, smooth motion, exits,
video and ground-truth files."""

import json

import numpy as np
import pytest

from ks_runtime.core.errors import ConfigError, DataError
from ks_runtime.synth import face, labels, scene
from ks_runtime.synth.generate import (
    GENERATOR_VERSION,
    SynthConfig,
    generate_sequence,
    sequence_inputs,
    sequence_rng,
    task_profiles,
)
from ks_runtime.synth.identity import draw_identity

# Geometry checks want the face unhidden: no occluder, blur or JPEG; pose, lighting and noise stay on.
CLEAN = face.NuisanceStrengths(occlusion_prob=0.0, blur_prob=0.0, jpeg_prob=0.0)
CFG = SynthConfig(size="tiny", frames=40, subjects=3, tasks=2, seed=1, nuisance=CLEAN)
NO_CAMERA = CFG.with_overrides(
    nuisance=face.NuisanceStrengths(
        occlusion_prob=0.0, blur_prob=0.0, jpeg_prob=0.0, noise=0.0, lighting=0.0, colour_cast=0.0
    )
)
SIZE = (320, 240)
OPTIONS = scene.SceneOptions(face_width_px=(60.0, 130.0), exit_prob=0.0)


@pytest.fixture(scope="module")
def scenes() -> list[scene.SceneSequence]:
    return [scene.render_scene_sequence(CFG, s, s % 2, SIZE, OPTIONS) for s in range(3)]


def _luma(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


# --- the generator: config and labels -----------------------------------------------------------------------


def test_config_round_trips_with_nested_strengths_and_version():
    cfg = SynthConfig(
        size="tiny",
        nuisance=face.NuisanceStrengths(blur_prob=0.3, jpeg_quality_min=40.0),
        texture=face.TextureStrengths(crow=0.5, chin=2.0),
        quirk_scale=0.4,
    )
    data = json.loads(json.dumps(cfg.to_dict()))
    assert data["version"] == GENERATOR_VERSION == "2.1"
    assert SynthConfig.from_dict(data) == cfg
    old = {k: v for k, v in data.items() if k not in ("texture", "quirk_scale")}  # a version 1 synthau.json
    assert SynthConfig.from_dict(old).texture == face.TextureStrengths()
    with pytest.raises(TypeError):
        SynthConfig.from_dict({**data, "texture": {"bogus": 1.0}})


@pytest.mark.parametrize("au_set", ["bp4d", "disfa"])
def test_labels_are_the_label_process_alone_whatever_is_rendered(au_set):
    """Rendering draws from its own streams: labels equal the label process run by hand, for any pixel settings."""
    plain = SynthConfig(size="tiny", au_set=au_set, frames=30, seed=5)
    busy = SynthConfig(
        size="tiny",
        au_set=au_set,
        frames=30,
        seed=5,
        quirk_scale=0.0,
        nuisance=face.NuisanceStrengths(occlusion_prob=1.0, blur_prob=0.5),
        texture=face.TextureStrengths(crow=0.0),
    )
    model = labels.label_model(plain.aus)
    for subject, task in ((0, 0), (4, 1)):
        traits = labels.draw_label_traits(model, sequence_rng(plain, subject))
        profile = task_profiles(plain.shape.tasks)[task]
        track = labels.sample_labels(model, traits, profile, 30, sequence_rng(plain, subject, profile + 1000))
        for cfg in (plain, busy):
            for render in (False, True):
                sequence = generate_sequence(cfg, subject, task, render=render)
                np.testing.assert_array_equal(sequence.labels, track.occurrence)
                np.testing.assert_array_equal(sequence.intensity, track.intensity)


def test_quirk_scale_and_texture_reach_the_pixels():
    base = SynthConfig(size="tiny", frames=3, subjects=6, seed=2)
    quirky = [s for s in range(6) if draw_identity(sequence_rng(base, s)).quirks]  # same draws as the generator
    assert quirky
    subject = quirky[0]
    frames = generate_sequence(base, subject, 0).frames
    assert np.any(generate_sequence(base.with_overrides(quirk_scale=0.0), subject, 0).frames != frames)
    smooth = base.with_overrides(texture=face.TextureStrengths(**{f: 0.0 for f in face.TextureStrengths().__dict__}))
    assert np.any(generate_sequence(smooth, subject, 0).frames != frames)
    np.testing.assert_array_equal(generate_sequence(base, subject, 0).frames, frames)  # deterministic


# --- scene mode -----------------------------------------------------------------------------------------------


def test_shapes_labels_and_determinism(scenes):
    for s, seq in enumerate(scenes):
        t = CFG.frames
        assert seq.frames.shape == (t, SIZE[1], SIZE[0], 3) and seq.frames.dtype == np.uint8
        assert seq.face_box.shape == (t, 4) and seq.eyes.shape == (t, 2, 2) and seq.face_visible.shape == (t,)
        reference = generate_sequence(CFG, s, s % 2, render=False)
        np.testing.assert_array_equal(seq.labels, reference.labels)
        assert (seq.subject, seq.task) == (reference.subject, reference.task)
        assert seq.label_columns == tuple(CFG.aus.columns)
        np.testing.assert_allclose(seq.timestamps, np.arange(t) / CFG.fps)
    again = scene.render_scene_sequence(CFG, 1, 1, SIZE, OPTIONS, frame_indices=[0, 17, 39])
    np.testing.assert_array_equal(again.frames, scenes[1].frames[[0, 17, 39]])  # any subset of frames agrees
    np.testing.assert_array_equal(again.face_box, scenes[1].face_box[[0, 17, 39]])
    assert len({int(seq.frames[0].astype(np.int64).sum()) for seq in scenes}) == 3  # backgrounds differ


def test_eye_centres_land_on_the_eyes(scenes):
    for seq in scenes:
        for t in range(0, CFG.frames, 4):
            frame, (x0, y0, x1, y1) = _luma(seq.frames[t]), seq.face_box[t].round().astype(int)
            skin = np.median(frame[max(y0, 0) : y1, max(x0, 0) : x1])
            for x, y in seq.eyes[t]:
                xi, yi = int(round(x)), int(round(y))
                patch = frame[yi - 1 : yi + 2, xi - 1 : xi + 2]
                assert patch.min() < 0.75 * skin, f"{seq.subject} frame {t}: eye centre ({x:.1f}, {y:.1f}) not dark"
            assert seq.eyes[t, 0, 0] < seq.eyes[t, 1, 0]  # image-left eye first


def test_face_box_is_where_the_face_is(monkeypatch):
    """Render the same frames over a black and a white background: pixels that differ are background."""
    plain = [np.zeros((SIZE[1], SIZE[0], 3), np.uint8), np.full((SIZE[1], SIZE[0], 3), 255, np.uint8)]
    renders = []
    for background in plain:
        monkeypatch.setattr(scene, "scene_background", lambda rng, size, bg=background: (bg, "plain"))
        renders.append(scene.render_scene_sequence(NO_CAMERA, 0, 0, SIZE, OPTIONS, frame_indices=[0, 20, 39]))
    foreground = np.all(renders[0].frames == renders[1].frames, axis=-1)  # [T, H, W]
    skin_rgb = np.round(sequence_inputs(NO_CAMERA, 0, 0).identity.skin_rgb)
    skin = np.all(renders[0].frames == skin_rgb, axis=-1)  # plain skin: the face oval and the nose (not the neck)
    for i in range(3):
        x0, y0, x1, y1 = renders[0].face_box[i]
        inside = foreground[i, int(np.ceil(y0)) : int(y1), int(np.ceil(x0)) : int(x1)]
        assert inside.mean() > 0.85  # the box lies on the face (its lower corners touch the neck and jaw)
        ys, xs = np.nonzero(skin[i])
        assert len(xs) > 2000
        in_box = (xs >= x0 - 1) & (xs <= x1 + 1) & (ys >= y0 - 1) & (ys <= y1 + 1)
        assert in_box.mean() > 0.99  # the box contains the face's skin
        eye_row = foreground[i, int(round(renders[0].eyes[i, :, 1].mean()))]
        columns = np.flatnonzero(eye_row)
        assert columns.min() <= x0 + 1 and columns.max() >= x1 - 1  # the face spans the box at the eyes
        assert 50 < x1 - x0 < 140 and 1.0 < (y1 - y0) / (x1 - x0) < 1.6


def test_motion_is_smooth_and_varied(scenes):
    for seq in scenes:
        width = seq.face_box[:, 2] - seq.face_box[:, 0]
        step = np.linalg.norm(np.diff(seq.eyes.mean(1), axis=0), axis=1)
        assert step.max() < 0.08 * width.min()  # no jumps between frames
        assert np.abs(np.diff(np.log(width))).max() < 0.05
        assert np.abs(np.diff(seq.crop_size)).max() < 0.03 * seq.crop_size.min()
        assert seq.face_visible.all()
        assert 55 < width.min() and width.max() < 140
    starts = np.array([seq.crop_centre[0] for seq in scenes])
    assert np.ptp(starts[:, 0]) > 10  # faces start in different places


def test_face_leaves_the_frame_and_comes_back():
    options = scene.SceneOptions(face_width_px=(60.0, 130.0), exit_prob=1.0, exit_seconds=0.6)
    cfg = CFG.with_overrides(frames=120)
    seq = scene.render_scene_sequence(cfg, 0, 0, SIZE, options, frame_indices=range(0, 120, 3))
    gone = ~seq.face_visible
    assert 0 < gone.sum() < len(gone) / 2 and seq.face_visible[0]
    assert np.isnan(seq.face_box[gone]).all() and np.isnan(seq.eyes[gone]).all()
    assert not np.isnan(seq.face_box[~gone]).any()
    runs = np.flatnonzero(np.diff(gone.astype(int)) != 0)
    assert len(runs) <= 2  # one trip out (and back, if it ends in time)


def test_frame_size_checked():
    with pytest.raises(ConfigError, match="frame_size"):
        scene.render_scene_sequence(CFG, 0, 0, (32, 32))


# --- files ----------------------------------------------------------------------------------------------------


def test_lossless_video_and_truth_round_trip(scenes, tmp_path):
    seq = scenes[0]
    video, truth = scene.write_scene_video(seq, tmp_path / "scene.mkv")
    assert truth == tmp_path / "scene.csv" and video.is_file()
    np.testing.assert_array_equal(scene.read_video_frames(video), seq.frames)  # FFV1 is lossless
    read = scene.read_scene_csv(truth)
    assert len(read.frame) == CFG.frames and read.frame.tolist() == list(range(CFG.frames))
    np.testing.assert_allclose(read.face_box, seq.face_box, atol=0.006)
    np.testing.assert_allclose(read.eyes, seq.eyes, atol=0.006)
    np.testing.assert_array_equal(read.face_visible, seq.face_visible)
    np.testing.assert_allclose(read.timestamp, seq.timestamps, atol=1e-4)
    np.testing.assert_array_equal(read.labels, seq.labels)
    assert read.label_columns == seq.label_columns


def test_mp4_video_and_missing_faces_in_the_csv(scenes, tmp_path):
    seq = scenes[1]
    seq.face_visible = seq.face_visible.copy()
    seq.face_box, seq.eyes = seq.face_box.copy(), seq.eyes.copy()
    seq.face_visible[5] = False
    seq.face_box[5], seq.eyes[5] = np.nan, np.nan
    video, truth = scene.write_scene_video(seq, tmp_path / "scene.mp4")
    frames = scene.read_video_frames(video)
    assert frames.shape == seq.frames.shape
    assert np.abs(frames.astype(np.int32) - seq.frames).mean() < 6  # lossy, but the same pictures
    read = scene.read_scene_csv(truth)
    assert not read.face_visible[5] and np.isnan(read.face_box[5]).all() and np.isnan(read.eyes[5]).all()
    with pytest.raises(ConfigError, match="suffix"):
        scene.write_scene_video(seq, tmp_path / "scene.gif")


def test_truth_reader_names_file_and_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("frame,timestamp\n0,0\n")
    with pytest.raises(DataError, match=r"bad.csv: line 1"):
        scene.read_scene_csv(path)
    path.write_text(",".join(scene.GT_COLUMNS) + "\n0,0,1,1,2,3,4,5,6,7,8\n1,0.04,1,1,2,3\n")
    with pytest.raises(DataError, match=r"bad.csv: line 3: 6 fields"):
        scene.read_scene_csv(path)
