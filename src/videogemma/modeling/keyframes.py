"""Parameter-free keyframe selection from CLIP features (ARCHITECTURE §3).

The frames of a video are cut into chunks. Inside a chunk every patch token attends to every other one,

    A = softmax(X Xᵀ / sqrt(d))          X: (frames_in_chunk · patches, d), rows are queries, fp32
    score[f] = Σ_q Σ_{k ∈ frame f} A[q, k]

and the `keyframes_per_chunk` frames that receive the most attention are kept, in time order. The attention
matrix is never held whole: query rows are processed `block_size` at a time and only the column sums are
accumulated, so memory is O(block_size · tokens) instead of O(tokens²). The result is the formula's.
"""

from __future__ import annotations

import math

import torch


def keyframe_scores(features: torch.Tensor, chunk_size: int, block_size: int = 512) -> torch.Tensor:
    """Attention received by each frame from all tokens of its chunk.

    features: (batch, frames, patches, dim) CLIP patch features; frames must be a multiple of chunk_size.
    Returns (batch, frames) fp32 scores; the scores of one chunk sum to its token count.
    """
    batch, frames, patches, dim = features.shape
    if frames % chunk_size:
        raise ValueError(f"{frames} frames cannot be cut into chunks of {chunk_size}")
    if block_size <= 0:
        raise ValueError(f"block_size must be positive, got {block_size}")
    num_chunks = frames // chunk_size
    tokens = features.detach().float().reshape(batch * num_chunks, chunk_size * patches, dim)
    scale = 1.0 / math.sqrt(dim)
    received = torch.zeros(tokens.shape[:2], dtype=torch.float32, device=tokens.device)
    # fp32 even inside a bf16/fp16 autocast region (mixed-precision training would otherwise downcast)
    with torch.autocast(tokens.device.type, enabled=False):
        for start in range(0, tokens.shape[1], block_size):
            queries = tokens[:, start : start + block_size]
            attention = torch.softmax(queries @ tokens.transpose(1, 2) * scale, dim=-1)
            received += attention.sum(dim=1)
    return received.reshape(batch, num_chunks, chunk_size, patches).sum(-1).reshape(batch, frames)


def select_keyframes(
    features: torch.Tensor, chunk_size: int, keyframes_per_chunk: int, block_size: int = 512
) -> torch.Tensor:
    """Indices of the keyframes: the top `keyframes_per_chunk` frames of each chunk, sorted in time.

    features: (batch, frames, patches, dim). Returns (batch, num_chunks · keyframes_per_chunk) int64 frame
    indices into the whole video, chunk 0 first.
    """
    if not 0 < keyframes_per_chunk <= chunk_size:
        raise ValueError(
            f"keyframes_per_chunk ({keyframes_per_chunk}) must be in 1..chunk_size ({chunk_size})"
        )
    with torch.no_grad():
        scores = keyframe_scores(features, chunk_size, block_size)
    batch, frames = scores.shape
    per_chunk = scores.reshape(batch, frames // chunk_size, chunk_size)
    top = per_chunk.topk(keyframes_per_chunk, dim=-1).indices.sort(dim=-1).values
    chunk_starts = torch.arange(0, frames, chunk_size, device=scores.device).reshape(1, -1, 1)
    return (top + chunk_starts).reshape(batch, -1)
