"""ks_runtime/stream.py: streamed outputs equal dense testing (clip.onnx) for every policy, batch size and
interleaving; results become final exactly when the policy allows; streams end and restart on faceless frames;
batches wait a bounded time; clips are cut from the ring by kernels.gather_clips."""

import itertools
from dataclasses import replace

import numpy as np
import pytest

from ks_runtime.core import kernels
from ks_runtime.core.errors import ConfigError, DataError
from ks_runtime.core.policy import POLICIES, dense_clip_indices, lookahead
from ks_runtime.core.preprocess import to_network_input
from ks_runtime.core.results import NO_FACE
from ks_runtime.engine.ort_graphs import BundleGraphs
from ks_runtime.faces.base import AlignedFaces
from ks_runtime.io.sources import ArraySource, SourceError, SourceFrame
from ks_runtime.stream import Runner, StreamConfig, StreamScheduler
from tests.runtime.conftest import FakeEngine, fake_dense, synth_frames

TOL = 1e-5


def push_all(streamer, frames, source="a", faces=None, step=True):
    """Push frames one at a time (stepping after each); return every result, flushed at the end."""
    stage = AlignedFaces(streamer.preprocess)
    out = []
    for i, frame in enumerate(frames):
        face = faces[i] if faces is not None and faces[i] is not None else stage(frame, i)
        streamer.push(source, SourceFrame(frame, i / 25, i), face)
        if step:
            out += streamer.step()
    return out + streamer.close()


def clip_dense(graphs: BundleGraphs, frames: np.ndarray, policy: str) -> np.ndarray:
    """The parity reference: clip.onnx on every clip of dense_clip_indices, averaged over a frame's clips."""
    n = graphs.clip_len
    x = to_network_input(frames, graphs.manifest.preprocess)  # (T, 3, S, S)
    index, slots = dense_clip_indices(len(frames), n, policy)  # (T, k, n), (T, k)
    probs = graphs.clip(x[index.reshape(-1, n)], slots.reshape(-1))
    return probs.reshape(len(frames), slots.shape[1], -1).mean(1)


@pytest.fixture(scope="module")
def graphs(bundle):
    return BundleGraphs(bundle)


@pytest.fixture(scope="module")
def ort_engine(bundle):
    from ks_runtime.engine import create_engine

    return create_engine(bundle)


@pytest.fixture(scope="module")
def video():
    return synth_frames(23)[0]


@pytest.mark.parametrize("policy", POLICIES)
def test_streamed_outputs_equal_clip_onnx_run_densely(graphs, ort_engine, video, policy):
    reference = clip_dense(graphs, video, policy)
    for batch in (1, 7):
        streamer = StreamScheduler(
            ort_engine, graphs.manifest.preprocess, StreamConfig(policy, batch_size=batch, head_batch=5)
        )
        results = push_all(streamer, video)
        assert [r.index for r in results] == list(range(len(video)))
        streamed = np.stack([r.probs for r in results])
        assert np.abs(streamed - reference).max() <= TOL, (policy, batch)


@pytest.mark.parametrize("policy", POLICIES)
def test_two_interleaved_streams_each_equal_their_dense_run(graphs, ort_engine, video, policy):
    other = synth_frames(17, subject=1)[0]
    streamer = StreamScheduler(ort_engine, graphs.manifest.preprocess, StreamConfig(policy, batch_size=7))
    stage = AlignedFaces(graphs.manifest.preprocess)
    results = []
    for i, (a, b) in enumerate(itertools.zip_longest(video, other)):
        for key, frame in (("a", a), ("b", b)):
            if frame is not None:
                streamer.push(key, SourceFrame(frame, i / 25, i), stage(frame, i))
        if i == len(other) - 1:
            streamer.end("b")
        results += streamer.step()
    results += streamer.close()
    assert streamer.encoder_batches < (len(video) + len(other)) / 2  # frames of both streams share batches
    for key, frames in (("a", video), ("b", other)):
        mine = [r for r in results if r.source == key]
        assert [r.index for r in mine] == list(range(len(frames)))
        assert np.abs(np.stack([r.probs for r in mine]) - clip_dense(graphs, frames, policy)).max() <= TOL


@pytest.mark.parametrize("policy", POLICIES)
def test_results_become_final_as_soon_as_the_policy_allows(fake_engine, small_preprocess, policy):
    n, frames = fake_engine.clip_len, synth_frames(11, size=16)[0]
    streamer = StreamScheduler(fake_engine, small_preprocess, StreamConfig(policy, batch_size=1))
    stage = AlignedFaces(small_preprocess)
    for t, frame in enumerate(frames):
        streamer.push("a", SourceFrame(frame, t / 25, t), stage(frame, t))
        final = [r.index for r in streamer.step(force=True)]
        if policy == "shift":  # a frame waits for the end of the clip that holds it at slot t % n
            expected = list(range(t - n + 1, t + 1)) if t % n == n - 1 else []
        else:
            expected = [t - lookahead(n, policy)] if t >= lookahead(n, policy) else []
        assert final == expected, (policy, t)
    tail = [r.index for r in streamer.close()]
    assert tail == list(range(len(frames) - len(tail), len(frames)))


@pytest.mark.parametrize("policy", POLICIES)
def test_a_faceless_frame_ends_the_stream_and_the_next_face_starts_one(fake_engine, small_preprocess, policy):
    frames = synth_frames(20, size=16)[0]
    gap = range(8, 11)
    faces = [NO_FACE if i in gap else None for i in range(len(frames))]
    results = push_all(
        StreamScheduler(fake_engine, small_preprocess, StreamConfig(policy, batch_size=4)), frames, faces=faces
    )
    assert [r.index for r in results] == list(range(len(frames)))
    for r in results:
        assert (r.probs is None) == (r.index in gap) and r.success == (r.index not in gap)
    assert {r.stream for r in results} == {-1, 0, 1}
    # each run of faces is its own stream, edge-padded at both ends, as if it were a whole video
    for stream, part in ((0, frames[:8]), (1, frames[11:])):
        got = np.stack([r.probs for r in results if r.stream == stream])
        assert np.abs(got - fake_dense(fake_engine, part, small_preprocess, policy)).max() <= 1e-6


@pytest.mark.parametrize("policy", POLICIES)
def test_a_strided_model_streams_its_dense_clips(small_preprocess, policy):
    """A model trained with clip_stride S: every frame's clip(s) take slots S frames apart, the ring holds the
    clip's reach, and the streamed outputs equal dense testing, across a faceless gap and ring wrap-around."""
    engine = FakeEngine(n=3, stride=4)
    frames = synth_frames(40, size=16)[0]
    gap = range(30, 32)
    faces = [NO_FACE if i in gap else None for i in range(len(frames))]
    for batch in (1, 5):
        streamer = StreamScheduler(engine, small_preprocess, StreamConfig(policy, batch_size=batch))
        assert streamer.ring_rows < 30  # the first stream wraps the ring
        results = push_all(streamer, frames, faces=faces)
        assert [r.index for r in results] == list(range(len(frames)))
        for stream, part in ((0, frames[:30]), (1, frames[32:])):
            got = np.stack([r.probs for r in results if r.stream == stream])
            assert np.abs(got - fake_dense(engine, part, small_preprocess, policy)).max() <= 1e-6, (policy, batch)
    adjacent = fake_dense(FakeEngine(n=3), frames[:30], small_preprocess, policy)
    assert np.abs(fake_dense(engine, frames[:30], small_preprocess, policy) - adjacent).max() > 1e-3


@pytest.mark.parametrize("policy", POLICIES)
def test_a_strided_model_finalises_once_its_farthest_slot_is_encoded(small_preprocess, policy):
    n, stride = 3, 4
    engine = FakeEngine(n=n, stride=stride)
    frames = synth_frames(30, size=16)[0]
    # The frame each frame waits for, written out per policy: the clip holding t at slot m ends (n-1-m)*S later.
    reach = {
        "last": lambda t: t,
        "center": lambda t: t + (n - 1 - n // 2) * stride,
        "shift": lambda t: t + (n - 1 - t % n) * stride,
        "ensemble": lambda t: t + (n - 1) * stride,
    }[policy]
    streamer = StreamScheduler(engine, small_preprocess, StreamConfig(policy, batch_size=1))
    stage = AlignedFaces(small_preprocess)
    done = 0
    for t, frame in enumerate(frames):
        streamer.push("a", SourceFrame(frame, t / 25, t), stage(frame, t))
        final = [r.index for r in streamer.step(force=True)]
        ready = done
        while ready < len(frames) and max(reach(v) for v in range(ready + 1)) <= t:
            ready += 1
        assert final == list(range(done, ready)), (policy, t)
        done = ready
    assert lookahead(n, policy, stride) == max(reach(t) - t for t in range(n))


def test_clips_are_cut_from_the_ring_by_ops_gather_clips(fake_engine, small_preprocess, monkeypatch):
    calls, original = [], kernels.gather_clips

    def spy(*args, **kwargs):
        calls.append(args[0].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(kernels, "gather_clips", spy)
    frames = synth_frames(30, size=16)[0]
    streamer = StreamScheduler(fake_engine, small_preprocess, StreamConfig("ensemble", batch_size=4))
    results = push_all(streamer, frames)
    assert len(results) == 30 and calls
    assert all(shape[0] == streamer.ring_rows < 30 for shape in calls)  # a ring, not the whole video
    dense = fake_dense(fake_engine, frames, small_preprocess, "ensemble")
    assert np.abs(np.stack([r.probs for r in results]) - dense).max() <= 1e-6


def test_an_encoder_batch_waits_at_most_max_wait(fake_engine, small_preprocess):
    now = [0.0]
    streamer = StreamScheduler(
        fake_engine, small_preprocess, StreamConfig(batch_size=4, max_wait_ms=10.0), clock=lambda: now[0]
    )
    frame = synth_frames(2, size=16)[0][0]
    streamer.push("a", SourceFrame(frame, 0.0, 0), AlignedFaces(small_preprocess)(frame, 0))
    now[0] = 0.009
    assert not streamer.due() and streamer.step() == []
    assert streamer.due(feeding={"a"})  # the only source has a frame waiting: nothing would fill the batch
    assert not streamer.due(feeding={"a", "b"})
    now[0] = 0.011
    assert streamer.due()
    results = streamer.step()
    assert [r.index for r in results] == [0] and results[0].latency == pytest.approx(0.011)
    for i in range(4):
        streamer.push("a", SourceFrame(frame, i, i + 1), AlignedFaces(small_preprocess)(frame, i))
    assert streamer.due()  # a full batch goes at once


def test_runner_batches_two_sources_and_keeps_each_in_order(fake_engine, small_preprocess):
    a, b = synth_frames(25, size=16)[0], synth_frames(19, size=16, subject=1)[0]
    streamer = StreamScheduler(fake_engine, small_preprocess, StreamConfig("center", batch_size=6, queue_size=4))
    stage = AlignedFaces(small_preprocess)
    results = [
        r
        for batch in Runner(streamer).run(
            {"a": (ArraySource(a, fps=25), stage), "b": (ArraySource(b, fps=25), AlignedFaces(small_preprocess))}
        )
        for r in batch
    ]
    for key, frames in (("a", a), ("b", b)):
        mine = [r for r in results if r.source == key]
        assert [r.index for r in mine] == list(range(len(frames)))
        assert (
            np.abs(
                np.stack([r.probs for r in mine]) - fake_dense(fake_engine, frames, small_preprocess, "center")
            ).max()
            <= 1e-6
        )
    assert max(fake_engine.batches) > 1


def test_a_source_error_is_raised_after_every_frame_read_before_it(fake_engine, small_preprocess):
    frames = synth_frames(9, size=16)[0]

    def broken():
        yield from frames[:6]
        raise SourceError("clip.avi: frame 6 cannot be decoded")

    streamer = StreamScheduler(fake_engine, small_preprocess, StreamConfig("ensemble", batch_size=4))
    seen = []
    with pytest.raises(SourceError, match="frame 6"):
        for batch in Runner(streamer).run({"a": (ArraySource(broken(), fps=25), AlignedFaces(small_preprocess))}):
            seen += batch
    assert [r.index for r in seen] == list(range(6))
    dense = fake_dense(fake_engine, frames[:6], small_preprocess, "ensemble")
    assert np.abs(np.stack([r.probs for r in seen]) - dense).max() <= 1e-6


@pytest.mark.parametrize("bad", [{"policy": "middle"}, {"batch_size": 0}, {"max_wait_ms": -1.0}, {"queue_size": 0}])
def test_stream_config_refuses_bad_values(bad):
    with pytest.raises(ConfigError):
        StreamConfig(**bad)


def test_a_crop_of_the_wrong_size_is_refused_naming_the_frame(fake_engine, small_preprocess):
    from ks_runtime.core.errors import DataError
    from ks_runtime.core.results import Face

    streamer = StreamScheduler(fake_engine, small_preprocess)
    with pytest.raises(DataError, match="frame 4"):
        streamer.push("a", SourceFrame(np.zeros((8, 8, 3), np.uint8), 0.0, 4), Face(np.zeros((8, 8, 3), np.uint8), 1))
    # the refused frame left nothing behind: the stream still closes cleanly
    streamer.close()


def test_fake_engine_is_a_faithful_reference():
    # the dense reference itself depends on the frames' order and the slot (else the tests above prove little)
    engine = FakeEngine()
    from ks_runtime.core.preprocess import Preprocess

    frames = synth_frames(9, size=16)[0]
    pre = Preprocess(size=16)
    assert not np.allclose(fake_dense(engine, frames, pre, "last"), fake_dense(engine, frames, pre, "center"))
    assert not np.allclose(fake_dense(engine, frames, pre, "last"), fake_dense(engine, frames[::-1], pre, "last")[::-1])


def test_the_numpy_fallback_of_ops_streams_the_same_numbers(fake_engine, small_preprocess, monkeypatch):
    frames = synth_frames(17, size=16)[0]
    built = push_all(StreamScheduler(fake_engine, small_preprocess, StreamConfig("ensemble", batch_size=5)), frames)
    monkeypatch.setattr(kernels, "_CPP_EXT", None)  # as when cpp_ext is not built
    fallback = push_all(StreamScheduler(fake_engine, small_preprocess, StreamConfig("ensemble", batch_size=5)), frames)
    assert np.abs(np.stack([r.probs for r in built]) - np.stack([r.probs for r in fallback])).max() <= 1e-6


@pytest.mark.parametrize("policy", POLICIES)
def test_each_face_of_a_source_is_its_own_stream_equal_to_its_dense_run(fake_engine, small_preprocess, policy):
    """Two faces in one source: each gets its own ring and clips (a clip never mixes faces), a face that leaves
    ends its stream, and one that comes back under a new face_id starts a new one; rows in frame order, a
    frame's faces by face_id."""
    first, second = synth_frames(20, size=16)[0], synth_frames(20, size=16, subject=1)[0]
    streamer = StreamScheduler(fake_engine, small_preprocess, StreamConfig(policy, batch_size=3))
    stage = AlignedFaces(small_preprocess)
    results = []
    for t in range(20):
        faces = [stage(first[t], t)]
        if t < 12 or t >= 15:  # the second face leaves for three frames and comes back as face 2
            faces.append(replace(stage(second[t], t), face_id=1 if t < 12 else 2))
        streamer.push_faces("a", SourceFrame(first[t], t / 25, t), faces)
        results += streamer.step()
    results += streamer.close()
    assert [(r.index, r.face_id) for r in results] == sorted((r.index, r.face_id) for r in results)
    assert len(results) == 20 + 12 + 5
    for face_id, part in ((0, first), (1, second[:12]), (2, second[15:])):
        mine = [r for r in results if r.face_id == face_id]
        assert len({r.stream for r in mine}) == 1
        got = np.stack([r.probs for r in mine])
        assert np.abs(got - fake_dense(fake_engine, part, small_preprocess, policy)).max() <= 1e-6, face_id


def test_a_frame_without_faces_ends_every_face_and_gets_one_row(fake_engine, small_preprocess):
    frames = synth_frames(6, size=16)[0]
    streamer = StreamScheduler(fake_engine, small_preprocess, StreamConfig("last", batch_size=2))
    stage = AlignedFaces(small_preprocess)
    rows = streamer.push_faces(
        "a", SourceFrame(frames[0], 0.0, 0), [stage(frames[0], 0), replace(stage(frames[1], 0), face_id=1)]
    )
    rows += streamer.push_faces("a", SourceFrame(frames[2], 0.04, 1), [])
    streamer.close()
    assert [(r.index, r.face_id, r.success) for r in rows] == [(0, 0, True), (0, 1, True), (1, 0, False)]
    with pytest.raises(DataError, match="frame 2: the face stage gave two faces the same face_id"):
        streamer.push_faces("a", SourceFrame(frames[3], 0.08, 2), [stage(frames[3], 2), stage(frames[4], 2)])


def test_a_frames_faces_come_out_together_whatever_the_batches(fake_engine, small_preprocess):
    """Batches of 2 across frames of 3 faces end inside a frame; its results still come out in one call, so the
    outputs that take the frame's image once (crops, overlay) see every face of it."""
    frames = synth_frames(12, size=16)[0]
    streamer = StreamScheduler(fake_engine, small_preprocess, StreamConfig("center", batch_size=2))
    stage = AlignedFaces(small_preprocess)
    calls = []
    for t in range(10):
        faces = [replace(stage(frames[t + k], t), face_id=k) for k in range(3)]
        streamer.push_faces("a", SourceFrame(frames[t], t / 25, t), faces)
        calls.append(streamer.step(force=True))
    calls.append(streamer.close())
    assert sum(len(c) for c in calls) == 30
    for call in calls:
        indices = [r.index for r in call]
        assert all(indices.count(i) == 3 for i in indices), indices


def test_a_new_face_under_an_old_face_id_starts_a_new_stream(fake_engine, small_preprocess):
    """A one-face tracker that lost its face and found another keeps face_id 0 but marks the new face
    `starts_track`: the first face's frames never enter the second's clips."""
    first, second = synth_frames(10, size=16)[0], synth_frames(10, size=16, subject=1)[0]
    streamer = StreamScheduler(fake_engine, small_preprocess, StreamConfig("center", batch_size=3))
    stage = AlignedFaces(small_preprocess)
    for t in range(10):
        face = stage(first[t], t) if t < 6 else replace(stage(second[t], t), starts_track=t == 6)
        streamer.push_faces("a", SourceFrame(first[t], t / 25, t), [face])
    results = streamer.close()
    assert [r.stream for r in results] == [0] * 6 + [1] * 4
    for part, mine in ((first[:6], results[:6]), (second[6:], results[6:])):
        got = np.stack([r.probs for r in mine])
        assert np.abs(got - fake_dense(fake_engine, part, small_preprocess, "center")).max() <= 1e-6
