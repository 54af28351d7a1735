"""Gemma-3n's Gaussian top-k with its quantile computed once: the library's output bit for bit, the library's
form under gradients, and a loaded model's sparse layers (only those) using it."""

from __future__ import annotations

import pytest
import torch

import videogemma
from videogemma.modeling.sparse_activation import CachedGaussianTopK, use_cached_sparsity


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    model, _ = videogemma.load("tiny", dtype="float32", device="cpu", quiet=True)
    return model


def test_a_loaded_models_sparse_layers_and_only_those_use_the_cached_quantile(model) -> None:
    layers = model.language_model.model.layers
    sparse = [layer.mlp.activation_sparsity > 0 for layer in layers]
    assert any(sparse) and not all(sparse)
    for layer, is_sparse in zip(layers, sparse, strict=True):
        assert isinstance(layer.mlp._gaussian_topk, CachedGaussianTopK) == is_sparse
    use_cached_sparsity(model.language_model)  # idempotent: not wrapped twice
    assert not isinstance(layers[0].mlp._gaussian_topk.library, CachedGaussianTopK)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_cut_off_is_the_librarys_bit_for_bit(model, dtype: torch.dtype) -> None:
    cached = model.language_model.model.layers[0].mlp._gaussian_topk
    for seed in range(20):
        generator = torch.Generator().manual_seed(seed)
        gate = (torch.randn(2, 3, 64, generator=generator) * (seed % 5 + 0.1) + seed % 3).to(dtype)
        with torch.inference_mode():
            ours, library = cached(gate), cached.library(gate)
        assert ours.dtype == dtype
        assert torch.equal(ours, library)
        assert (ours == 0).float().mean() > 0.5  # sparse indeed: 95 % of a Gaussian's values cut


def test_gradients_go_through_the_librarys_form(model, monkeypatch) -> None:
    cached = model.language_model.model.layers[0].mlp._gaussian_topk
    calls = []
    monkeypatch.setattr(cached, "library", lambda inputs: calls.append(1) or torch.relu(inputs))
    gate = torch.randn(1, 1, 64, requires_grad=True)
    cached(gate).sum().backward()
    assert calls and gate.grad is not None
