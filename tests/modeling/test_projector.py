from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from videogemma.modeling.projector import EfficientTokenProjector


def reference_etp(projector: EfficientTokenProjector, features: torch.Tensor) -> torch.Tensor:
    """ARCHITECTURE §5 spelled out per item: MLP, pool each frame, mean over frames, PEG, flatten, RMSNorm."""
    outputs = []
    for item in features:
        grids = []
        for frame in item:
            x = projector.mlp[2](F.gelu(projector.mlp[0](frame)))
            grid = x.T.reshape(1, -1, projector.grid_in, projector.grid_in)
            grids.append(F.adaptive_avg_pool2d(grid, projector.grid_out))
        merged = torch.stack(grids).mean(0)
        merged = merged + projector.peg(merged)
        tokens = merged.reshape(merged.shape[1], -1).T
        outputs.append(tokens / tokens.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt())
    return torch.stack(outputs)


def test_etp_matches_the_spec_and_merges_frames_by_grid_position() -> None:
    torch.manual_seed(0)
    projector = EfficientTokenProjector(in_dim=6, hidden_size=10, grid_in=4, grid_out=2)
    features = torch.randn(3, 2, 16, 6)
    out = projector(features)
    assert out.shape == (3, 4, 10)
    torch.testing.assert_close(out, reference_etp(projector, features), rtol=1e-5, atol=1e-5)
    # the frames of an item are merged position by position: swapping them changes nothing
    torch.testing.assert_close(projector(features.flip(1)), out, rtol=1e-5, atol=1e-6)


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
    pooled = F.gelu(F.gelu(grid[0, 0, :, 0]).reshape(1, 4, 4)).reshape(1, 1, 4, 4)
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
