"""Efficient Token Projector (ETP, ARCHITECTURE §5): encoder features → language-model soft tokens.

    x = Linear(in, H) → GELU → Linear(H, H)        per token
    x = grid g_in × g_in, adaptive average pool → g_out × g_out
    (frames merged by the mean at each grid position, for the video projector)
    x = x + DepthwiseConv3x3(x)                     positional encoding generator (PEG)
    x = flatten → (g_out², H) → RMSNorm without learnable scale

The image projector sees one frame per item; the video projector sees the keyframes of one chunk per item
and merges them into a single g_out² grid (mean over frames, not the reference's fake 14×14 re-grid).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
        self, in_dim: int, hidden_size: int, grid_in: int, grid_out: int, norm: bool = True, eps: float = 1e-6
    ) -> None:
        super().__init__()
        if grid_out > grid_in:
            raise ValueError(f"grid_out {grid_out} exceeds grid_in {grid_in}")
        self.grid_in = grid_in
        self.grid_out = grid_out
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_size), nn.GELU(), nn.Linear(hidden_size, hidden_size)
        )
        self.peg = nn.Conv2d(
            hidden_size, hidden_size, kernel_size=3, padding=1, groups=hidden_size, bias=True
        )
        self.norm = ScalelessRMSNorm(eps) if norm else nn.Identity()

    @property
    def tokens_out(self) -> int:
        return self.grid_out**2

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features: (items, frames, grid_in², in_dim) → (items, grid_out², hidden), frames merged by the mean."""
        items, frames, tokens, _ = features.shape
        if tokens != self.grid_in**2:
            raise ValueError(f"expected {self.grid_in}² = {self.grid_in**2} tokens per frame, got {tokens}")
        x = self.mlp(features.to(self.mlp[0].weight.dtype))
        x = x.reshape(items * frames, self.grid_in, self.grid_in, -1).permute(0, 3, 1, 2)
        x = F.adaptive_avg_pool2d(x, self.grid_out)
        x = x.reshape(items, frames, *x.shape[1:]).mean(dim=1)
        x = x + self.peg(x)
        x = x.flatten(2).transpose(1, 2)
        return self.norm(x)
