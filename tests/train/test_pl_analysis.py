"""The pseudo-label analysis of `ks-train eval`: which clips it scores for each feeding, and the model's mode."""

import numpy as np
import pytest
import torch

from ks_runtime.core.au import BP4D
from ks_train.config import DataConfig, ExperimentConfig, LossConfig
from ks_train.data.base import VideoSequence
from ks_train.data.sampling import build_sparse_index, clip_frames
from ks_train.evaluate import analysis_keys, pseudo_label_analysis, scores_between_labels
from ks_train.methods import create_method
from ks_train.model.ks import LITERAL_TT, KSConfig

N, K, T = 3, 4, 30


def sequences() -> list[VideoSequence]:
    rng = np.random.default_rng(0)
    return [
        VideoSequence(
            f"S{s}",
            "T1",
            rng.integers(0, 2, (T, len(BP4D))).astype(np.int8),
            np.arange(T),
            frames=rng.integers(0, 256, (T, 32, 32, 3), dtype=np.uint8),
        )
        for s in range(2)
    ]


def test_strided_clips_are_keyed_between_labels_and_paper_clips_on_labels():
    mask = np.zeros(14, dtype=bool)
    mask[1::K] = True  # labels on frames 1, 5, 9, 13
    assert not scores_between_labels(1, K) and not scores_between_labels(3, K)
    assert scores_between_labels(K, K) and scores_between_labels(2 * K, K)
    assert analysis_keys(mask, 1, K).tolist() == [1, 5, 9, 13]
    keys = analysis_keys(mask, K, K)
    assert keys.tolist() == [3, 7, 11]  # 13 + 2 is past the end
    # A strided clip around a labelled key is labelled at every slot; the ones the analysis takes at none.
    on_labels = clip_frames(np.array([5, 9]), np.array([1, 1]), N, len(mask), K)
    assert mask[on_labels].all()
    assert not mask[clip_frames(keys, np.arange(len(keys)) % N, N, len(mask), K)].any()


@pytest.mark.parametrize("stride, keys", [(K, "frames between labels"), (1, "labelled frames")])
@pytest.mark.parametrize("training", [True, False])
def test_the_analysis_scores_pseudo_labels_for_either_feeding_and_restores_the_mode(stride, keys, training):
    cfg = ExperimentConfig(
        model=KSConfig(n_aus=len(BP4D), clip_len=N, clip_stride=stride),
        data=DataConfig(image_size=32),
        loss=LossConfig(gate="ppl"),  # the token gate's analysis; the sequence gate's is tested below
    )
    method = create_method(cfg)
    torch.manual_seed(0)
    model = method.build_model().train(training)
    train = sequences()
    index = build_sparse_index([len(s) for s in train], K, seed=0)
    result = pseudo_label_analysis(model, train, index, cfg.preprocess, 0.5, torch.device("cpu"), method)
    assert model.training is training
    assert result.keys == keys
    labelled = sum(int(m.sum()) for m in index.masks)
    assert result.clips > 0 and result.labels_scored > 0
    # Every clip has its key slot (strided: every slot) between labels; clamped edge slots may land on a label.
    per_clip = (N if stride == K else N - 1) * len(BP4D)
    assert result.labels_scored <= result.clips * per_clip and result.labels_scored > 0.7 * result.clips * per_clip
    assert result.clips <= labelled
    for name in ("accuracy_naive", "accuracy_ppl", "accuracy_confidence"):
        value = getattr(result, name)
        assert np.isnan(value) or 0 <= value <= 1, name
    assert 0 <= result.accepted_fraction <= 1 and 0 <= result.accuracy_naive <= 1


class ActivityGate(torch.nn.Module):
    """A stand-in gate: P(perturbed) is the share of active labels in the sequence."""

    def p_perturbed(self, inputs):
        return inputs.sequence.mean((1, 2))


class FixedTeacher(torch.nn.Module):
    """A stand-in Temporal Teacher: the same logit for every slot and AU."""

    def __init__(self, logit: float) -> None:
        super().__init__()
        self.logit = logit

    def forward(self, tokens, source):
        return torch.full_like(tokens, self.logit), tokens


@pytest.mark.parametrize("tt_logit, accepted", [(5.0, 0.0), (-5.0, 1.0)])
def test_under_the_sequence_gate_the_analysis_takes_the_label_gates_verdict(tt_logit, accepted):
    cfg = ExperimentConfig(
        model=KSConfig(n_aus=len(BP4D), clip_len=N, clip_stride=1, **LITERAL_TT),  # FixedTeacher's width: U
        data=DataConfig(image_size=32),
        loss=LossConfig(gate="sequence"),
    )
    method = create_method(cfg)
    model = method.build_model()
    model.label_gate = ActivityGate()
    # TT calls every AU on (or off) everywhere: busier (or quieter) than any clean sequence the prior draws.
    model.temporal_teacher = FixedTeacher(tt_logit)
    train = sequences()
    index = build_sparse_index([len(s) for s in train], K, seed=0)
    with pytest.raises(RuntimeError, match="label prior"):
        pseudo_label_analysis(model, train, index, cfg.preprocess, 0.5, torch.device("cpu"), method)
    method.fit_data([s.labels[m] for s, m in zip(train, index.masks, strict=True)], K)
    result = pseudo_label_analysis(model, train, index, cfg.preprocess, 0.5, torch.device("cpu"), method)
    assert result.accepted_fraction == accepted
