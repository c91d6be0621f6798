import pytest
import torch

from ks_train.config import load_config
from ks_train.model.ks import KSConfig, KSModel, one_hot_slot, parameter_breakdown


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return KSModel(KSConfig(n_aus=6, clip_len=4, backbone="tiny")).eval()


def test_per_frame_then_per_clip_equals_the_fused_forward(model):
    clips = torch.randn(3, 4, 3, 48, 48)
    with torch.no_grad():
        sa, students = model.encode_frames(clips.flatten(0, 1))
        assert sa.shape == (12, 6) and students.shape == (12, 4, 6)
        for slot in range(4):
            key = torch.full((3,), slot)
            fused = model(clips, key)
            split = model.head(sa.reshape(3, 4, 6), students.reshape(3, 4, 4, 6), key)
            torch.testing.assert_close(split, fused, rtol=0, atol=1e-6)
            assert ((fused > 0) & (fused < 1)).all()


def test_tokens_take_s_a_at_the_key_slot_and_student_j_elsewhere():
    torch.manual_seed(0)
    model = KSModel(KSConfig(n_aus=6, clip_len=4, tt_tokens="students")).eval()  # the paper's split
    sa = torch.randn(2, 4, 6)
    students = torch.randn(2, 4, 4, 6)
    tokens, source = model.clip_tokens(sa, students, one_hot_slot(torch.tensor([1, 3]), 4))
    torch.testing.assert_close(tokens[0, 1], sa[0, 1])
    torch.testing.assert_close(tokens[1, 3], sa[1, 3])
    torch.testing.assert_close(tokens[0, 2], students[0, 2, 2])
    torch.testing.assert_close(tokens[1, 0], students[1, 0, 0])
    assert source.tolist() == [[0, 1, 0, 0], [0, 0, 0, 1]]


def test_the_key_slot_changes_the_output_and_ppl_does_not(model):
    clips = torch.randn(1, 4, 3, 48, 48)
    with torch.no_grad():
        a = model(clips, torch.tensor([0]))
        b = model(clips, torch.tensor([3]))
        assert not torch.allclose(a, b)
        for p in model.ppl.parameters():
            p.add_(1.0)
        torch.testing.assert_close(model(clips, torch.tensor([0])), a)


def test_frames_are_encoded_independently_in_eval(model):
    frames = torch.randn(5, 3, 48, 48)
    with torch.no_grad():
        together = model.encode_frames(frames)[0]
        alone = model.encode_frames(frames[2:3])[0]
    torch.testing.assert_close(together[2:3], alone, rtol=0, atol=1e-5)


def test_paper_r50_has_about_25_million_parameters():
    cfg = load_config("paper-r50")
    total = parameter_breakdown(KSModel(cfg.model))["total"]
    assert 23_000_000 <= total <= 27_000_000


@pytest.mark.parametrize("fusion", ["mean", "sa", "tt"])
def test_fusion_choices(fusion):
    torch.manual_seed(1)
    m = KSModel(KSConfig(n_aus=3, clip_len=2, fusion=fusion)).eval()
    with torch.no_grad():
        out = m(torch.randn(2, 2, 3, 32, 32), torch.tensor([0, 1]))
    assert out.shape == (2, 3)


@pytest.mark.parametrize("tt_tokens", ["students", "sa"])
def test_per_frame_then_per_clip_equals_the_fused_forward_with_the_temporal_teacher_options(tt_tokens):
    torch.manual_seed(2)
    cfg = KSConfig(n_aus=6, clip_len=4, tt_width=16, tt_residual=True, tt_position_init=1.0, tt_tokens=tt_tokens)
    m = KSModel(cfg).eval()
    clips = torch.randn(2, 4, 3, 48, 48)
    key = torch.tensor([1, 3])
    with torch.no_grad():
        sa, students = m.encode_frames(clips.flatten(0, 1))
        split = m.head(sa.reshape(2, 4, 6), students.reshape(2, 4, 4, 6), key)
        torch.testing.assert_close(split, m(clips, key), rtol=0, atol=1e-6)
