from __future__ import annotations

import math

import pytest
import torch

from videogemma.modeling.keyframes import keyframe_scores, select_keyframes


def formula_scores(features: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """ARCHITECTURE §3 written out directly: the whole attention matrix of each chunk, column sums per frame."""
    batch, frames, patches, dim = features.shape
    scores = torch.zeros(batch, frames, dtype=torch.float64)
    for b in range(batch):
        for start in range(0, frames, chunk_size):
            x = features[b, start : start + chunk_size].reshape(-1, dim).double()
            attention = torch.softmax(x @ x.T / math.sqrt(dim), dim=-1)
            received = attention.sum(dim=0).reshape(chunk_size, patches).sum(dim=1)
            scores[b, start : start + chunk_size] = received
    return scores


@pytest.mark.parametrize("block_size", [1, 7, 12, 512])
def test_scores_equal_the_formula_for_any_block_size(block_size: int) -> None:
    torch.manual_seed(0)
    features = torch.randn(2, 8, 3, 5) * 2
    scores = keyframe_scores(features, chunk_size=4, block_size=block_size)
    torch.testing.assert_close(scores.double(), formula_scores(features, 4), rtol=1e-5, atol=1e-5)
    # each chunk's scores sum to its token count (every query row of A sums to one)
    torch.testing.assert_close(scores.reshape(2, 2, 4).sum(-1), torch.full((2, 2), 12.0))


def test_selection_is_the_sorted_top_k_of_each_chunk() -> None:
    torch.manual_seed(1)
    features = torch.randn(3, 8, 4, 6) * 3
    indices = select_keyframes(features, chunk_size=4, keyframes_per_chunk=2, block_size=5)
    expected_scores = formula_scores(features, 4)
    assert indices.shape == (3, 4)
    for b in range(3):
        for chunk in range(2):
            chosen = indices[b, 2 * chunk : 2 * chunk + 2]
            assert chosen.tolist() == sorted(chosen.tolist())
            assert all(4 * chunk <= int(i) < 4 * chunk + 4 for i in chosen)
            top = expected_scores[b, 4 * chunk : 4 * chunk + 4].topk(2).indices + 4 * chunk
            assert set(chosen.tolist()) == set(top.tolist())


def test_a_distinct_frame_is_kept() -> None:
    # Frames 0-2 of the chunk are copies with aligned tokens: tokens attend mostly to similar tokens, so the
    # copied frame receives the most attention and the odd one out the least.
    torch.manual_seed(2)
    base = torch.randn(1, 1, 4, 8) * 2
    odd = torch.randn(1, 1, 4, 8) * 2
    features = torch.cat([base, base, base, odd], dim=1)
    indices = select_keyframes(features, chunk_size=4, keyframes_per_chunk=3)
    assert indices.tolist() == [[0, 1, 2]]


def test_scores_stay_fp32_under_autocast() -> None:
    torch.manual_seed(3)
    features = torch.randn(1, 4, 16, 32) * 0.5  # spread attention: bf16 would be off by ~1e-2
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores = keyframe_scores(features, chunk_size=4, block_size=8)
    assert scores.dtype == torch.float32
    torch.testing.assert_close(scores.double(), formula_scores(features, 4), rtol=1e-5, atol=1e-5)


def test_bad_geometry_is_an_error() -> None:
    features = torch.randn(1, 6, 4, 8)
    with pytest.raises(ValueError, match="chunks of 4"):
        keyframe_scores(features, chunk_size=4)
    with pytest.raises(ValueError, match="keyframes_per_chunk"):
        select_keyframes(torch.randn(1, 8, 4, 8), chunk_size=4, keyframes_per_chunk=5)
