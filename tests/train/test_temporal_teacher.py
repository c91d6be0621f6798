"""The Temporal Teacher's [R] options (docs/model.md, Architecture 5): what each one lets TT see, by mechanism.

Read literally (LITERAL_TT), TT's tokens are the U logits themselves; its LayerNorms normalise each token over
those U values, so TT cannot see a shift shared by all of a frame's logits (its evidence level), and its position
embedding (std 0.02) is too small for the order of the neighbours to matter. `tt_width`, `tt_position_init` /
`tt_position`, `tt_residual` and `tt_tokens` change that, each tested here against the literal reading; the
defaults turn all four on.
Relative changes are ||a - b|| / ||a|| of TT's key-slot logits; TT runs in float64 so "exact" means exact.
"""

import onnx
import pytest
import torch

from ks_export.graphs import HeadGraph, random_inputs
from ks_export.onnx_export import export_module
from ks_runtime.core.errors import ConfigError
from ks_train.config import ExperimentConfig, LossConfig
from ks_train.data.clips import ClipBatch
from ks_train.losses import AUWeights
from ks_train.methods import create_method
from ks_train.model.ks import LITERAL_TT, KSConfig, KSModel, TemporalTeacher, one_hot_slot

U, N, KEY = 12, 5, 2  # BP4D's AUs, the paper's clip length, a key slot in the middle
NEIGHBOURS_REVERSED = [4, 3, 2, 1, 0]  # the key slot stays put; the non-key neighbours swap ends


def temporal_teacher(seed: int = 0, **fields) -> TemporalTeacher:
    torch.manual_seed(seed)
    return TemporalTeacher(KSConfig(n_aus=U, clip_len=N, **{**LITERAL_TT, **fields})).eval().double()


def logits(batch: int = 8, seed: int = 0) -> torch.Tensor:
    return 2 * torch.randn(batch, N, U, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def key_output(tt: TemporalTeacher, tokens: torch.Tensor) -> torch.Tensor:
    source = one_hot_slot(torch.full((tokens.shape[0],), KEY), N).long()
    with torch.no_grad():
        return tt(tokens, source)[0][:, KEY]


def relative_change(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / a.norm()).item()


def shift_frame(tokens: torch.Tensor, slot: int, by: float = 4.0) -> torch.Tensor:
    shifted = tokens.clone()
    shifted[:, slot] += by
    return shifted


def randomise_head(tt: TemporalTeacher) -> TemporalTeacher:
    """A trained head is not zero: give a residual TT's zero-initialised head random weights."""
    with torch.no_grad():
        tt.out.weight.normal_(0, tt.out.in_features**-0.5)
        tt.out.bias.normal_(0, 0.1)
    return tt


# --- evidence level: a shift shared by all of one frame's logits ------------------------------------------------
def test_default_tt_is_exactly_blind_to_a_frames_evidence_level():
    """Pins today's behaviour: per-token LayerNorms over the U logits erase a common shift, at every slot."""
    tt = temporal_teacher()
    tokens = logits()
    for slot in (0, KEY):
        with torch.no_grad():
            before = tt(tokens, one_hot_slot(torch.full((8,), KEY), N).long())[0]
            after = tt(shift_frame(tokens, slot), one_hot_slot(torch.full((8,), KEY), N).long())[0]
        torch.testing.assert_close(after, before, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "fields",
    [
        {"tt_width": 24},
        {"tt_width": U},  # the same width as the logits, but projected: the projection is what matters
        {"tt_width": 24, "tt_residual": True, "tt_position_init": 1.0},
    ],
    ids=["width24", "width12", "all-on"],
)
def test_a_projected_token_lets_tt_see_a_neighbours_evidence_level(fields):
    tt = temporal_teacher(**fields)
    if tt.residual:
        randomise_head(tt)
    tokens = logits()
    change = relative_change(key_output(tt, tokens), key_output(tt, shift_frame(tokens, slot=0)))
    assert change > 0.01, f"shifting frame 0's logits by +4 moved the key output by only {change:.2%}"


def test_the_residual_alone_passes_a_frames_own_level_through_but_not_its_neighbours():
    tt = randomise_head(temporal_teacher(tt_residual=True))
    tokens = logits()
    torch.testing.assert_close(key_output(tt, shift_frame(tokens, slot=0)), key_output(tt, tokens), rtol=0, atol=1e-12)
    torch.testing.assert_close(key_output(tt, shift_frame(tokens, slot=KEY)), key_output(tt, tokens) + 4)


# --- position: the order of the non-key neighbours ----------------------------------------------------------------
def test_default_tt_barely_hears_the_order_of_the_neighbours():
    """Pins today's behaviour: the 0.02 position embedding is lost beside the tokens (under 1%)."""
    for seed in range(3):
        tt = temporal_teacher(seed)
        tokens = logits()
        change = relative_change(key_output(tt, tokens), key_output(tt, tokens[:, NEIGHBOURS_REVERSED]))
        assert 0 < change < 0.01


@pytest.mark.parametrize("seed", range(3))
def test_a_large_position_init_makes_the_order_of_the_neighbours_matter(seed):
    tt = temporal_teacher(seed, tt_position_init=1.0)
    tokens = logits()
    change = relative_change(key_output(tt, tokens), key_output(tt, tokens[:, NEIGHBOURS_REVERSED]))
    assert change > 0.01, f"reversing the neighbours moved the key output by only {change:.2%}"


@pytest.mark.parametrize("seed", range(3))
def test_a_sinusoidal_position_hears_the_order_more_than_the_default(seed):
    tokens = logits()
    changes = {}
    for position in ("learned", "sinusoidal"):
        tt = temporal_teacher(seed, tt_position=position)
        changes[position] = relative_change(key_output(tt, tokens), key_output(tt, tokens[:, NEIGHBOURS_REVERSED]))
    assert changes["sinusoidal"] > 5 * changes["learned"], changes


def test_the_sinusoidal_table_is_fixed_and_not_saved():
    tt = temporal_teacher(tt_position="sinusoidal")
    assert "encoder.pos" not in tt.state_dict()
    assert not any(p is tt.encoder.pos for p in tt.parameters())
    assert tt.encoder.pos.shape == (N, U) and tt.encoder.pos.abs().max() <= 1
    torch.testing.assert_close(tt.encoder.pos[0, 0::2], torch.zeros(U // 2, dtype=torch.float64))  # sin(0)


def test_the_position_init_sets_the_embeddings_spread():
    stds = {init: temporal_teacher(tt_position_init=init).encoder.pos.std().item() for init in (0.02, 1.0)}
    assert stds[0.02] < 0.05 and 0.5 < stds[1.0] < 1.5


# --- residual --------------------------------------------------------------------------------------------------
def test_a_residual_tt_starts_as_its_input_and_adds_its_heads_correction():
    tt = temporal_teacher(tt_residual=True, tt_width=24)
    tokens = logits()
    source = one_hot_slot(torch.full((8,), KEY), N).long()
    assert not tt.out.weight.any() and not tt.out.bias.any()  # zero-initialised head
    with torch.no_grad():
        out, encoded = tt(tokens, source)
        torch.testing.assert_close(out, tokens, rtol=0, atol=0)
        randomise_head(tt)
        out, encoded = tt(tokens, source)
        torch.testing.assert_close(out, tt.out(encoded) + tokens)
        assert relative_change(tokens, out) > 0.01


# --- which logits the tokens are ---------------------------------------------------------------------------------
def ks_model(tt_tokens: str) -> KSModel:
    torch.manual_seed(0)
    return KSModel(KSConfig(n_aus=U, clip_len=N, **{**LITERAL_TT, "tt_tokens": tt_tokens})).eval()


def clip_logits(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return 2 * torch.randn(4, N, U, generator=g), 2 * torch.randn(4, N, N, U, generator=g), torch.arange(4)


def test_sa_tokens_put_s_a_at_every_slot_and_still_mark_the_key_slot():
    sa, students, slots = clip_logits()
    tokens, source = ks_model("sa").clip_tokens(sa, students, one_hot_slot(slots, N))
    torch.testing.assert_close(tokens, sa, rtol=0, atol=0)
    assert source.tolist() == one_hot_slot(slots, N).long().tolist()


@pytest.mark.parametrize("tt_tokens", ["students", "sa"])
def test_the_head_reads_the_logits_its_tokens_come_from(tt_tokens):
    model = ks_model(tt_tokens)
    sa, students, slots = clip_logits()
    non_key = (slots + 1) % N
    rows = torch.arange(4)
    with torch.no_grad():
        out = model.head(sa, students, slots)
        other_students = students.clone()
        other_students[rows, non_key, non_key] += torch.randn(4, U)  # each non-key frame's own student
        moved_sa = sa.clone()
        moved_sa[rows, non_key] += torch.randn(4, U)  # S_a on a non-key frame
        by_students = model.head(sa, other_students, slots)
        by_sa = model.head(moved_sa, students, slots)
    if tt_tokens == "sa":
        torch.testing.assert_close(by_students, out, rtol=0, atol=0)
        assert (by_sa - out).abs().max() > 1e-4
    else:
        assert (by_students - out).abs().max() > 1e-4
        torch.testing.assert_close(by_sa, out, rtol=0, atol=0)


def test_head_onnx_keeps_its_student_input_with_sa_tokens(tmp_path):
    """head.onnx's inputs are fixed by the bundle; the legacy exporter drops inputs a graph does not use."""
    args = random_inputs("head", 3, N, U, 48, torch.Generator().manual_seed(0))
    path = tmp_path / "head.onnx"
    export_module(HeadGraph(ks_model("sa")).eval(), args, path, 18, "legacy")
    assert [value.name for value in onnx.load(str(path)).graph.input] == list(HeadGraph.input_names)


# --- defaults and config -----------------------------------------------------------------------------------------
def test_the_literal_reading_is_one_setting_away_and_the_defaults_turn_every_field_on():
    defaults = KSConfig()
    assert (defaults.tt_width, defaults.tt_residual, defaults.tt_position, defaults.tt_tokens) == (
        64,
        True,
        "sinusoidal",
        "sa",
    )
    tt = temporal_teacher()
    assert isinstance(tt.project_in, torch.nn.Identity) and not tt.residual
    assert isinstance(tt.encoder.pos, torch.nn.Parameter) and tt.encoder.pos.shape == (N, U)
    assert tt.out.weight.any()
    projected = temporal_teacher(tt_width=24)
    assert set(projected.state_dict()) == set(tt.state_dict()) | {"project_in.weight", "project_in.bias"}
    assert projected.encoder.pos.shape == (N, 24)


@pytest.mark.parametrize(
    "fields",
    [{"tt_width": -1}, {"tt_position": "rotary"}, {"tt_position_init": -0.1}, {"tt_tokens": "teacher"}],
)
def test_bad_temporal_teacher_fields_are_config_errors(fields):
    with pytest.raises(ConfigError, match="model.tt_"):
        KSConfig(**fields)


@pytest.mark.parametrize("tt_tokens", ["students", "sa"])
def test_a_training_step_runs_with_every_new_field_on(tt_tokens):
    model_cfg = KSConfig(n_aus=4, clip_len=3, tt_width=16, tt_residual=True, tt_position_init=1.0, tt_tokens=tt_tokens)
    # The token gate: its L_self reaches TT's projection at the first step, while the residual head starts at zero.
    method = create_method(ExperimentConfig(model=model_cfg, loss=LossConfig(gate="ppl")))
    torch.manual_seed(0)
    model = method.build_model().train()
    labels = torch.randint(0, 2, (4, 3, 4)).float()
    labels[:, 1] = -1
    kept = labels[..., 0] >= 0
    batch = ClipBatch(torch.randn(4, 3, 3, 32, 32), labels, labels.clone(), kept, 0, torch.ones(4, dtype=torch.bool))
    result = method.train_step(model, batch, AUWeights.uniform(4), semi_supervised=True)
    result.loss.backward()
    assert torch.isfinite(result.loss)
    assert model.temporal_teacher.project_in.weight.grad.abs().sum() > 0
    assert model.ppl.mlp[0].in_features == 16
