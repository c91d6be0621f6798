import numpy as np
import pytest

from ks_runtime.core.preprocess import Preprocess
from ks_train.data.augment import AugmentConfig, apply_clip_augment, draw_clip_augment
from ks_train.data.base import VideoSequence
from ks_train.data.clips import ClipBatchBuilder
from ks_train.data.sampling import ClipBatches, build_sparse_index, clip_frames, every_k_from_ratio, sparse_label_mask


def make_sequences(lengths, size=16, n_aus=3):
    """Each sequence's frames are filled with its own index, so a clip's source is visible in its pixels."""
    rng = np.random.default_rng(0)
    return [
        VideoSequence(
            f"S{i}",
            "T1",
            rng.integers(0, 2, (n, n_aus)).astype(np.int8),
            np.arange(n),
            frames=np.full((n, size, size, 3), 10 * (i + 1), np.uint8),
        )
        for i, n in enumerate(lengths)
    ]


def test_label_ratio_keeps_that_share_of_frames():
    assert every_k_from_ratio(0.1) == 10 and every_k_from_ratio(1.0) == 1 and every_k_from_ratio(0.3) == 3
    index = build_sparse_index([300, 250, 123], every_k=10, seed=3)
    assert abs(index.n_labelled / 673 - 0.1) < 0.01
    mask = sparse_label_mask(25, 5, offset=2)
    assert list(np.flatnonzero(mask)) == [2, 7, 12, 17, 22]
    with pytest.raises(ValueError):
        every_k_from_ratio(0)


def test_clips_clamp_inside_their_sequence():
    np.testing.assert_array_equal(clip_frames(1, 4, 5, 10), [0, 0, 0, 0, 1])
    np.testing.assert_array_equal(clip_frames(9, 0, 5, 10), [9, 9, 9, 9, 9])
    np.testing.assert_array_equal(clip_frames(5, 2, 5, 10), [3, 4, 5, 6, 7])


def test_a_strided_clip_spaces_its_slots_and_its_unlabelled_clips_stay_unlabelled():
    np.testing.assert_array_equal(clip_frames(20, 1, 5, 60, stride=7), [13, 20, 27, 34, 41])
    np.testing.assert_array_equal(clip_frames(3, 2, 5, 60, stride=4), [0, 0, 3, 7, 11])
    index = build_sparse_index([300], every_k=10)
    batches = ClipBatches(index, n=5, batch_size=4, unlabelled_per_batch=2, stride=3)
    for b in batches.epoch(np.random.default_rng(0), with_unlabelled=True):
        for item in b:
            kept = index.masks[0][clip_frames(item.key, item.slot, 5, 300, stride=3)]
            assert kept[item.slot] == item.labelled and (item.labelled or not kept.any())


def test_slots_are_balanced_and_follow_the_batch_index():
    index = build_sparse_index([200, 200], every_k=4)
    batches = ClipBatches(index, n=5, batch_size=3)
    epoch = list(batches.epoch(np.random.default_rng(0), with_unlabelled=False, first_batch=7))
    slots = [b[0].slot for b in epoch]
    assert slots[:5] == [2, 3, 4, 0, 1]
    assert all(len({item.slot for item in b}) == 1 for b in epoch)
    counts = np.bincount(slots[: len(slots) // 5 * 5], minlength=5)
    assert counts.min() == counts.max()


def test_an_epoch_longer_than_a_pass_cycles_every_labelled_clip_equally():
    index = build_sparse_index([60, 40], every_k=5)  # 20 labelled frames: 5 batches of 4 a pass
    batches = ClipBatches(index, n=5, batch_size=4)
    epoch = list(batches.epoch(np.random.default_rng(0), with_unlabelled=False, count=15))
    assert len(epoch) == 15 and all(len(b) == 4 for b in epoch)
    seen = [(item.sequence, item.key) for b in epoch for item in b]
    assert set(np.unique([str(s) for s in seen], return_counts=True)[1]) == {3}
    first, second = seen[:20], seen[20:40]
    assert sorted(first) == sorted(second) and first != second  # reshuffled, not repeated
    assert [b[0].slot for b in epoch[:6]] == [0, 1, 2, 3, 4, 0]


def test_unlabelled_clips_join_only_when_asked_and_hold_no_kept_label():
    index = build_sparse_index([300], every_k=10)
    batches = ClipBatches(index, n=5, batch_size=4, unlabelled_per_batch=2)
    rng = np.random.default_rng(0)
    assert all(item.labelled for b in batches.epoch(rng, with_unlabelled=False) for item in b)
    for b in batches.epoch(rng, with_unlabelled=True):
        extra = [item for item in b if not item.labelled]
        assert len(extra) == 2
        for item in extra:
            assert not index.masks[0][clip_frames(item.key, item.slot, 5, 300)].any()


def test_a_built_batch_never_mixes_sequences_and_hides_unkept_labels():
    sequences = make_sequences([12, 7, 30])
    index = build_sparse_index([len(s) for s in sequences], every_k=3)
    builder = ClipBatchBuilder(
        sequences, index, n=5, preprocess=Preprocess(size=16, mean=(0, 0, 0), std=(1, 1, 1)), augment=None, seed=0
    )
    items = next(ClipBatches(index, n=5, batch_size=6).epoch(np.random.default_rng(1), with_unlabelled=False))
    batch = builder.build(items, epoch=0, batch=0)
    assert batch.frames.shape == (6, 5, 3, 16, 16)
    for b, item in enumerate(items):
        pixel = 10 * (item.sequence + 1) / 255
        assert np.allclose(batch.frames[b].numpy(), pixel, atol=1e-6)
        positions = clip_frames(item.key, item.slot, 5, len(sequences[item.sequence]))
        kept = index.masks[item.sequence][positions]
        np.testing.assert_array_equal(batch.labelled_slots[b].numpy(), kept)
        assert kept[item.slot]  # the key frame is labelled
        assert (batch.labels[b][~kept] == -1).all()
        np.testing.assert_array_equal(batch.truth[b].numpy(), sequences[item.sequence].labels[positions])


def test_a_strided_batch_loads_the_strided_frames():
    n_frames = 60
    sequence = VideoSequence(
        "S0",
        "T1",
        np.zeros((n_frames, 3), np.int8),
        np.arange(n_frames),
        frames=np.arange(n_frames, dtype=np.uint8)[:, None, None, None].repeat(16, 1).repeat(16, 2).repeat(3, 3),
    )
    index = build_sparse_index([n_frames], every_k=10)
    builder = ClipBatchBuilder(
        [sequence],
        index,
        n=5,
        preprocess=Preprocess(size=16, mean=(0, 0, 0), std=(1, 1, 1)),
        augment=None,
        seed=0,
        stride=10,
    )
    items = next(ClipBatches(index, n=5, batch_size=4, stride=10).epoch(np.random.default_rng(0), False))
    batch = builder.build(items, epoch=0, batch=0)
    for b, item in enumerate(items):
        positions = clip_frames(item.key, item.slot, 5, n_frames, stride=10)
        np.testing.assert_allclose(batch.frames[b, :, 0, 0, 0].numpy(), positions / 255, atol=1e-6)
        inside = item.key + (np.arange(5) - item.slot) * 10 == positions  # not clamped at an edge
        assert batch.labelled_slots[b][inside].all()  # stride = k: every such slot carries a label


def test_augmentation_is_identical_across_a_clip():
    rng = np.random.default_rng(5)
    frame = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    other = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    # Contrast blends with the clip's mean grey, so compare frames one by one without it.
    aug = draw_clip_augment(AugmentConfig(rotate_deg=45, flip_p=1.0, contrast=0.0), rng)
    out = apply_clip_augment(np.stack([frame, other, frame]), aug)
    np.testing.assert_array_equal(out[0], out[2])
    np.testing.assert_array_equal(out[1], apply_clip_augment(other[None], aug)[0])
    assert not np.array_equal(out[0], frame)
    assert aug.flip and -45 <= aug.angle <= 45


def test_augmentation_draws_stay_in_range():
    rng = np.random.default_rng(0)
    draws = [draw_clip_augment(AugmentConfig(), rng) for _ in range(300)]
    assert all(-45 <= d.angle <= 45 and 0.8 <= d.brightness <= 1.2 for d in draws)
    assert 0.4 < np.mean([d.flip for d in draws]) < 0.6


def test_fewer_labelled_frames_than_a_batch_make_one_batch_of_all_of_them(caplog):
    index = build_sparse_index([12], every_k=4)  # 3 labelled frames
    with caplog.at_level("WARNING"):
        batches = ClipBatches(index, n=5, batch_size=32)
    assert "only 3 labelled frames" in caplog.text
    epoch = list(batches.epoch(np.random.default_rng(0), with_unlabelled=False, count=4))
    assert [len(b) for b in epoch] == [3, 3, 3, 3]
