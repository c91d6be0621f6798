"""A small pre-norm transformer encoder whose attention has its own head width.

KS's tokens are narrow (W = U, 12 or 8), which does not split into 8 heads, so attention projects W up to
heads x head_dim and back (docs/model.md, Architecture). Attention is written out with matmul and softmax
so that every ONNX exporter and runtime handles it the same way.
"""

from __future__ import annotations

import math

import torch
from torch import nn

POSITIONS = ("learned", "sinusoidal")  # kinds of position embedding


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, head_dim: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.qkv = nn.Linear(width, 3 * inner)
        self.proj = nn.Linear(inner, width)
        self.drop = nn.Dropout(dropout)
        self.scale = head_dim**-0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, h, T, d)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)  # (B, h, T, T)
        out = (self.drop(attn) @ v).transpose(1, 2).reshape(b, t, self.heads * self.head_dim)  # (B, T, h*d)
        return self.drop(self.proj(out))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, head_dim: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        hidden = max(1, int(round(width * mlp_ratio)))
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads, head_dim, dropout)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, width), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def sinusoidal_table(tokens: int, width: int) -> torch.Tensor:
    """The fixed sin/cos position table [T, W] of "Attention is all you need": sin on even, cos on odd columns."""
    position = torch.arange(tokens, dtype=torch.float32)[:, None]
    rate = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10000.0) / width))
    table = torch.zeros(tokens, width)
    table[:, 0::2] = torch.sin(position * rate)
    table[:, 1::2] = torch.cos(position * rate[: width // 2])
    return table


class Encoder(nn.Module):
    """Position embedding [T, W], `depth` blocks, a final LayerNorm. No class token.

    `position`: "learned" (a parameter, truncated-normal init of std `pos_init`, cut at 2 std or +-2, whichever is
    wider, so the default 0.02 draws exactly as before) or "sinusoidal" (a fixed table, amplitude 1, not saved).
    """

    def __init__(
        self,
        tokens: int,
        width: int,
        depth: int,
        heads: int,
        head_dim: int,
        mlp_ratio: float,
        dropout: float,
        pos_init: float = 0.02,
        position: str = "learned",
    ) -> None:
        super().__init__()
        if position not in POSITIONS:
            raise ValueError(f"position must be one of {POSITIONS}, got {position!r}")
        if position == "sinusoidal":
            self.register_buffer("pos", sinusoidal_table(tokens, width), persistent=False)
        else:
            self.pos = nn.Parameter(torch.zeros(tokens, width))
            bound = max(2.0, 2.0 * pos_init)
            nn.init.trunc_normal_(self.pos, std=pos_init, a=-bound, b=bound)
        self.blocks = nn.ModuleList(Block(width, heads, head_dim, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos
        for block in self.blocks:
            x = block(x)
        return self.norm(x)
