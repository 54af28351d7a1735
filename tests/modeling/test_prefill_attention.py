"""A CPU prompt's attention as block products: SDPA's result (fp32 to its rounding, bf16 about as close to the
exact result as SDPA is) for local and global masks, masks of either kind, per-head masks, no mask, a padded
batch and a cache longer than the prompt; each block multiplies only the keys its mask lets through."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from videogemma.modeling import prefill_attention
from videogemma.modeling.prefill_attention import QUERY_BLOCK, block_attention

HEADS, KV_HEADS, HEAD_DIM, WINDOW = 8, 2, 32, 64


def _states(length: int, keys: int, dtype: torch.dtype, batch: int = 1, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    query = torch.randn(batch, HEADS, length, HEAD_DIM, generator=generator) * 0.5
    key = torch.randn(batch, KV_HEADS, keys, HEAD_DIM, generator=generator)
    value = torch.randn(batch, KV_HEADS, keys, HEAD_DIM, generator=generator)
    return query.to(dtype), key.to(dtype), value.to(dtype)


def _causal(length: int, keys: int, window: int | None = None) -> torch.Tensor:
    """(1, 1, T, S) boolean: the queries are the last T positions."""
    positions = torch.arange(keys - length, keys)[:, None]
    key_positions = torch.arange(keys)[None, :]
    allowed = key_positions <= positions
    if window is not None:
        allowed &= positions - key_positions < window
    return allowed[None, None]


def _sdpa(query, key, value, mask, is_causal=False, dtype=None):
    """transformers' layout (B, T, heads, D) of torch's SDPA, in `dtype` if given (float64: the exact one)."""
    if dtype is not None:
        query, key, value = query.to(dtype), key.to(dtype), value.to(dtype)
        mask = mask.to(dtype) if mask is not None and mask.is_floating_point() else mask
    output = F.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, is_causal=is_causal, enable_gqa=True, scale=1.0
    )
    return output.transpose(1, 2)


def _check(query, key, value, mask, is_causal=False, rows=slice(None)) -> None:
    with torch.inference_mode():
        ours = block_attention(query, key, value, mask, 1.0, is_causal)
        theirs = _sdpa(query, key, value, mask, is_causal)
        exact = _sdpa(query, key, value, mask, is_causal, dtype=torch.float64)
    assert ours.shape == theirs.shape and ours.dtype == query.dtype
    ours, theirs, exact = ours[:, rows], theirs[:, rows], exact[:, rows]
    if query.dtype == torch.float32:
        torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=1e-5)
    else:  # both round: ours no further from the exact result than SDPA's, give or take one bf16 step
        our_error = (ours.double() - exact).abs().max().item()
        their_error = (theirs.double() - exact).abs().max().item()
        assert our_error <= 1.5 * their_error + 2**-8, (our_error, their_error)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("window", [None, WINDOW])
def test_a_prompt_attends_as_sdpa_does(dtype: torch.dtype, window: int | None) -> None:
    length = 3 * QUERY_BLOCK + 17  # the last block short
    _check(*_states(length, length, dtype), _causal(length, length, window))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_no_mask_is_causal_or_not_as_asked(dtype: torch.dtype) -> None:
    length = 2 * QUERY_BLOCK + 5
    states = _states(length, length, dtype)
    _check(*states, None, is_causal=True)
    _check(*states, None, is_causal=False)


def test_an_additive_mask_and_a_mask_per_head() -> None:
    length = 2 * QUERY_BLOCK + 9
    states = _states(length, length, torch.float32)
    allowed = _causal(length, length, WINDOW)
    additive = torch.zeros(allowed.shape).masked_fill_(~allowed, torch.finfo(torch.float32).min)
    _check(*states, additive)
    per_head = allowed.repeat(1, HEADS, 1, 1)
    per_head[:, 3, :, : length // 2] = False  # one head sees less than the others
    per_head[:, 3, : length // 2, 0] = True  # (and no row of it nothing)
    _check(*states, per_head)


def test_under_autocast_the_logits_stay_fp32() -> None:
    length = QUERY_BLOCK + 40
    query, key, value = _states(length, length, torch.bfloat16)
    allowed = _causal(length, length, WINDOW)
    additive = torch.zeros(allowed.shape, dtype=torch.bfloat16).masked_fill_(~allowed, -torch.inf)
    with torch.inference_mode():
        expected = block_attention(query, key, value, allowed, 1.0, False)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # an evaluation inside a bf16 training run
            under_autocast = block_attention(query, key, value, additive, 1.0, False)
    torch.testing.assert_close(under_autocast, expected, atol=0, rtol=0)


def test_a_left_padded_batch_gives_the_real_rows() -> None:
    length, pad = 2 * QUERY_BLOCK + 3, QUERY_BLOCK + 7  # a whole block of padding, and part of the next
    states = _states(length, length, torch.float32, batch=2)
    mask = _causal(length, length, WINDOW).repeat(2, 1, 1, 1)
    mask[1, :, :, :pad] = False
    _check(*states, mask, rows=slice(pad, None))
    with torch.inference_mode():
        output = block_attention(*states, mask, 1.0, False)
    assert torch.isfinite(output).all()  # the padding's rows too: nothing to see is not a NaN


def test_queries_after_a_cache_see_the_cache() -> None:
    length, keys = QUERY_BLOCK + 20, 3 * QUERY_BLOCK
    states = _states(length, keys, torch.bfloat16)
    _check(*states, _causal(length, keys, WINDOW))
    _check(*states, None, is_causal=True)  # SDPA's meaning: query i sees keys 0..i


def test_a_block_multiplies_only_the_keys_its_mask_lets_through() -> None:
    length = 4 * QUERY_BLOCK
    local, whole = _causal(length, length, WINDOW), _causal(length, length)
    start, end = 2 * QUERY_BLOCK, 3 * QUERY_BLOCK
    assert prefill_attention._key_span(local[..., start:end, :], length) == (start - WINDOW + 1, end)
    assert prefill_attention._key_span(whole[..., start:end, :], length) == (0, end)
    assert prefill_attention._key_span(None, length) == (0, length)


def test_gradients_and_decode_steps_are_left_to_sdpa() -> None:
    query = torch.zeros(1, HEADS, 4, HEAD_DIM)
    with torch.inference_mode():
        assert prefill_attention.takes(query, 0.0, {})
        assert not prefill_attention.takes(query[:, :, :1], 0.0, {})  # a decode step
        assert not prefill_attention.takes(query, 0.1, {})  # dropout
        assert not prefill_attention.takes(query, 0.0, {"softcap": 30.0})
    assert not prefill_attention.takes(query, 0.0, {})  # gradients on


def test_with_amx_bf16_stays_with_the_flash_kernel(monkeypatch) -> None:
    query = torch.zeros(1, HEADS, 4, HEAD_DIM)
    monkeypatch.setattr(prefill_attention, "cpu_has_bf16_tiles", lambda: True)
    with torch.inference_mode():
        assert not prefill_attention.takes(query.bfloat16(), 0.0, {})
        assert prefill_attention.takes(query, 0.0, {})  # fp32: no tiles either way
