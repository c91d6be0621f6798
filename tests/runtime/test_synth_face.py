"""SynthAU face renderer: shapes, determinism, where each AU acts, identities, nuisances, preview."""

from dataclasses import asdict

import numpy as np
import pytest

from ks_runtime.synth import face

ALL = face.ALL_AUS
OFF = face.NuisanceStrengths(head_pose_deg=0.0, jitter_px=0.0, lighting=0.0, noise=0.0)


def _render(identity, intensities: dict[int, float], size: int = 96, nuisance=None, t: int = 0, seed: int = 0):
    nuisance = nuisance if nuisance is not None else face.still_nuisance(1)
    values = np.array([intensities.get(au, 0.0) for au in ALL])
    return face.render_frame(identity, ALL, values, nuisance, t, size, np.random.default_rng(seed))


def _to_px(c: float, size: int) -> int:
    return int(round((c + 1) * size / 2))


def _region(identity: face.Identity, name: str, size: int) -> np.ndarray:
    """Boolean mask [size, size] of where FACS says an AU acts, from the identity's canonical geometry."""
    i = identity
    brow = i.eye_y - i.brow_height
    boxes = {  # (x0, x1, y0, y1) in canonical units
        "brows": (-1, 1, brow - 0.25, i.eye_y - 0.05),
        "eyes": (-1, 1, i.eye_y - 0.12, i.eye_y + 0.45),  # eyes, lids, cheeks, top of the nasolabial fold
        "midface": (-0.45, 0.45, brow - 0.05, i.mouth_y + 0.05),  # nose, with the brows and upper lip it drags
        "mouth": (-i.mouth_width - 0.15, i.mouth_width + 0.15, i.mouth_y - 0.3, i.mouth_y + 0.2),
        "lower": (-1, 1, i.mouth_y - 0.1, 1),
    }
    x0, x1, y0, y1 = boxes[name]
    mask = np.zeros((size, size), bool)
    mask[_to_px(y0, size):_to_px(y1, size), _to_px(x0, size):_to_px(x1, size)] = True
    return mask


AU_REGION = {1: "brows", 2: "brows", 4: "brows", 6: "eyes", 7: "eyes", 9: "midface", 10: "mouth", 12: "mouth",
             14: "mouth", 15: "mouth", 17: "lower", 23: "mouth", 24: "mouth", 25: "mouth", 26: "lower"}


@pytest.mark.parametrize("size", [64, 96, 128])
def test_frame_shape_and_dtype(size):
    rng = np.random.default_rng(0)
    identity = face.draw_identity(rng)
    track = face.sample_nuisance(5, rng, face.NuisanceStrengths())
    frame = face.render_frame(identity, (1, 12), np.array([3.0, 4.0]), track, 4, size, rng)
    assert frame.shape == (size, size, 3) and frame.dtype == np.uint8
    assert frame.std() > 10  # a face, not a blank image


def test_rendering_is_deterministic_from_the_rng():
    identity = face.draw_identity(np.random.default_rng(3))
    assert identity == face.draw_identity(np.random.default_rng(3))
    track = face.sample_nuisance(10, np.random.default_rng(1), face.NuisanceStrengths())
    a = _render(identity, {6: 2.5, 12: 3.0}, nuisance=track, t=7, seed=5)
    b = _render(identity, {6: 2.5, 12: 3.0}, nuisance=track, t=7, seed=5)
    c = _render(identity, {6: 2.5, 12: 3.0}, nuisance=track, t=7, seed=6)
    np.testing.assert_array_equal(a, b)
    assert np.any(a != c)  # another noise draw


@pytest.mark.parametrize("au", ALL)
def test_each_au_changes_pixels_where_facs_says_it_acts(au):
    identity = face.Identity()  # no quirks, average shape
    size = 96
    neutral = _render(identity, {}, size).astype(np.int32)
    apex = _render(identity, {au: 5.0}, size).astype(np.int32)
    diff = np.abs(apex - neutral).sum(-1)
    mask = _region(identity, AU_REGION[au], size)
    inside, outside = diff[mask], diff[~mask]
    assert inside.sum() > 300, f"AU{au} barely changes its region"
    assert inside.sum() > 0.7 * diff.sum(), f"AU{au} acts mostly outside its region"
    assert inside.mean() > 4 * outside.mean()


@pytest.mark.parametrize("au", ALL)
def test_deformation_grows_with_intensity(au):
    identity = face.Identity()
    neutral = _render(identity, {}).astype(np.int32)
    change = [np.abs(_render(identity, {au: v}).astype(np.int32) - neutral).sum() for v in (1.0, 2.0, 5.0)]
    assert 0 < change[0] < change[1] < change[2]  # subtle but nonzero below 2, clearer at 2, most at 5


def test_intensity_zero_is_the_same_as_an_absent_au():
    identity = face.draw_identity(np.random.default_rng(4))
    track = face.sample_nuisance(3, np.random.default_rng(2), face.NuisanceStrengths())
    listed = face.render_frame(identity, (1, 4, 12), np.array([0.0, 0.0, 3.0]), track, 2, 64, np.random.default_rng(9))
    alone = face.render_frame(identity, (12,), np.array([3.0]), track, 2, 64, np.random.default_rng(9))
    np.testing.assert_array_equal(listed, alone)


def test_bad_au_lists_are_refused():
    identity = face.Identity()
    still = face.still_nuisance(1)
    with pytest.raises(ValueError, match="AU"):
        face.render_frame(identity, (3,), np.array([1.0]), still, 0, 64, np.random.default_rng(0))
    with pytest.raises(ValueError, match="intensity"):
        face.render_frame(identity, (1, 2), np.array([1.0]), still, 0, 64, np.random.default_rng(0))


def test_identities_differ():
    identities = [face.draw_identity(np.random.default_rng(s)) for s in range(6)]
    frames = [_render(idn, {}, 64).astype(np.int32) for idn in identities]
    for i in range(len(frames)):
        for j in range(i + 1, len(frames)):
            assert np.abs(frames[i] - frames[j]).mean() > 3
    assert len({idn.skin_tone for idn in identities}) > 1


def test_identities_vary_in_tone_gain_and_quirks():
    identities = [face.draw_identity(np.random.default_rng(s)) for s in range(200)]
    assert {idn.skin_tone for idn in identities} == set(range(10))
    gains = np.array([idn.gain for idn in identities])
    assert gains.min() < 0.85 and gains.max() > 1.2
    quirky = [idn for idn in identities if idn.quirks]
    assert 0.3 < len(quirky) / len(identities) < 0.95
    mimicked = {au for idn in identities for au in idn.quirks}
    assert {1, 2, 7, 15} <= mimicked


def test_quirk_mimics_its_au_on_a_single_frame():
    base = face.Identity()
    high_brows = face.Identity(rest=tuple(0.5 if au in (1, 2) else 0.0 for au in ALL))
    rest_quirk = _render(high_brows, {}).astype(np.int32)
    raised = _render(base, {1: 2.5, 2: 2.5}).astype(np.int32)
    neutral = _render(base, {}).astype(np.int32)
    mask = _region(base, "brows", 96)
    # The quirky neutral face is much closer to the raised brows than the plain neutral face is.
    assert np.abs(rest_quirk - raised)[mask].sum() < 0.6 * np.abs(neutral - raised)[mask].sum()


def test_nuisance_off_renders_identical_frames_and_noise_only_adds_noise():
    identity = face.draw_identity(np.random.default_rng(8))
    track = face.sample_nuisance(20, np.random.default_rng(0), OFF)
    a = _render(identity, {4: 3.0}, nuisance=track, t=0, seed=1)
    b = _render(identity, {4: 3.0}, nuisance=track, t=19, seed=2)
    np.testing.assert_array_equal(a, b)
    noisy = face.sample_nuisance(20, np.random.default_rng(0), face.NuisanceStrengths(0.0, 0.0, 0.0, 4.0))
    c = _render(identity, {4: 3.0}, nuisance=noisy, t=0, seed=1).astype(np.float64)
    d = _render(identity, {4: 3.0}, nuisance=noisy, t=19, seed=2).astype(np.float64)
    assert 2.5 < np.std(c - a) < 5.5
    assert 2.5 * np.sqrt(2) < np.std(c - d) < 5.5 * np.sqrt(2)


def test_nuisance_strengths_round_trip_through_asdict():
    strengths = face.NuisanceStrengths(head_pose_deg=7.5, jitter_px=0.5, lighting=0.1, noise=2.0)
    assert face.NuisanceStrengths(**asdict(strengths)) == strengths
    assert face.NuisanceStrengths(**asdict(face.NuisanceStrengths())) == face.NuisanceStrengths()


def test_sample_nuisance_is_smooth_and_scaled_by_its_strengths():
    track = face.sample_nuisance(500, np.random.default_rng(0), face.NuisanceStrengths())
    assert len(track) == 500
    for angles in (track.yaw, track.pitch, track.roll):
        assert np.abs(np.diff(angles)).max() < 1.0  # degrees per frame: slow head motion
    poses = [face.sample_nuisance(500, np.random.default_rng(s), face.NuisanceStrengths()).yaw for s in range(20)]
    spread = np.std(np.concatenate(poses))
    assert 4.0 < spread < 15.0  # "about +-15 degrees"
    assert np.std(track.dx) > 0 and np.abs(np.diff(track.dx)).mean() > 0.5 * np.std(track.dx)  # jitter: per frame
    off = face.sample_nuisance(50, np.random.default_rng(0), OFF)
    for values in (off.yaw, off.pitch, off.roll, off.dx, off.dy, off.rotation, off.light_strength):
        np.testing.assert_array_equal(values, 0.0)
    np.testing.assert_array_equal(off.scale, 1.0)
    np.testing.assert_array_equal(off.brightness, 1.0)
    assert off.noise_sd == 0.0


def test_turning_off_one_nuisance_leaves_the_others():
    full = face.sample_nuisance(50, np.random.default_rng(0), face.NuisanceStrengths())
    no_pose = face.sample_nuisance(50, np.random.default_rng(0), face.NuisanceStrengths(head_pose_deg=0.0))
    np.testing.assert_array_equal(full.dx, no_pose.dx)
    np.testing.assert_array_equal(full.light_angle, no_pose.light_angle)


def test_head_pose_moves_the_face():
    identity = face.Identity()
    frontal = face.still_nuisance(1)
    turned = face.still_nuisance(1)
    turned.yaw[:] = 15.0
    g0 = face.face_geometry(identity, ALL, np.zeros(len(ALL)), frontal, 0, 96)
    g1 = face.face_geometry(identity, ALL, np.zeros(len(ALL)), turned, 0, 96)
    assert g0.eye_centres[0, 0] < 48 < g0.eye_centres[1, 0]
    assert abs(g0.eye_centres[:, 1] - g0.eye_centres[:, 1].mean()).max() < 0.5  # level eyes when frontal
    shift = g1.eye_centres[:, 0] - g0.eye_centres[:, 0]
    assert np.all(np.abs(shift) > 2)  # features slide sideways under yaw
    x0, y0, x1, y1 = g0.face_box
    assert 0 <= x0 < g0.eye_centres[0, 0] and g0.eye_centres[1, 0] < x1 <= 96 and y0 < g0.eye_centres[0, 1] < y1
    nose, left_mouth, right_mouth = g0.points5[2], g0.points5[3], g0.points5[4]
    assert g0.eye_centres[:, 1].max() < nose[1] < left_mouth[1] and left_mouth[0] < nose[0] < right_mouth[0]
    image, geometry = face.render_face(identity, ALL, np.zeros(len(ALL)), frontal, 0, 96, np.random.default_rng(0))
    np.testing.assert_allclose(geometry.eye_centres, g0.eye_centres)


def test_au_grid_has_a_row_per_au():
    from ks_runtime.au import get_au_set
    from ks_runtime.synth.preview import au_grid

    size = 64
    grid = au_grid("disfa", size=size, seed=0)
    assert grid.dtype == np.uint8 and grid.shape[2] == 3
    rows = len(get_au_set("disfa"))
    assert grid.shape[0] >= rows * size
