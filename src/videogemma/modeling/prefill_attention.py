"""A CPU prefill's attention as matrix products over blocks of queries, each against only the keys it may see.

torch 2.13's CPU flash-attention kernel runs a long prompt's attention far below this CPU's matrix-product rate:
at E2B (2,443 prompt tokens, 8 query heads and 2 KV heads of 256; 2-core Zen 5) a global layer took 280 ms with
transformers' causal mask (160 ms told `is_causal`), a local layer 89 ms in blocks of half a window, 3.3 s of an
18 s compiled bf16 prefill. Here, for each block of `QUERY_BLOCK` queries: the logits as one batched product in
fp32 (the query heads that share a KV head stacked), the mask, torch's softmax, the probabilities rounded to the
values' dtype, their product with the values. The keys a block multiplies are the span its mask lets through
(its window for a local layer, the keys up to its last query for a global one), so masked-away blocks cost
nothing; 52 and 112 ms a layer, the result within SDPA's own rounding of the exact one (tested).

On a CPU with AMX, bf16 stays with SDPA: its flash kernel's bf16 tiles outrun fp32 logits there.

Rows that may see no key (a padded batch's padding) get the mean of their block's values where SDPA gives what
its kernel gives; no caller reads them. Gradients, dropout, traced code, other devices and SDPA's extras go to
transformers' SDPA (`windowed_attention`).
"""

from __future__ import annotations

from typing import Any

import torch

from videogemma.modeling.decode_attention import cpu_inference_call
from videogemma.precision import cpu_has_bf16_tiles

# Queries per product: smaller blocks skip more of the masked keys, larger ones run the products faster
# (E2B on 2 cores, per layer local / global: 64 → 48 / 138 ms, 128 → 52-61 / 112-121, 192 → 62 / 140).
QUERY_BLOCK = 128
# What a masked logit becomes: finite, so a row with nothing to see stays a number through the softmax.
MASKED = torch.finfo(torch.float32).min


def takes(query: torch.Tensor, dropout: float, kwargs: dict[str, Any]) -> bool:
    """Whether this call is a CPU prompt's attention (many queries, no gradients) the block products compute."""
    return (
        query.shape[2] > 1
        and cpu_inference_call(query, dropout, kwargs)
        # With AMX, torch's flash kernel multiplies bf16 on tiles, faster than our fp32 logits can be (the
        # previous host, a Xeon: 12.6 ms a local layer in SDPA's blocks, 21 ms a causal global one).
        and not (query.dtype == torch.bfloat16 and cpu_has_bf16_tiles())
    )


# (Autocast off: an evaluation inside a bf16 training run would round the logits to bf16.)
@torch.autocast("cpu", enabled=False)
def block_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None,
    is_causal: bool,
) -> torch.Tensor:
    """query (B, heads, T, D), key / value (B, kv heads, S, D) with the queries the last T positions, a boolean
    (True: attend) or additive mask broadcastable to (B, heads, T, S), or None (`is_causal` then says whether
    query i sees only keys 0..i, as in SDPA) -> (B, T, heads, D) in the query's dtype."""
    batch, heads, length, head_dim = query.shape
    kv_heads, keys = key.shape[1], key.shape[2]
    groups = heads // kv_heads
    scale = head_dim**-0.5 if scaling is None else scaling
    queries = query.float()  # (the fp32 logits: bf16 ones would round them to 3 digits)
    if scale != 1.0:  # (Gemma-3n's is 1: its query norm scales)
        queries = queries * scale
    key_rows = key.float().reshape(batch * kv_heads, keys, head_dim)
    output = torch.empty(batch, kv_heads, groups, length, head_dim, dtype=query.dtype)
    for start in range(0, length, QUERY_BLOCK):
        end = min(length, start + QUERY_BLOCK)
        mask = _block_mask(attention_mask, is_causal, start, end, keys)
        first, last = _key_span(mask, keys)
        block = queries[:, :, start:end].reshape(batch * kv_heads, groups * (end - start), head_dim)
        logits = torch.bmm(block, key_rows[:, first:last].transpose(1, 2))
        logits = logits.view(batch, kv_heads, groups, end - start, last - first)
        if mask is not None:
            _apply_mask(logits, mask[..., first:last], heads)
        weights = torch.softmax(logits, dim=-1).to(value.dtype).view(batch * kv_heads, -1, last - first)
        values = value[:, :, first:last].reshape(batch * kv_heads, last - first, head_dim)
        output[..., start:end, :] = torch.bmm(weights, values).view(batch, kv_heads, groups, -1, head_dim)
    return output.view(batch, heads, length, head_dim).transpose(1, 2).contiguous()


def _block_mask(
    attention_mask: torch.Tensor | None, is_causal: bool, start: int, end: int, keys: int
) -> torch.Tensor | None:
    """The mask of queries start..end (B or 1, heads or 1, rows, S): the given one's rows, or the causal one."""
    if attention_mask is not None:
        return attention_mask[..., start:end, :]
    if not is_causal:
        return None
    # SDPA's `is_causal`: query i sees keys 0..i, however many keys there are.
    return (torch.arange(keys)[None, :] <= torch.arange(start, end)[:, None])[None, None]


def _key_span(mask: torch.Tensor | None, keys: int) -> tuple[int, int]:
    """The first key any of the block's queries may see and one past the last (all keys if none may)."""
    if mask is None:
        return 0, keys
    allowed = mask if mask.dtype == torch.bool else mask > torch.finfo(mask.dtype).min
    seen = allowed.reshape(-1, keys).any(dim=0).nonzero()
    if seen.numel() == 0:
        return 0, keys
    return int(seen[0]), int(seen[-1]) + 1


def _apply_mask(logits: torch.Tensor, mask: torch.Tensor, heads: int) -> None:
    """Mask (B, kv heads, groups, rows, keys) logits in place with a (B or 1, heads or 1, rows, keys) mask."""
    kv_heads, groups = logits.shape[1:3]
    if mask.shape[1] == heads:
        mask = mask.reshape(mask.shape[0], kv_heads, groups, *mask.shape[2:])
    else:
        mask = mask.unsqueeze(2)  # (B, 1, 1, rows, keys): every head alike
    if mask.dtype == torch.bool:
        logits.masked_fill_(mask.logical_not(), MASKED)
    else:
        logits.add_(mask).clamp_min_(MASKED)
