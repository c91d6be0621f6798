"""SynthAU face renderer: shapes, determinism, where each AU acts, texture cues, identities, nuisances (pose,
jitter, lighting, blur, JPEG, occlusion), drawing into a scene, the alignment template, preview."""

from dataclasses import asdict, fields, replace

import cv2
import numpy as np
import pytest

from ks_runtime.core.au import get_au_set
from ks_runtime.synth import drawing, face
from ks_runtime.synth.identity import Identity, draw_identity
from ks_runtime.synth.labels import RENDERED_AUS
from ks_runtime.synth.preview import TEXTURE_CUES, au_grid, nuisance_panel, render_preview, scene_panel, texture_panel

ALL = RENDERED_AUS
OFF = face.NuisanceStrengths(
    head_pose_deg=0.0,
    jitter_px=0.0,
    lighting=0.0,
    noise=0.0,
    colour_cast=0.0,
    blur_prob=0.0,
    jpeg_prob=0.0,
    occlusion_prob=0.0,
)


def _render(identity, intensities: dict[int, float], size: int = 96, nuisance=None, t: int = 0, seed: int = 0):
    nuisance = nuisance if nuisance is not None else face.still_nuisance(1)
    values = np.array([intensities.get(au, 0.0) for au in ALL])
    return face.render_frame(identity, ALL, values, nuisance, t, size, np.random.default_rng(seed))


def _to_px(c: float, size: int) -> int:
    return int(round((c + 1) * size / 2))


def _region(identity: Identity, name: str, size: int) -> np.ndarray:
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
    mask[_to_px(y0, size) : _to_px(y1, size), _to_px(x0, size) : _to_px(x1, size)] = True
    return mask


AU_REGION = {
    1: "brows",
    2: "brows",
    4: "brows",
    6: "eyes",
    7: "eyes",
    9: "midface",
    10: "mouth",
    12: "mouth",
    14: "mouth",
    15: "mouth",
    17: "lower",
    23: "mouth",
    24: "mouth",
    25: "mouth",
    26: "lower",
}


@pytest.mark.parametrize("size", [64, 96, 128])
def test_frame_shape_and_dtype(size):
    rng = np.random.default_rng(0)
    identity = draw_identity(rng)
    track = face.sample_nuisance(5, rng, face.NuisanceStrengths())
    frame = face.render_frame(identity, (1, 12), np.array([3.0, 4.0]), track, 4, size, rng)
    assert frame.shape == (size, size, 3) and frame.dtype == np.uint8
    assert frame.std() > 10  # a face, not a blank image


def test_rendering_is_deterministic_from_the_rng():
    identity = draw_identity(np.random.default_rng(3))
    assert identity == draw_identity(np.random.default_rng(3))
    track = face.sample_nuisance(10, np.random.default_rng(1), face.NuisanceStrengths())
    a = _render(identity, {6: 2.5, 12: 3.0}, nuisance=track, t=7, seed=5)
    b = _render(identity, {6: 2.5, 12: 3.0}, nuisance=track, t=7, seed=5)
    c = _render(identity, {6: 2.5, 12: 3.0}, nuisance=track, t=7, seed=6)
    np.testing.assert_array_equal(a, b)
    assert np.any(a != c)  # another noise draw


@pytest.mark.parametrize("au", ALL)
def test_each_au_changes_pixels_where_facs_says_it_acts(au):
    identity = Identity()  # no quirks, average shape
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
    identity = Identity()
    neutral = _render(identity, {}).astype(np.int32)
    change = [np.abs(_render(identity, {au: v}).astype(np.int32) - neutral).sum() for v in (1.0, 2.0, 5.0)]
    assert 0 < change[0] < change[1] < change[2]  # subtle but nonzero below 2, clearer at 2, most at 5


def test_intensity_zero_is_the_same_as_an_absent_au():
    identity = draw_identity(np.random.default_rng(4))
    track = face.sample_nuisance(3, np.random.default_rng(2), face.NuisanceStrengths())
    listed = face.render_frame(identity, (1, 4, 12), np.array([0.0, 0.0, 3.0]), track, 2, 64, np.random.default_rng(9))
    alone = face.render_frame(identity, (12,), np.array([3.0]), track, 2, 64, np.random.default_rng(9))
    np.testing.assert_array_equal(listed, alone)


def test_bad_au_lists_are_refused():
    identity = Identity()
    still = face.still_nuisance(1)
    with pytest.raises(ValueError, match="AU"):
        face.render_frame(identity, (3,), np.array([1.0]), still, 0, 64, np.random.default_rng(0))
    with pytest.raises(ValueError, match="intensity"):
        face.render_frame(identity, (1, 2), np.array([1.0]), still, 0, 64, np.random.default_rng(0))


def test_identities_differ():
    identities = [draw_identity(np.random.default_rng(s)) for s in range(6)]
    frames = [_render(idn, {}, 64).astype(np.int32) for idn in identities]
    for i in range(len(frames)):
        for j in range(i + 1, len(frames)):
            assert np.abs(frames[i] - frames[j]).mean() > 3
    assert len({idn.skin_tone for idn in identities}) > 1


def test_identities_vary_in_tone_gain_and_quirks():
    identities = [draw_identity(np.random.default_rng(s)) for s in range(200)]
    assert {idn.skin_tone for idn in identities} == set(range(10))
    gains = np.array([idn.gain for idn in identities])
    assert gains.min() < 0.85 and gains.max() > 1.2
    quirky = [idn for idn in identities if idn.quirks]
    assert 0.3 < len(quirky) / len(identities) < 0.95
    mimicked = {au for idn in identities for au in idn.quirks}
    assert {1, 2, 7, 15} <= mimicked


def test_quirk_mimics_its_au_on_a_single_frame():
    base = Identity()
    high_brows = Identity(rest=tuple(0.5 if au in (1, 2) else 0.0 for au in ALL))
    rest_quirk = _render(high_brows, {}).astype(np.int32)
    raised = _render(base, {1: 2.5, 2: 2.5}).astype(np.int32)
    neutral = _render(base, {}).astype(np.int32)
    mask = _region(base, "brows", 96)
    # The quirky neutral face is much closer to the raised brows than the plain neutral face is.
    assert np.abs(rest_quirk - raised)[mask].sum() < 0.6 * np.abs(neutral - raised)[mask].sum()


def test_nuisance_off_renders_identical_frames_and_noise_only_adds_noise():
    identity = draw_identity(np.random.default_rng(8))
    track = face.sample_nuisance(20, np.random.default_rng(0), OFF)
    a = _render(identity, {4: 3.0}, nuisance=track, t=0, seed=1)
    b = _render(identity, {4: 3.0}, nuisance=track, t=19, seed=2)
    np.testing.assert_array_equal(a, b)
    noisy = face.sample_nuisance(20, np.random.default_rng(0), replace(OFF, noise=4.0))
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
    turning = face.NuisanceStrengths(head_pose_deg=15.0)
    poses = [face.sample_nuisance(500, np.random.default_rng(s), turning).yaw for s in range(20)]
    spread = np.std(np.concatenate(poses))
    assert 4.0 < spread < 15.0  # "about +-15 degrees"
    assert np.std(track.dx) > 0 and np.abs(np.diff(track.dx)).mean() > 0.5 * np.std(track.dx)  # jitter: per frame
    off = face.sample_nuisance(50, np.random.default_rng(0), OFF)
    for values in (off.yaw, off.pitch, off.roll, off.dx, off.dy, off.rotation, off.light_strength):
        np.testing.assert_array_equal(values, 0.0)
    np.testing.assert_array_equal(off.scale, 1.0)
    np.testing.assert_array_equal(off.brightness, 1.0)
    np.testing.assert_array_equal(off.colour, 1.0)
    np.testing.assert_array_equal(off.blur_sigma, 0.0)
    np.testing.assert_array_equal(off.jpeg_quality, 0)
    assert off.noise_sd == 0.0 and off.occlusion is None


def test_turning_off_one_nuisance_leaves_the_others():
    strengths = face.NuisanceStrengths(occlusion_prob=1.0)
    full = face.sample_nuisance(200, np.random.default_rng(0), strengths)
    for name in ("head_pose_deg", "blur_prob", "jpeg_prob", "occlusion_prob", "colour_cast"):
        less = face.sample_nuisance(200, np.random.default_rng(0), replace(strengths, **{name: 0.0}))
        np.testing.assert_array_equal(full.dx, less.dx)
        np.testing.assert_array_equal(full.light_angle, less.light_angle)
        if name != "blur_prob":
            np.testing.assert_array_equal(full.blur_sigma, less.blur_sigma)
        if name != "jpeg_prob":
            np.testing.assert_array_equal(full.jpeg_quality, less.jpeg_quality)
        if name != "occlusion_prob":
            np.testing.assert_array_equal(full.occlusion.amount, less.occlusion.amount)


def test_head_pose_moves_the_face():
    identity = Identity()
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
    size = 64
    grid = au_grid("disfa", size=size, seed=0)
    assert grid.dtype == np.uint8 and grid.shape[2] == 3
    rows = len(get_au_set("disfa"))
    assert grid.shape[0] >= rows * size


# --- texture cues ---------------------------------------------------------------------------------------------

# TextureStrengths field -> (AU that drives it, canonical box (x0, x1, y0, y1) where it is drawn on Identity();
# x0 > 0 means the box and its mirror image).
CUES = {
    "glabella": (4, (-0.16, 0.16, -0.46, -0.17)),
    "forehead": (1, (-0.6, 0.6, -0.75, -0.3)),
    "crow": (6, (0.28, 0.62, -0.27, -0.05)),
    "lid_bulge": (6, (0.1, 0.45, -0.17, 0.02)),
    "cheek": (6, (0.12, 0.5, -0.12, 0.2)),
    "nose_wrinkle": (9, (-0.12, 0.12, -0.14, 0.04)),
    "nasolabial": (10, (0.08, 0.45, 0.02, 0.52)),
    "dimple": (14, (0.14, 0.38, 0.3, 0.56)),
    "chin": (17, (-0.26, 0.26, 0.46, 0.86)),
    "lip_bulge": (24, (-0.3, 0.3, 0.3, 0.56)),
}


def _box_mask(box: tuple, size: int) -> np.ndarray:
    x0, x1, y0, y1 = box
    mask = np.zeros((size, size), bool)
    mask[_to_px(y0, size) : _to_px(y1, size), _to_px(x0, size) : _to_px(x1, size)] = True
    if x0 > 0:
        mask[_to_px(y0, size) : _to_px(y1, size), _to_px(-x1, size) : _to_px(-x0, size)] = True
    return mask


def test_every_texture_strength_has_a_cue_test():
    assert set(CUES) | {"permanent"} == {f.name for f in fields(face.TextureStrengths)}


@pytest.mark.parametrize("cue", sorted(CUES))
def test_texture_cue_is_where_facs_says_and_strength_zero_turns_it_off(cue):
    au, box = CUES[cue]
    identity = Identity(wrinkles=0.0)  # no standing wrinkles: every texture comes from the AU
    apex = {au: 5.0}
    on = _render(identity, apex).astype(np.int32)
    off = face.render_frame(
        identity,
        ALL,
        np.array([apex.get(a, 0.0) for a in ALL]),
        face.still_nuisance(1),
        0,
        96,
        np.random.default_rng(0),
        face.TextureStrengths(**{cue: 0.0}),
    ).astype(np.int32)
    diff = np.abs(on - off).sum(-1)
    assert diff.sum() > 1500, f"the {cue} cue barely shows"
    assert diff[_box_mask(box, 96)].sum() > 0.95 * diff.sum(), f"the {cue} cue is drawn outside its region"
    # Off means off: the rows this field scales have zero alpha, and a neutral face shows none of them either.
    frame = face._frame(
        identity,
        ALL,
        np.array([apex.get(a, 0.0) for a in ALL]),
        face.still_nuisance(1),
        0,
        96,
        face.TextureStrengths(**{cue: 0.0}),
    )
    rows = [k for k, name in enumerate(face.TEXTURES) if face._TEXTURE_FIELD[name] == cue]
    assert rows and np.all(frame.alphas[rows] == 0)


@pytest.mark.parametrize("cue", ["crow", "glabella", "chin", "nose_wrinkle", "dimple"])
def test_texture_cue_follows_intensity_gain_and_strength(cue):
    au, _ = CUES[cue]
    rows = [k for k, name in enumerate(face.TEXTURES) if face._TEXTURE_FIELD[name] == cue]

    def alpha(identity, intensity, strength=1.0):
        values = np.array([intensity if a == au else 0.0 for a in ALL])
        frame = face._frame(
            identity, ALL, values, face.still_nuisance(1), 0, 96, face.TextureStrengths(**{cue: strength})
        )
        return frame.alphas[rows].max()

    plain, expressive = Identity(wrinkles=0.0), Identity(wrinkles=0.0, gain=1.4)
    assert alpha(plain, 0.0) == 0 < alpha(plain, 1.0) < alpha(plain, 2.5) < alpha(plain, 4.0)
    assert alpha(expressive, 2.0) > alpha(plain, 2.0)
    assert alpha(plain, 2.0, strength=1.5) > alpha(plain, 2.0)


def test_au6_and_au7_differ_in_texture_not_only_in_shape():
    """Real detectors tell AU6 from AU7 by crow's feet and the lid bag; both narrow the eye."""
    identity = Identity(wrinkles=0.0)
    plain = face.TextureStrengths(crow=0.0, lid_bulge=0.0, cheek=0.0)
    for au, expect_texture in ((6, True), (7, False)):
        values = np.array([5.0 if a == au else 0.0 for a in ALL])
        with_tex = _render(identity, {au: 5.0}).astype(np.int32)
        without = face.render_frame(
            identity, ALL, values, face.still_nuisance(1), 0, 96, np.random.default_rng(0), plain
        ).astype(np.int32)
        changed = np.abs(with_tex - without).sum()
        assert (changed > 5000) == expect_texture, f"AU{au}: texture change {changed}"


def test_permanent_wrinkles_follow_their_strength():
    identity = Identity(wrinkles=0.3)
    values = np.zeros(len(ALL))
    a = _render(identity, {}).astype(np.int32)
    b = face.render_frame(
        identity,
        ALL,
        values,
        face.still_nuisance(1),
        0,
        96,
        np.random.default_rng(0),
        face.TextureStrengths(permanent=0.0),
    ).astype(np.int32)
    assert np.abs(a - b).sum() > 1000
    smooth = face.render_frame(
        Identity(wrinkles=0.0), ALL, values, face.still_nuisance(1), 0, 96, np.random.default_rng(0)
    )
    np.testing.assert_array_equal(b, smooth)


# --- blur, JPEG, colour, occlusion ----------------------------------------------------------------------------


def _sharpness(image: np.ndarray) -> float:
    """Gradient energy (blur keeps an edge's total variation but spreads it, lowering its square)."""
    grey = image.astype(np.float64).mean(-1)
    return float((np.diff(grey, axis=0) ** 2).mean() + (np.diff(grey, axis=1) ** 2).mean())


def test_blur_and_jpeg_change_the_image_as_expected():
    identity = draw_identity(np.random.default_rng(2))
    sharp = _render(identity, {12: 3.0})
    for angle in (np.nan, 0.7):  # Gaussian, then motion blur
        track = face.still_nuisance(1)
        track.blur_sigma, track.blur_angle = np.array([1.5]), np.array([angle])
        blurred = _render(identity, {12: 3.0}, nuisance=track)
        assert _sharpness(blurred) < 0.8 * _sharpness(sharp)
        assert np.abs(blurred.astype(np.int32) - sharp).mean() < 8  # the same face, softer
    track = face.still_nuisance(1)
    track.jpeg_quality = np.array([15])
    coded = _render(identity, {12: 3.0}, nuisance=track).astype(np.int32)
    assert 0.5 < np.abs(coded - sharp).mean() < 8
    track.jpeg_quality = np.array([90])
    fine = _render(identity, {12: 3.0}, nuisance=track).astype(np.int32)
    assert np.abs(fine - sharp).mean() < np.abs(coded - sharp).mean()


def test_colour_cast_tints_the_image():
    identity = Identity()
    track = face.still_nuisance(1)
    track.colour = np.array([[1.1, 1.0, 0.9]])
    warm = _render(identity, {}, nuisance=track).astype(np.float64)
    plain = _render(identity, {}).astype(np.float64)
    assert warm[..., 0].mean() > plain[..., 0].mean() + 5 and warm[..., 2].mean() < plain[..., 2].mean() - 5


def test_blur_and_jpeg_tracks_follow_their_probabilities():
    strengths = face.NuisanceStrengths(blur_prob=0.1, jpeg_prob=0.2, jpeg_quality_min=30, jpeg_quality_max=50)
    tracks = [face.sample_nuisance(400, np.random.default_rng(s), strengths) for s in range(10)]
    blur = np.concatenate([t.blur_sigma for t in tracks])
    jpeg = np.concatenate([t.jpeg_quality for t in tracks])
    assert 0.05 < np.mean(blur > 0) < 0.15
    assert 0.15 < np.mean(jpeg > 0) < 0.25
    assert jpeg[jpeg > 0].min() >= 30 and jpeg.max() <= 50
    assert blur.max() <= strengths.blur_px and blur[blur > 0].min() >= 0.5 * strengths.blur_px
    starts = np.sum(np.diff((blur > 0).astype(int)) == 1)
    assert np.sum(blur > 0) / max(starts, 1) > 2  # blur comes in episodes of several frames
    kinds = np.concatenate([t.blur_angle[t.blur_sigma > 0] for t in tracks])
    assert 0.2 < np.mean(np.isnan(kinds)) < 0.8  # both Gaussian and motion blur
    off = face.sample_nuisance(400, np.random.default_rng(0), replace(strengths, blur_prob=0.0, jpeg_prob=0.0))
    assert not off.blur_sigma.any() and not off.jpeg_quality.any()


def test_occlusion_episode_is_rare_smooth_and_lasting():
    strengths = face.NuisanceStrengths(occlusion_prob=0.3, occlusion_seconds=2.0)
    tracks = [face.sample_nuisance(300, np.random.default_rng(s), strengths) for s in range(60)]
    occluded = [t.occlusion for t in tracks if t.occlusion is not None]
    assert 0.12 < len(occluded) / len(tracks) < 0.5
    assert {o.kind for o in occluded} == {"hand", "hair"}
    for occ in occluded:
        present = np.flatnonzero(occ.amount > 0)
        assert len(present) >= 20 and np.all(np.diff(present) == 1)  # one episode, lasting, not flickering
        assert np.abs(np.diff(occ.amount)).max() < 0.3 and occ.amount.max() == pytest.approx(1.0)
    none = face.sample_nuisance(300, np.random.default_rng(0), replace(strengths, occlusion_prob=0.0))
    assert none.occlusion is None


@pytest.mark.parametrize("kind", ["hand", "hair"])
def test_occluder_covers_the_face_while_present(kind):
    identity = draw_identity(np.random.default_rng(4))
    strengths = replace(OFF, occlusion_prob=1.0)
    track = next(
        t
        for s in range(50)
        if (t := face.sample_nuisance(120, np.random.default_rng(s), strengths)).occlusion.kind == kind
    )
    occ = track.occlusion
    peak, absent = int(np.argmax(occ.amount)), int(np.argmin(occ.amount))
    assert occ.amount[absent] == 0
    clean = _render(identity, {}, nuisance=face.still_nuisance(1)).astype(np.int32)
    np.testing.assert_array_equal(_render(identity, {}, nuisance=track, t=absent), clean)
    covered = np.abs(_render(identity, {}, nuisance=track, t=peak).astype(np.int32) - clean).sum(-1) > 30
    face_area = _region(identity, "lower", 96) | _region(identity, "eyes", 96) | _region(identity, "brows", 96)
    assert covered[face_area].mean() > (0.08 if kind == "hand" else 0.01)
    assert covered.mean() < 0.5  # an occluder, not a new image


# --- drawing into a scene, geometry, template -----------------------------------------------------------------


def test_draw_face_into_a_larger_canvas_matches_the_aligned_crop():
    identity = draw_identity(np.random.default_rng(3))
    still = face.still_nuisance(1)
    values = np.zeros(len(ALL))
    values[ALL.index(12)] = 4.0
    size, ox, oy = 96, 57, 83
    crop = face.render_frame(identity, ALL, values, still, 0, size, np.random.default_rng(0))
    canvas = np.zeros((300, 400, 3), np.uint8)
    canvas[oy : oy + size, ox : ox + size] = drawing._background(face._model(identity)[1].background, size)
    geometry = face.draw_face_into(
        canvas, identity, ALL, values, still, 0, size, (size / 2 - 0.5 + ox, size / 2 - 0.5 + oy)
    )
    inner = slice(2, size - 2)  # polygons clipped at the crop's border anti-alias a little differently
    np.testing.assert_array_equal(canvas[oy : oy + size, ox : ox + size][inner, inner], crop[inner, inner])
    aligned = face.face_geometry(identity, ALL, values, still, 0, size)
    np.testing.assert_allclose(geometry.eye_centres, aligned.eye_centres + [ox, oy], atol=1e-9)
    np.testing.assert_allclose(np.array(geometry.face_box), np.array(aligned.face_box) + [ox, oy, ox, oy], atol=1e-9)


def test_alignment_template_is_the_neutral_faces_points_as_crop_fractions():
    template = face.alignment_template()
    assert list(template) == ["left_eye", "right_eye", "nose_tip", "mouth_left", "mouth_right"]
    (lx, ly), (rx, ry) = template["left_eye"], template["right_eye"]
    assert 0.2 < lx < 0.5 < rx < 0.8 and abs(ly - ry) < 1e-9 and 0.3 < ly < 0.5
    assert abs((lx + rx) / 2 - 0.5) < 1e-9  # the canonical face is centred
    for size in (64, 112):
        geometry = face.face_geometry(Identity(), ALL, np.zeros(len(ALL)), face.still_nuisance(1), 0, size)
        np.testing.assert_allclose((geometry.points5 + 0.5) / size, np.array(list(template.values())), atol=1e-9)
    assert template["left_eye"][1] < template["nose_tip"][1] < template["mouth_left"][1]


def test_preview_shows_texture_cues_nuisances_and_a_scene_with_its_truth(tmp_path):
    size = 64
    cues = texture_panel(size)
    assert cues.shape[0] >= len(TEXTURE_CUES) * size and cues.dtype == np.uint8
    assert nuisance_panel(size).shape[1] >= 7 * size
    scenes = scene_panel(frame_size=(320, 240))
    assert scenes.shape[0] == 120
    green = scenes[..., 1].astype(int) - np.maximum(scenes[..., 0], scenes[..., 2])
    assert np.sum(green > 120) > 100  # the true face box is drawn
    page = cv2.imread(str(render_preview(tmp_path / "preview.png", size=size)))
    assert page.shape[0] > cues.shape[0] + scenes.shape[0] + len(TEXTURE_CUES) * size
