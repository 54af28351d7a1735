"""A decode step's attention as two fp32 products: transformers' SDPA result for one query (grouped heads, masks
of both kinds, a padded batch), the same greedy tokens through a model, and SDPA's path wherever it does not
apply (prompts, gradients)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.integrations.sdpa_attention import sdpa_attention_forward

import videogemma
from videogemma.constants import WINDOWED_ATTENTION
from videogemma.modeling import decode_attention, windowed_attention


@pytest.fixture
def path(c_or_fallback) -> str:
    """Each test on both forms: our C halves (where they build) and torch's operations."""
    return c_or_fallback(decode_attention, "_kernels_take")


class _Attention(nn.Module):
    """What transformers' SDPA path reads of an attention module."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.num_key_value_groups = groups
        self.is_causal = True


def _states(batch: int, heads: int, kv_heads: int, length: int, dtype: torch.dtype, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)

    def draw(*shape: int) -> torch.Tensor:
        # Normalised as Gemma-3n's q / k norms leave them (logits of tens at scaling 1), then the dtype.
        values = torch.randn(*shape, generator=generator)
        return (values / values.norm(dim=-1, keepdim=True) * shape[-1] ** 0.5).to(dtype)

    head_dim = 64
    return (
        draw(batch, heads, 1, head_dim),
        draw(batch, kv_heads, length, head_dim),
        draw(batch, kv_heads, length, head_dim),
    )


def _both(query, key, value, mask, scaling):
    module = _Attention(query.shape[1] // key.shape[1])
    with torch.inference_mode():
        reference, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=scaling)
        ours = decode_attention.one_query_attention(query, key, value, mask, scaling)
    return ours, reference


@pytest.mark.parametrize("heads,kv_heads", [(8, 2), (4, 4), (2, 1)])
def test_one_query_gives_sdpas_output_in_fp32(heads: int, kv_heads: int, path: str) -> None:
    query, key, value = _states(2, heads, kv_heads, 300, torch.float32)
    ours, reference = _both(query, key, value, None, 1.0)
    assert ours.shape == reference.shape == (2, 1, heads, 64)
    torch.testing.assert_close(ours, reference, atol=2e-5, rtol=1e-5)
    ours, reference = _both(query, key, value, None, None)  # the default scale, 1 / sqrt(D)
    torch.testing.assert_close(ours, reference, atol=2e-5, rtol=1e-5)


def test_one_query_in_bf16_is_within_the_outputs_rounding(path: str) -> None:
    query, key, value = _states(1, 8, 2, 2443, torch.bfloat16, seed=1)
    ours, reference = _both(query, key, value, None, 1.0)
    exact, _ = _both(query.float(), key.float(), value.float(), None, 1.0)
    assert ours.dtype == torch.bfloat16
    # Ours is the exact result rounded once to bf16: within one step of bf16 of it, and no further from it than
    # SDPA's kernel (which also rounds its probabilities).
    ulp = exact.abs().clamp_min(2**-8) * 2**-7
    assert ((ours.float() - exact).abs() <= ulp).all()
    assert (ours.float() - exact).abs().mean() <= (reference.float() - exact).abs().mean()


def test_a_boolean_or_additive_mask_and_a_padded_batch_mask_the_same_keys(path: str) -> None:
    query, key, value = _states(2, 8, 2, 40, torch.float32, seed=2)
    allowed = torch.ones(2, 1, 1, 40, dtype=torch.bool)
    allowed[1, ..., :13] = False  # the second row left-padded
    allowed[0, ..., :5] = False  # the first one's keys before its window
    for mask in (allowed, torch.zeros(allowed.shape).masked_fill_(~allowed, torch.finfo(torch.float32).min)):
        ours, reference = _both(query, key, value, mask, 1.0)
        torch.testing.assert_close(ours, reference, atol=2e-5, rtol=1e-5)
    # A per-head mask: each query head its own keys.
    per_head = torch.rand(2, 8, 1, 40, generator=torch.Generator().manual_seed(3)) > 0.3
    per_head[..., -1] = True
    ours, reference = _both(query, key, value, per_head, 1.0)
    torch.testing.assert_close(ours, reference, atol=2e-5, rtol=1e-5)
    # The masked keys really are left out: changing them changes nothing.
    changed = value.clone()
    changed[1, :, :13] = 100.0
    again, _ = _both(query, key, changed, allowed, 1.0)
    first, _ = _both(query, key, value, allowed, 1.0)
    torch.testing.assert_close(again[1], first[1])


def test_a_cache_longer_than_its_positions_is_read_where_it_lies(path: str) -> None:
    """A growing cache's keys and values are views of a longer buffer (batch and head strides past the length)."""
    query, key, value = _states(2, 8, 2, 700, torch.bfloat16, seed=6)
    key_view, value_view = key[:, :, :517], value[:, :, :517]
    assert not key_view.is_contiguous()
    ours, _ = _both(query, key_view, value_view, None, 1.0)
    copied, reference = _both(query, key_view.contiguous(), value_view.contiguous(), None, 1.0)
    torch.testing.assert_close(ours, copied, atol=0, rtol=0)
    torch.testing.assert_close(ours.float(), reference.float(), atol=2e-2, rtol=0)


def test_only_a_cpu_decode_step_without_gradients_takes_the_products() -> None:
    query, _, _ = _states(1, 8, 2, 10, torch.float32)
    with torch.inference_mode():
        assert decode_attention.takes(query, 0.0, {})
        assert not decode_attention.takes(query.expand(1, 8, 3, 64), 0.0, {})  # a prompt
        assert not decode_attention.takes(query, 0.1, {})  # dropout
        assert not decode_attention.takes(query, 0.0, {"softcap": 50.0})
    assert not decode_attention.takes(query, 0.0, {})  # gradients on


def test_a_models_greedy_tokens_are_sdpas_and_its_decode_steps_use_the_products(monkeypatch) -> None:
    model, _ = videogemma.load("tiny", dtype="float32", device="cpu", quiet=True)
    ids = torch.randint(10, 1000, (1, 40), generator=torch.Generator().manual_seed(5))
    calls = []
    ours_attention = decode_attention.one_query_attention

    def spy(query, *args):
        calls.append(query.shape)
        return ours_attention(query, *args)

    monkeypatch.setattr(windowed_attention.decode_attention, "one_query_attention", spy)
    answers = {}
    for implementation in ("sdpa", WINDOWED_ATTENTION):
        model.language_model.set_attn_implementation(implementation)
        with torch.inference_mode():
            answers[implementation] = model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False
            )
    assert torch.equal(answers["sdpa"], answers[WINDOWED_ATTENTION])
    layers = model.config.text_config.num_hidden_layers
    assert len(calls) == 7 * layers  # every layer of the seven decode steps, none of the prompt
