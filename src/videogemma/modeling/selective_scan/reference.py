"""The selective scan's recurrence as a plain PyTorch loop over time: slow, the ground truth for tests."""

from __future__ import annotations

import torch


def scan_reference(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor
) -> torch.Tensor:
    """The recurrence, one time step at a time (Δ already includes bias and softplus; no D term)."""
    batch, d_inner, _ = u.shape
    # time-major (L, b, d, n), so that every step reads contiguous memory
    decay = torch.exp(delta.permute(2, 0, 1)[..., None] * A)
    drive = (delta * u).permute(2, 0, 1)[..., None] * B.permute(2, 0, 1)[:, :, None]
    C = C.permute(2, 0, 1)[:, :, None]  # (L, b, 1, n)
    state = u.new_zeros(batch, d_inner, A.shape[1])
    ys = []
    # unbind, not decay[t]: autograd then gathers the per-step gradients once instead of once per step
    for decay_t, drive_t, C_t in zip(decay.unbind(0), drive.unbind(0), C.unbind(0)):
        state = decay_t * state + drive_t
        ys.append((state * C_t).sum(-1))
    return torch.stack(ys, dim=-1)
