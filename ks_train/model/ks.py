"""The Knowledge-Spreader model (docs/model.md, Architecture), in one file.

Per frame:  backbone -> AU features f_s [U, W] -> Spatial Teacher S_a -> logits p_a [U]
                                               -> n Spatial Students (MLPs) -> logits [n, U]
Per clip:   tokens (S_a at the key slot, student j at slot j; or S_a at every slot) + position + source
            -> Temporal Teacher -> logits [n, U]; output = fusion of S_a and TT at the key slot. PPL classifies
            TT's pooled tokens.
The per-frame and per-clip halves are separate methods because export runs them as separate graphs.
Every [R] choice of docs/model.md is a field of KSConfig.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ks_runtime.core.errors import ConfigError
from ks_train import configio
from ks_train.model.backbones import create_backbone
from ks_train.model.transformer import POSITIONS, Encoder

FUSIONS = ("mean", "sa", "tt")
TT_TOKENS = ("students", "sa")  # what TT's non-key tokens are: each slot's own student's logits, or S_a's
TEACHER, STUDENT = 1, 0  # source ids of a token
# Every numeric field's allowed values (configio.Range); a depth of 0 is an encoder without layers.
RANGES = {
    "n_aus": "[1, inf)",
    "clip_len": "[1, inf)",
    "clip_stride": configio.Range("[0, inf)", "0: the label spacing k"),
    "token_width": configio.Range("[0, inf)", "0: W = U"),
    "au_feature_dropout": "[0, 1)",
    "sa_depth": "[0, inf)",
    "sa_heads": "[1, inf)",
    "sa_head_dim": "[1, inf)",
    "sa_mlp_ratio": "(0, inf)",
    "tt_depth": "[0, inf)",
    "tt_heads": "[1, inf)",
    "tt_head_dim": "[1, inf)",
    "tt_mlp_ratio": "(0, inf)",
    "dropout": "[0, 1)",
    "student_hidden": "[1, inf)",
    "ppl_hidden": "[1, inf)",
    "tt_width": configio.Range("[0, inf)", "0: the token width W"),
    "tt_position_init": "[0, inf)",
}


# The Temporal Teacher read literally (tokens = the U logits, pre-LayerNorm blocks, a small learned position
# embedding, the students' tokens): blind to a frame's evidence level (docs/model.md). `--set` these to get it back.
LITERAL_TT = {"tt_width": 0, "tt_residual": False, "tt_position": "learned", "tt_tokens": "students"}


@dataclass
class KSConfig:
    """Model shape. [S] stated by the paper, [R] our reconstruction (docs/model.md)."""

    n_aus: int = 12
    clip_len: int = 5  # n [S: 5 by default]
    # [R] frames between a clip's slots: 1 = adjacent frames (the paper's); 0 = the label spacing k, so that
    # every slot of a labelled clip is a labelled frame (resolved by the trainer; docs/experiments.md)
    clip_stride: int = 1
    backbone: str = "tiny"  # [R] resnet50 gives the paper's ~25M parameters
    token_width: int = 0  # W; 0 means W = U [S]
    au_feature_dropout: float = 0.0  # [R]
    sa_depth: int = 2  # [R]
    sa_heads: int = 8  # [S]
    sa_head_dim: int = 8  # [R] attention's own head width, since W = U does not split 8 ways
    sa_mlp_ratio: float = 4.0  # [R]
    tt_depth: int = 2  # [R]
    tt_heads: int = 8  # [S]
    tt_head_dim: int = 8  # [R]
    tt_mlp_ratio: float = 4.0  # [R]
    dropout: float = 0.1  # [R]
    student_hidden: int = 64  # [R] deliberately weak MLP students [S]
    ppl_hidden: int = 32  # [R]
    source_embedding: bool = True  # [R] tells TT which slot holds the teacher-made (key) token
    fusion: str = "mean"  # [R] mean of sigmoid(S_a) and sigmoid(TT) at the key slot
    # [R] TT's own token width: 0 keeps W (tokens = the U logits, no projection when W = U). > 0 projects each
    # token's U logits to this width with a Linear (with bias), so TT's LayerNorms no longer erase a shift
    # shared by all of a frame's logits: TT can see the frame's overall evidence level. 64 by default: with the
    # other three TT fields and the sequence gate it lifted KS by 3-4 points on SynthAU (docs/experiments.md).
    tt_width: int = 64
    # [R] TT's logits = its output head's + its input token logits: TT starts from its input (the head is
    # zero-initialised then) and learns corrections.
    tt_residual: bool = True
    tt_position: str = "sinusoidal"  # [R] TT's position embedding: learned | sinusoidal (a fixed sin/cos table)
    tt_position_init: float = 0.02  # [R] init std of TT's learned position embedding; ~1 lets position matter
    # [R] TT's tokens: "students" = S_a's logits at the key slot, student j's at slot j (the paper's split);
    # "sa" = S_a's logits at every slot (at inference the students then feed no output).
    tt_tokens: str = "sa"

    def __post_init__(self) -> None:
        configio.check_ranges(self, RANGES, "model.")
        if self.fusion not in FUSIONS:
            raise ConfigError(f"model.fusion must be one of {FUSIONS}, got {self.fusion!r}")
        self.check_temporal_teacher()

    def check_temporal_teacher(self) -> None:
        if self.tt_position not in POSITIONS:
            raise ConfigError(f"model.tt_position must be one of {POSITIONS}, got {self.tt_position!r}")
        if self.tt_tokens not in TT_TOKENS:
            raise ConfigError(f"model.tt_tokens must be one of {TT_TOKENS}, got {self.tt_tokens!r}")

    @property
    def width(self) -> int:
        return self.token_width or self.n_aus

    @property
    def tt_token_width(self) -> int:
        """The width of TT's tokens (and of the encoded tokens PPL reads)."""
        return self.tt_width or self.width


class AUFeatures(nn.Module):
    """U per-AU blocks Linear(C -> W) + BatchNorm + ReLU (ME-GraphAU's generator), run as one Linear."""

    def __init__(self, channels: int, n_aus: int, width: int, dropout: float) -> None:
        super().__init__()
        self.n_aus, self.width = n_aus, width
        self.linear = nn.Linear(channels, n_aus * width)
        self.norm = nn.BatchNorm1d(n_aus * width)
        self.drop = nn.Dropout(dropout)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.norm(self.linear(features)))  # (B, U*W)
        return self.drop(x).reshape(-1, self.n_aus, self.width)  # (B, U, W)


class TokenClassifier(nn.Module):
    """One logit per token from that token's own weights: logit_u = <x_u, w_u> + b_u."""

    def __init__(self, tokens: int, width: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(tokens, width) * width**-0.5)
        self.bias = nn.Parameter(torch.zeros(tokens))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.weight).sum(-1) + self.bias  # (B, T)


class SpatialTeacher(nn.Module):
    """S_a (also the Temporal Student): a ViT over the U AU tokens, no class token, one logit per AU."""

    def __init__(self, cfg: KSConfig) -> None:
        super().__init__()
        self.encoder = Encoder(
            cfg.n_aus, cfg.width, cfg.sa_depth, cfg.sa_heads, cfg.sa_head_dim, cfg.sa_mlp_ratio, cfg.dropout
        )
        self.classifier = TokenClassifier(cfg.n_aus, cfg.width)

    def forward(self, au_features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encoder(au_features))  # (B, U): p_a


class SpatialStudents(nn.Module):
    """n small MLPs, one per clip slot, each mapping flattened f_s [U*W] to U logits; run together."""

    def __init__(self, cfg: KSConfig) -> None:
        super().__init__()
        n, d, h, u = cfg.clip_len, cfg.n_aus * cfg.width, cfg.student_hidden, cfg.n_aus
        self.w1 = nn.Parameter(torch.randn(n, d, h) * d**-0.5)
        self.b1 = nn.Parameter(torch.zeros(n, h))
        self.w2 = nn.Parameter(torch.randn(n, h, u) * h**-0.5)
        self.b2 = nn.Parameter(torch.zeros(n, u))

    def forward(self, au_features: torch.Tensor) -> torch.Tensor:
        x = au_features.flatten(1)  # (B, U*W)
        hidden = torch.relu(torch.einsum("bd,ndh->bnh", x, self.w1) + self.b1)  # (B, n, h)
        return torch.einsum("bnh,nhu->bnu", hidden, self.w2) + self.b2  # (B, n, U)


def tt_projection(cfg: KSConfig) -> nn.Module:
    """TT's input projection: none when its tokens are the U logits themselves (W = U, no tt_width)."""
    if cfg.tt_width == 0 and cfg.width == cfg.n_aus:
        return nn.Identity()
    return nn.Linear(cfg.n_aus, cfg.tt_token_width)


class TemporalTeacher(nn.Module):
    """TT: a transformer over the n frame tokens with position and source embeddings.

    Its tokens are the U logits (width W = U), or their projection to `tt_width`. With `tt_residual`, its
    output logits are its head's plus its input logits.
    """

    def __init__(self, cfg: KSConfig) -> None:
        super().__init__()
        width = cfg.tt_token_width
        self.residual = cfg.tt_residual
        self.source = nn.Embedding(2, width) if cfg.source_embedding else None
        self.project_in = tt_projection(cfg)
        self.encoder = Encoder(
            cfg.clip_len,
            width,
            cfg.tt_depth,
            cfg.tt_heads,
            cfg.tt_head_dim,
            cfg.tt_mlp_ratio,
            cfg.dropout,
            pos_init=cfg.tt_position_init,
            position=cfg.tt_position,
        )
        self.out = nn.Linear(width, cfg.n_aus)
        if self.residual:  # start as the identity on the input logits
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, tokens: torch.Tensor, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, n, U), source (B, n) long -> (logits (B, n, U), encoded tokens (B, n, TT width))."""
        x = self.project_in(tokens)
        if self.source is not None:
            x = x + self.source(source)
        encoded = self.encoder(x)
        logits = self.out(encoded)
        return (logits + tokens if self.residual else logits), encoded


class PPLClassifier(nn.Module):
    """Perturbation-aware pseudo-labelling: P(token sequence was perturbed) from TT's pooled tokens."""

    def __init__(self, cfg: KSConfig) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(cfg.tt_token_width, cfg.ppl_hidden), nn.GELU(), nn.Linear(cfg.ppl_hidden, 1))

    def forward(self, encoded: torch.Tensor) -> torch.Tensor:
        return self.mlp(encoded.mean(1)).squeeze(-1)  # (B,) logit of "perturbed"


def one_hot_slot(key_slot: torch.Tensor, n: int) -> torch.Tensor:
    """key_slot (B,) long -> (B, n) float one-hot; selection by product keeps the graph export-friendly."""
    return (torch.arange(n, device=key_slot.device)[None, :] == key_slot[:, None]).to(torch.float32)


def fuse(sa_key: torch.Tensor, tt_key: torch.Tensor, fusion: str) -> torch.Tensor:
    """Key-frame probabilities from S_a's and TT's logits at the key slot."""
    if fusion == "sa":
        return torch.sigmoid(sa_key)
    if fusion == "tt":
        return torch.sigmoid(tt_key)
    return 0.5 * (torch.sigmoid(sa_key) + torch.sigmoid(tt_key))


class KSModel(nn.Module):
    def __init__(self, cfg: KSConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = create_backbone(cfg.backbone)
        self.au_features = AUFeatures(self.backbone.out_channels, cfg.n_aus, cfg.width, cfg.au_feature_dropout)
        self.spatial_teacher = SpatialTeacher(cfg)
        self.students = SpatialStudents(cfg)
        self.temporal_teacher = TemporalTeacher(cfg)
        self.ppl = PPLClassifier(cfg)

    # --- per frame (encoder.onnx) -------------------------------------------------------------
    def encode_frames(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """frames (B, 3, H, W) -> S_a logits (B, U) and every student's logits (B, n, U)."""
        f_s = self.au_features(self.backbone(frames))  # (B, U, W)
        return self.spatial_teacher(f_s), self.students(f_s)

    # --- per clip (head.onnx) -----------------------------------------------------------------
    def clip_tokens(
        self, sa_logits: torch.Tensor, student_logits: torch.Tensor, key_onehot: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """TT's tokens and their source ids (TEACHER at the key slot, STUDENT elsewhere).

        tt_tokens="students": token j is S_a's logits if j is the key slot, else student j's on frame j.
        tt_tokens="sa": token j is S_a's logits on frame j, at every slot; the source ids still mark the key slot.
        sa_logits (B, n, U), student_logits (B, n, n, U) [frame, student, AU], key_onehot (B, n).
        """
        n = self.cfg.clip_len
        eye = torch.eye(n, device=sa_logits.device, dtype=sa_logits.dtype)
        own_student = (student_logits * eye[None, :, :, None]).sum(2)  # (B, n, U): student j on frame j
        key = key_onehot[..., None]
        if self.cfg.tt_tokens == "sa":
            # + 0 x students keeps head.onnx's student_logits input in the graph (exact for finite logits)
            tokens = sa_logits + 0.0 * own_student
        else:
            tokens = key * sa_logits + (1 - key) * own_student
        return tokens, key_onehot.long() * TEACHER

    def head(self, sa_logits: torch.Tensor, student_logits: torch.Tensor, key_slot: torch.Tensor) -> torch.Tensor:
        """Per-frame outputs of a clip's n frames plus key slot (B,) -> key frame's probabilities (B, U)."""
        key_onehot = one_hot_slot(key_slot, self.cfg.clip_len)
        tokens, source = self.clip_tokens(sa_logits, student_logits, key_onehot)
        tt_logits, _ = self.temporal_teacher(tokens, source)
        sa_key = (sa_logits * key_onehot[..., None]).sum(1)
        tt_key = (tt_logits * key_onehot[..., None]).sum(1)
        return fuse(sa_key, tt_key, self.cfg.fusion)

    # --- fused (clip.onnx) ----------------------------------------------------------------------
    def forward(self, clips: torch.Tensor, key_slot: torch.Tensor) -> torch.Tensor:
        """clips (B, n, 3, H, W), key_slot (B,) -> key frame's probabilities (B, U)."""
        b, n = clips.shape[:2]
        sa, students = self.encode_frames(clips.flatten(0, 1))
        return self.head(sa.reshape(b, n, -1), students.reshape(b, n, n, -1), key_slot)


class FrameModel(nn.Module):
    """The frame-only baseline: S_a's backbone, AU features and head on single frames."""

    def __init__(self, cfg: KSConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = create_backbone(cfg.backbone)
        self.au_features = AUFeatures(self.backbone.out_channels, cfg.n_aus, cfg.width, cfg.au_feature_dropout)
        self.spatial_teacher = SpatialTeacher(cfg)

    def frame_logits(self, frames: torch.Tensor) -> torch.Tensor:
        return self.spatial_teacher(self.au_features(self.backbone(frames)))  # (B, U)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.frame_logits(frames))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def parameter_breakdown(model: nn.Module) -> dict[str, int]:
    """Trainable parameters per top-level sub-module, and the total."""
    parts = {name: count_parameters(child) for name, child in model.named_children()}
    parts["total"] = count_parameters(model)
    return parts
