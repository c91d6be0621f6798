"""A small pre-norm transformer encoder whose attention has its own head width.

KS's tokens are narrow (W = U, 12 or 8), which does not split into 8 heads, so attention projects W up to
heads x head_dim and back (docs/model.md, Architecture). Attention is written out with matmul and softmax
so that every ONNX exporter and runtime handles it the same way.
"""

from __future__ import annotations

import torch
from torch import nn


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


class Encoder(nn.Module):
    """Learnable positional embedding [T, W], `depth` blocks, a final LayerNorm. No class token."""

    def __init__(
        self, tokens: int, width: int, depth: int, heads: int, head_dim: int, mlp_ratio: float, dropout: float
    ) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.zeros(tokens, width))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList(Block(width, heads, head_dim, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos
        for block in self.blocks:
            x = block(x)
        return self.norm(x)
