from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from videogemma.config import VideoGemmaConfig
from videogemma.modeling.projector import EfficientTokenProjector

# ---- ARCHITECTURE §5 evaluated directly, one number at a time ------------------------------------------------


def pool_grid(grid: torch.Tensor, size: int) -> torch.Tensor:
    """Adaptive average pooling of a (side, side, C) grid to (size, size, C): output cell i covers input rows
    floor(i·side/size) .. ceil((i+1)·side/size) - 1, and the same for columns."""
    side = grid.shape[0]
    out = torch.empty(size, size, grid.shape[-1], dtype=grid.dtype)
    for i in range(size):
        rows = range(math.floor(i * side / size), math.ceil((i + 1) * side / size))
        for j in range(size):
            cols = range(math.floor(j * side / size), math.ceil((j + 1) * side / size))
            out[i, j] = torch.stack([grid[r, c] for r in rows for c in cols]).mean(0)
    return out


def mlp(projector: EfficientTokenProjector, token: torch.Tensor) -> torch.Tensor:
    """Linear → GELU (exact, erf) → Linear on one token."""
    first, second = projector.mlp[0], projector.mlp[2]
    hidden = first.weight @ token + first.bias
    hidden = 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2)))
    return second.weight @ hidden + second.bias


def peg(projector: EfficientTokenProjector, grid: torch.Tensor) -> torch.Tensor:
    """x + depthwise 3×3 conv of x (zero padding, bias), on a (side, side, C) grid."""
    side = grid.shape[0]
    weight, bias = projector.peg.weight[:, 0], projector.peg.bias  # (C, 3, 3), (C,)
    out = grid.clone()
    for i in range(side):
        for j in range(side):
            conv = bias.clone()
            for di in range(3):
                for dj in range(3):
                    r, c = i + di - 1, j + dj - 1
                    if 0 <= r < side and 0 <= c < side:
                        conv = conv + weight[:, di, dj] * grid[r, c]
            out[i, j] = grid[i, j] + conv
    return out


def rms_norm(tokens: torch.Tensor) -> torch.Tensor:
    return tokens / tokens.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()


def as_grid(tokens: torch.Tensor) -> torch.Tensor:
    """Row-major tokens (side², C) → (side, side, C)."""
    side = math.isqrt(tokens.shape[0])
    return tokens.reshape(side, side, -1)


def reference_video_etp(projector: EfficientTokenProjector, chunk: torch.Tensor, merge: str) -> torch.Tensor:
    """One chunk's keyframes (K, g_in², in) → (g_out², H): pool each keyframe, MLP, merge, PEG, norm."""
    g = projector.grid_out
    frames = []
    for frame in chunk:
        pooled = pool_grid(as_grid(frame), g).reshape(g * g, -1)
        frames.append(torch.stack([mlp(projector, token) for token in pooled]))
    if merge == "mean":
        merged = torch.stack(frames).mean(0)
    else:  # the keyframes' tokens, frame after frame, read row by row as one grid and pooled
        merged = pool_grid(as_grid(torch.cat(frames)), g).reshape(g * g, -1)
    return rms_norm(peg(projector, as_grid(merged)).reshape(g * g, -1))


def reference_image_etp(projector: EfficientTokenProjector, frame: torch.Tensor) -> torch.Tensor:
    """One CLIP frame (g_in², in) → (g_out², H): MLP, pool, PEG, norm."""
    g = projector.grid_out
    tokens = torch.stack([mlp(projector, token) for token in frame])
    pooled = pool_grid(as_grid(tokens), g)
    return rms_norm(peg(projector, pooled).reshape(g * g, -1))


def randomised(projector: EfficientTokenProjector) -> EfficientTokenProjector:
    """Non-trivial biases and PEG weights, so that every term of the formulas shows in the output."""
    with torch.no_grad():
        for parameter in projector.parameters():
            parameter.normal_(0, 0.5)
    return projector


# ---- the video ETP ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("merge", ["mean", "grid"])
def test_video_etp_pools_each_keyframe_then_projects_then_merges(merge) -> None:
    torch.manual_seed(0)
    # 4 keyframes of a 6×6 grid pooled to 3×3 (the e2b shape is 4 of 14×14 to 7×7); uneven pooling windows too.
    for grid_in, grid_out in ((6, 3), (7, 3)):
        projector = randomised(
            EfficientTokenProjector(5, 8, grid_in, grid_out, pool_first=True, frame_merge=merge)
        )
        chunks = torch.randn(2, 4, grid_in**2, 5)
        with torch.no_grad():
            out = projector(chunks)
            expected = torch.stack([reference_video_etp(projector, chunk, merge) for chunk in chunks])
        assert out.shape == (2, grid_out**2, 8)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_the_two_merges_treat_frame_order_differently() -> None:
    torch.manual_seed(1)
    chunks = torch.randn(1, 4, 36, 5)
    mean = randomised(EfficientTokenProjector(5, 8, 6, 3, pool_first=True, frame_merge="mean"))
    grid = EfficientTokenProjector(5, 8, 6, 3, pool_first=True, frame_merge="grid")
    grid.load_state_dict(mean.state_dict())
    with torch.no_grad():
        # "mean" merges position by position: the order of the keyframes does not matter.
        torch.testing.assert_close(mean(chunks.flip(1)), mean(chunks), rtol=1e-5, atol=1e-6)
        # "grid" pools neighbouring tokens of the concatenated keyframes: the order matters, and so does
        # the merge itself.
        assert not torch.allclose(grid(chunks.flip(1)), grid(chunks), atol=1e-3)
        assert not torch.allclose(grid(chunks), mean(chunks), atol=1e-3)


def test_pooling_before_the_mlp_is_a_different_function() -> None:
    torch.manual_seed(2)
    pool_first = randomised(EfficientTokenProjector(5, 8, 6, 3, pool_first=True))
    mlp_first = EfficientTokenProjector(5, 8, 6, 3, pool_first=False)
    mlp_first.load_state_dict(pool_first.state_dict())
    chunks = torch.randn(2, 4, 36, 5)
    with torch.no_grad():
        assert not torch.allclose(pool_first(chunks), mlp_first(chunks), atol=1e-2)


def test_the_grid_merge_needs_a_square_grid() -> None:
    projector = EfficientTokenProjector(5, 8, 4, 2, pool_first=True, frame_merge="grid")
    with pytest.raises(ValueError, match="3 frames × 2² tokens = 12 tokens"):
        projector(torch.randn(1, 3, 16, 5))
    with pytest.raises(ValueError, match="unknown frame merge 'max'"):
        EfficientTokenProjector(5, 8, 4, 2, frame_merge="max")


@pytest.mark.parametrize("merge", ["mean", "grid"])
def test_e2b_video_etp_gives_49_tokens_per_chunk_and_2402_in_all(merge) -> None:
    config = VideoGemmaConfig.from_preset("e2b", video_keyframe_merge=merge)
    vm = config.videomamba_config
    projector = EfficientTokenProjector(
        vm.embed_dim, 64, vm.grid_size, config.video_projector_grid, pool_first=True, frame_merge=merge
    )  # the real width is 2048; the token count does not depend on it
    chunks = torch.randn(config.num_chunks, config.keyframes_per_chunk, vm.grid_size**2, vm.embed_dim)
    with torch.no_grad():
        assert projector(chunks).shape == (2, 49, 64)
    assert config.num_visual_tokens == 16 * 144 + 2 * 49 == 2402


# ---- the image ETP ----------------------------------------------------------------------------------------------


def test_image_etp_projects_then_pools() -> None:
    torch.manual_seed(3)
    projector = randomised(EfficientTokenProjector(in_dim=6, hidden_size=10, grid_in=5, grid_out=3))
    frames = torch.randn(3, 1, 25, 6)
    with torch.no_grad():
        out = projector(frames)
        expected = torch.stack([reference_image_etp(projector, frame[0]) for frame in frames])
    assert out.shape == (3, 9, 10)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_token_order_is_row_major_over_the_output_grid() -> None:
    # Identity MLP and PEG, no norm: the output is the pooled grid itself, read row by row.
    projector = EfficientTokenProjector(in_dim=1, hidden_size=1, grid_in=4, grid_out=2, norm=False)
    with torch.no_grad():
        for linear in (projector.mlp[0], projector.mlp[2]):
            linear.weight.fill_(1.0)
            linear.bias.zero_()
        projector.peg.weight.zero_()
        projector.peg.bias.zero_()
    grid = torch.arange(16.0).reshape(1, 1, 16, 1) + 10  # positive: GELU is then close to identity
    out = projector(grid)[0, :, 0]
    pooled = F.gelu(grid[0, 0, :, 0]).reshape(1, 1, 4, 4)
    expected = F.adaptive_avg_pool2d(pooled, 2).flatten()
    torch.testing.assert_close(out, expected)
    assert out[0] < out[1] < out[2] < out[3]


def test_norm_has_no_learnable_scale() -> None:
    projector = EfficientTokenProjector(in_dim=4, hidden_size=8, grid_in=2, grid_out=1)
    assert not list(projector.norm.parameters())
    names = {name for name, _ in projector.named_parameters()}
    assert names == {"mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias", "peg.weight", "peg.bias"}
    assert projector.peg.groups == 8  # depthwise
    out = projector(torch.randn(5, 1, 4, 4))
    torch.testing.assert_close(out.pow(2).mean(-1), torch.ones(5, 1), rtol=1e-4, atol=1e-4)


def test_wrong_token_count_is_an_error() -> None:
    projector = EfficientTokenProjector(in_dim=4, hidden_size=8, grid_in=3, grid_out=2)
    with pytest.raises(ValueError, match="9 tokens"):
        projector(torch.randn(1, 1, 8, 4))
