import numpy as np
import pytest

from ks_runtime.core.policy import POLICIES, clips_for_frame, dense_clip_indices, key_slots, lookahead


def test_last_is_causal_and_replicates_the_first_frame():
    (clip,) = clips_for_frame(1, None, 5, "last")
    assert clip.key_slot == 4
    assert clip.frames == (0, 0, 0, 0, 1)
    assert max(clip.frames) == 1  # no look-ahead


def test_center_replicates_the_last_frame_at_the_stream_end():
    (clip,) = clips_for_frame(9, 10, 5, "center")
    assert clip.key_slot == 2
    assert clip.frames == (7, 8, 9, 9, 9)


def test_shift_cycles_the_slot_with_the_frame_index():
    slots = [clips_for_frame(t, 100, 5, "shift")[0].key_slot for t in range(10)]
    assert slots == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]
    (clip,) = clips_for_frame(7, 100, 5, "shift")
    assert clip.frames[clip.key_slot] == 7 and clip.frames == (5, 6, 7, 8, 9)


def test_ensemble_holds_frame_t_at_every_slot():
    clips = clips_for_frame(3, 6, 5, "ensemble")
    assert [c.key_slot for c in clips] == [0, 1, 2, 3, 4]
    for clip in clips:
        assert clip.frames[clip.key_slot] == 3
        assert all(0 <= f <= 5 for f in clip.frames)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("length", [1, 3, 11])
@pytest.mark.parametrize("stride", [1, 3])
def test_dense_indices_match_the_scalar_function(policy, length, stride):
    frames, slots = dense_clip_indices(length, 5, policy, stride)
    for t in range(length):
        clips = clips_for_frame(t, length, 5, policy, stride)
        assert [tuple(f) for f in frames[t]] == [c.frames for c in clips]
        assert list(slots[t]) == [c.key_slot for c in clips]
        for k, clip in enumerate(clips):
            assert frames[t, k, clip.key_slot] == t


@pytest.mark.parametrize("stride", [1, 4])
def test_lookahead_is_the_furthest_future_frame_any_clip_needs(stride):
    for policy in POLICIES:  # worst case over the shift cycle
        needed = max(max(max(c.frames) - t for c in clips_for_frame(t, None, 5, policy, stride)) for t in range(50, 55))
        assert lookahead(5, policy, stride) == needed


def test_unknown_policy_and_bad_frames_are_refused():
    with pytest.raises(ValueError, match="unknown key-slot policy"):
        key_slots(0, 5, "middle")
    with pytest.raises(IndexError):
        clips_for_frame(10, 10, 5, "last")
    assert np.array_equal(dense_clip_indices(4, 1, "shift")[0][:, 0, 0], np.arange(4))
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="clip stride must be an integer >= 1"):
            dense_clip_indices(4, 3, "last", bad)
        with pytest.raises(ValueError, match="clip stride"):
            lookahead(3, "last", bad)


@pytest.mark.parametrize("policy", POLICIES)
def test_strided_dense_indices_space_the_slots_around_the_scored_frame(policy):
    frames, slots = dense_clip_indices(30, 5, policy, stride=4)
    for t in (0, 7, 29):
        for k, slot in enumerate(slots[t]):
            expected = np.clip(t + (np.arange(5) - slot) * 4, 0, 29)
            assert list(frames[t, k]) == list(expected) and frames[t, k, slot] == t
