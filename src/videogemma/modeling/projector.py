"""Efficient Token Projector (ETP, ARCHITECTURE §5): encoder features → language-model soft tokens.

Image form (`pool_first=False`, one CLIP frame per item; the original's order):

    x = Linear(in, H) → GELU → Linear(H, H)        per token
    x = grid g_in × g_in, adaptive average pool → g_out × g_out
    x = x + DepthwiseConv3x3(x)                     positional encoding generator (PEG)
    x = flatten → (g_out², H) → RMSNorm without learnable scale

Video form (`pool_first=True`, the keyframes of one chunk per item; the original's order):

    each keyframe's g_in × g_in grid, adaptive average pool → g_out × g_out
    x = Linear(in, H) → GELU → Linear(H, H)        per pooled token
    merge the chunk's frames into one g_out × g_out grid:
        "mean": the mean over frames at each grid position
        "grid": the frames' tokens, frame-major, read row by row as one (g_out·√frames)² grid, pooled to
                g_out × g_out (the original; it mixes neighbouring frames)
    x = x + PEG(x) → flatten → RMSNorm without learnable scale

GELU lies between pooling and the MLP's second layer, so the two orders are different functions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from videogemma.config import grid_merge_side
from videogemma.constants import FRAME_MERGES


class ScalelessRMSNorm(nn.Module):
    """RMSNorm without a learnable scale (Gemma's normalisation of soft tokens), computed in fp32."""

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x)


class EfficientTokenProjector(nn.Module):
    def __init__(
        self,
        in_dim: int,
        hidden_size: int,
        grid_in: int,
        grid_out: int,
        norm: bool = True,
        eps: float = 1e-6,
        pool_first: bool = False,
        frame_merge: str = "mean",
    ) -> None:
        super().__init__()
        if grid_out > grid_in:
            raise ValueError(f"grid_out {grid_out} exceeds grid_in {grid_in}")
        if frame_merge not in FRAME_MERGES:
            raise ValueError(f"unknown frame merge {frame_merge!r}; choose one of {FRAME_MERGES}")
        self.grid_in = grid_in
        self.grid_out = grid_out
        self.pool_first = pool_first
        self.frame_merge = frame_merge
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_size), nn.GELU(), nn.Linear(hidden_size, hidden_size)
        )
        self.peg = nn.Conv2d(
            hidden_size, hidden_size, kernel_size=3, padding=1, groups=hidden_size, bias=True
        )
        self.norm = ScalelessRMSNorm(eps) if norm else nn.Identity()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features: (items, frames, grid_in², in_dim) → (items, grid_out², hidden), frames merged."""
        items, frames, tokens, _ = features.shape
        if tokens != self.grid_in**2:
            raise ValueError(f"expected {self.grid_in}² = {self.grid_in**2} tokens per frame, got {tokens}")
        x = features.to(self.mlp[0].weight.dtype)
        if self.pool_first:
            x = self.mlp(_pool_tokens(x, self.grid_in, self.grid_out))
        else:
            x = _pool_tokens(self.mlp(x), self.grid_in, self.grid_out)
        # x: (items, frames, grid_out², hidden) → one (items, hidden, grid_out, grid_out) grid per item
        if self.frame_merge == "grid":
            side = grid_merge_side(frames, self.grid_out)
            x = x.reshape(items, 1, side * side, -1)
            x = _pool_tokens(x, side, self.grid_out)
        x = x.mean(dim=1)
        x = x.transpose(1, 2).reshape(items, -1, self.grid_out, self.grid_out)
        x = x + self.peg(x)
        x = x.flatten(2).transpose(1, 2)
        return self.norm(x)


def _pool_tokens(x: torch.Tensor, grid_in: int, grid_out: int) -> torch.Tensor:
    """(items, frames, grid_in², dim), row-major grids → (items, frames, grid_out², dim), each adaptive-avg-pooled."""
    items, frames, _, dim = x.shape
    if grid_in == grid_out:
        return x
    grid = x.reshape(items * frames, grid_in, grid_in, dim).permute(0, 3, 1, 2)
    pooled = F.adaptive_avg_pool2d(grid, grid_out)
    return pooled.flatten(2).transpose(1, 2).reshape(items, frames, grid_out * grid_out, dim)
