"""ks_runtime/detector.py: detect / stream / infer_frame on a real exported bundle, bad input and bad bundles,
and the consistency with training: the streamed F1 equals `ks-train eval`'s on the same video."""

import json
import logging

import numpy as np
import pytest

from ks_runtime.core.errors import BundleError, ConfigError
from ks_runtime.core.metrics import f1_report
from ks_runtime.detector import Detector
from ks_runtime.engine.base import EngineError
from ks_runtime.io.sources import SourceError, VideoSource
from ks_runtime.io.table import read_results_csv
from ks_runtime.tools.policy_report import with_labels, write_lossless_video
from tests.runtime.conftest import synth_frames


@pytest.fixture(scope="module")
def sequence():
    return synth_frames(30, size=48, seed=5)


@pytest.fixture(scope="module")
def video(sequence, tmp_path_factory):
    return write_lossless_video(sequence[0], tmp_path_factory.mktemp("video") / "S01_T1", 25.0)


def probs_of(results):
    return np.stack([r.probs for r in results])


def test_detect_writes_the_csv_and_plot_and_returns_the_same_table(bundle, sequence, video, tmp_path):
    frames, labels = sequence
    assert video.suffix in (".mkv", ".avi")  # a lossless codec round-trips here
    detector = Detector(bundle, policy="center", batch_size=4)
    source = with_labels(VideoSource(video), labels, detector.au_columns)
    table = detector.detect(source, csv=tmp_path / "out.csv", plot=tmp_path / "out.png")
    read = read_results_csv(tmp_path / "out.csv")
    assert list(table.columns) == list(read.columns) and len(read) == len(frames) == len(table)
    assert np.allclose(read["timestamp"], np.arange(len(frames)) / 25)
    p_columns = [c for c in table.columns if c.endswith("_p")]
    assert np.allclose(table[p_columns].to_numpy(), read[p_columns].to_numpy(), atol=1e-6)
    assert (tmp_path / "out.png").stat().st_size > 1000
    summary = detector.summary
    assert summary.frames == len(frames) and summary.dropped == 0 and summary.f1 is not None
    expected = f1_report(table[p_columns].to_numpy(), labels, detector.au_columns).mean
    assert summary.f1.mean == pytest.approx(expected, abs=1e-12)
    assert table.attrs["summary"] is summary


@pytest.mark.parametrize("policy", ["last", "ensemble"])
def test_infer_frame_returns_the_results_that_became_final_with_each_frame(bundle, sequence, policy):
    frames = sequence[0][:12]
    detector = Detector(bundle, policy=policy)
    whole = list(detector.stream(frames))
    got = []
    for t, frame in enumerate(frames):
        final = detector.infer_frame(frame, timestamp=t / 25, colour="RGB")
        if policy == "last":
            assert [r.index for r in final] == [t]
        elif t < detector.manifest.clip_len - 1:
            assert final == []
        got += final
    tail = detector.end_stream()
    assert (tail == []) == (policy == "last")
    got += tail
    assert [r.index for r in got] == list(range(12))
    assert np.abs(probs_of(got) - probs_of(whole)).max() <= 1e-5
    restarted = detector.infer_frame(frames[0], colour="RGB")
    assert restarted[0].index == 0 if policy == "last" else True  # a new stream restarts at 0


def test_a_truncated_video_keeps_every_frame_it_read_and_warns_with_the_counts(bundle, video, tmp_path):
    data = video.read_bytes()
    cut = tmp_path / f"cut{video.suffix}"
    cut.write_bytes(data[: len(data) * 6 // 10])
    detector = Detector(bundle, policy="ensemble")
    table = detector.detect(cut, csv=tmp_path / "cut.csv", plot=tmp_path / "cut.png")
    read = read_results_csv(tmp_path / "cut.csv")
    assert 0 < len(read) == len(table) < 30 and table.attrs["error"] is None and not detector.summary.errors
    assert read["frame"].tolist() == list(range(1, len(read) + 1)) and read.notna().all().all()
    assert (tmp_path / "cut.csv").read_text().endswith("\n") and (tmp_path / "cut.png").is_file()
    [warning] = detector.summary.warnings
    assert str(cut) in warning and f"promises 30 frames, {len(read)} decoded" in warning


def test_frames_of_changing_size_gray_and_16_bit_are_handled_float_refused(bundle, sequence, caplog):
    import cv2

    frames = list(sequence[0][:8])
    frames[3] = cv2.resize(frames[3], (40, 40))
    frames[4] = cv2.cvtColor(frames[4], cv2.COLOR_RGB2GRAY)
    frames[5] = frames[5].astype(np.uint16) * 257
    detector = Detector(bundle)
    with caplog.at_level(logging.WARNING):
        results = list(detector.stream(frames))
    assert [r.index for r in results] == list(range(8)) and all(r.success for r in results)
    assert "frame 3 is 40x40" in caplog.text
    plain = list(detector.stream(sequence[0][:8]))
    # frame 7's clip (frames 5-7) holds the 16-bit frame, brought back to the same 8-bit pixels
    assert np.abs(results[7].probs - plain[7].probs).max() <= 1e-6
    with pytest.raises(SourceError, match="frame 2.*float64"):
        list(detector.stream([frames[0], frames[1], frames[2] / 255.0]))


def test_two_sources_stream_together(bundle, sequence):
    a, b = sequence[0][:14], sequence[0][10:30]
    detector = Detector(bundle, policy="shift", batch_size=6)
    results = list(detector.stream_many({"a": a, "b": b}))
    for key, frames in (("a", a), ("b", b)):
        mine = [r for r in results if r.source == key]
        alone = list(detector.stream(frames))
        assert np.abs(probs_of(mine) - probs_of(alone)).max() <= 1e-5


def test_a_bundle_that_fails_its_checks_is_refused_before_the_first_frame(bundle, tmp_path):
    import shutil

    copy = shutil.copytree(bundle, tmp_path / "bundle")
    head = copy / "head.onnx"
    head.write_bytes(head.read_bytes()[:-10])
    with pytest.raises(BundleError, match="head.onnx"):
        Detector(copy)
    copy = shutil.copytree(bundle, tmp_path / "bundle2")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["format_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="format_version"):
        Detector(copy)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"engine": "trt"}, EngineError, "not available in this build"),
        ({"engine": "tensorflow"}, ConfigError, "known engines"),
        ({"device": "tpu"}, ConfigError, "cpu, cuda or cuda:N"),
        ({"policy": "middle"}, ConfigError, "key-slot policy"),
        ({"face": "mtcnn"}, ConfigError, "face stage 'mtcnn' is not known"),
    ],
)
def test_bad_options_are_refused_with_a_clear_message(bundle, kwargs, error, message):
    with pytest.raises(error, match=message):
        Detector(bundle, **kwargs)


def test_cuda_without_onnxruntime_gpu_says_what_to_install(bundle):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    with pytest.raises(EngineError, match="onnxruntime-gpu|pip install"):
        Detector(bundle, device="cuda:0")


@pytest.mark.parametrize("policy", ["shift", "ensemble"])
def test_streamed_f1_equals_ks_train_eval_on_the_same_video(bundle, checkpoint, sequence, video, policy):
    import torch

    from ks_train import checkpoint as ckpt
    from ks_train.config import ExperimentConfig
    from ks_train.data.base import VideoSequence
    from ks_train.evaluate import evaluate, predict_sequences
    from ks_train.methods import create_method

    frames, labels = sequence
    state = ckpt.load_checkpoint(checkpoint)
    cfg = ExperimentConfig.from_dict(state["config"])
    method = create_method(cfg)
    model = method.build_model()
    ckpt.load_model_state(model, state)
    columns = list(state["au_columns"])
    torch_seq = VideoSequence("S01", "T1", labels, np.arange(len(labels)), frames=frames)
    device = torch.device("cpu")
    trained = evaluate(method, model, [torch_seq], cfg.preprocess, policy, device, columns)
    torch_probs = predict_sequences(method, model, [torch_seq], cfg.preprocess, policy, device)[0]

    detector = Detector(bundle, policy=policy)
    table = detector.detect(with_labels(VideoSource(video), labels, columns))
    streamed = table[[f"{c}_p" for c in columns]].to_numpy()
    assert np.abs(streamed - torch_probs).max() <= 1e-4
    assert detector.summary.f1.mean == pytest.approx(trained.mean, abs=1e-6)
    assert np.array_equal(detector.summary.f1.f1, trained.f1)
