"""The chunked selective scan: pure PyTorch, for GPUs without `mamba_ssm` (about 2√L small steps instead of L)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def scan_chunked(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Chunked scan: a loop inside all chunks at once, then a loop across chunks (≈2√L steps in all)."""
    batch, d_inner, length = u.shape
    chunk = chunk_size or max(1, math.isqrt(length - 1) + 1)
    pad = (-length) % chunk
    if pad:  # Δ = 0 and u = 0 leave the state unchanged; the padded outputs are cut off below
        u, delta, B, C = (F.pad(t, (0, pad)) for t in (u, delta, B, C))
    num_chunks = (length + pad) // chunk

    def by_step(x):  # (b, channels, L) -> (chunk, b, channels, num_chunks, 1): step-in-chunk outermost
        return x.view(x.shape[0], x.shape[1], num_chunks, chunk).permute(3, 0, 1, 2)[..., None]

    # (chunk, b, d, num_chunks, n): log-decay and input of every step
    log_decay = by_step(delta) * A[:, None, :]
    drive = by_step(delta * u) * by_step(B).permute(0, 1, 4, 3, 2)
    # 1) states within every chunk, each started from zero, all chunks in parallel
    decay = torch.exp(log_decay)
    state = u.new_zeros(batch, d_inner, num_chunks, A.shape[1])
    local = []
    for decay_i, drive_i in zip(decay.unbind(0), drive.unbind(0)):
        state = decay_i * state + drive_i
        local.append(state)
    local_states = torch.stack(local)
    # 2) the state entering each chunk: carry the last state across chunks with the chunk's total decay
    cumulative_decay = torch.exp(torch.cumsum(log_decay, dim=0))  # from the chunk's start to each step
    carry = u.new_zeros(batch, d_inner, A.shape[1])
    incoming = []
    for chunk_decay, chunk_end in zip(cumulative_decay[-1].unbind(2), local_states[-1].unbind(2)):
        incoming.append(carry)
        carry = chunk_decay * carry + chunk_end
    states = local_states + cumulative_decay * torch.stack(incoming, dim=2)
    # 3) contract with C and put time back in order
    y = (states * by_step(C).permute(0, 1, 4, 3, 2)).sum(-1)  # (chunk, b, d, num_chunks)
    return y.permute(1, 2, 3, 0).reshape(batch, d_inner, num_chunks * chunk)[..., :length]
