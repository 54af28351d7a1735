"""Sliding-window attention over a long prompt, in blocks of queries that each see only their window's keys.

Gemma-3n's local layers (four in five) attend to the last `sliding_window` positions. Over a prompt longer than
that, transformers' SDPA path gives the kernel the whole (T × T) mask, so the kernel computes every query against
every key and masks most of them away: at E2B (2,443 prompt tokens, window 512) a local layer's attention took
39 ms on this CPU where the blocks inside the window take 12.6 (`benchmarks/inference.py --e2b` shows the
prefill). Here the queries go in blocks of half a window, each with the keys from `sliding_window - 1` before its
first query to its last (every key its mask can let through), through the same SDPA call on the mask's matching
slice: each query's softmax runs over the same keys, so the result equals the whole-mask call's up to the order
of the kernel's sums. On the CPU without gradients, a decode step (one query) goes to `decode_attention`'s two
products and a prompt to `prefill_attention`'s block products (faster than these blocks there); the blocks here
serve gradients (training on long prompts) and other devices; everything else (global layers, short prompts, a
cache with earlier turns) goes to transformers' SDPA as it is.

    register_windowed_attention()      # once; then the implementation is Gemma-3n's `_attn_implementation`
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

from videogemma.constants import WINDOWED_ATTENTION
from videogemma.modeling import decode_attention, prefill_attention

# From this many windows of queries on, splitting into blocks pays (measured at E2B: 4.8 windows, 3.1× faster);
# below it the few blocks' calls cost about what they save.
SPLIT_FROM_WINDOWS = 4


def windowed_sdpa_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    sliding_window: int | None = None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature: query (B, heads, T, D), key / value (B, kv heads, S, D) ->
    ((B, T, heads, D), None)."""
    if decode_attention.takes(query, dropout, kwargs):
        return decode_attention.one_query_attention(query, key, value, attention_mask, scaling), None
    if prefill_attention.takes(query, dropout, kwargs):
        is_causal = kwargs.get("is_causal")
        is_causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
        output = prefill_attention.block_attention(query, key, value, attention_mask, scaling, is_causal)
        return output, None
    kwargs.update(dropout=dropout, scaling=scaling)
    length = query.shape[2]
    splits = (
        sliding_window is not None
        and attention_mask is not None
        and key.shape[2] == length
        and tuple(attention_mask.shape[-2:]) == (length, length)
        and length >= SPLIT_FROM_WINDOWS * sliding_window
    )
    if not splits:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, sliding_window=sliding_window, **kwargs
        )
    block = max(1, sliding_window // 2)
    outputs = []
    for start in range(0, length, block):
        end = min(length, start + block)
        first_key = max(0, start - sliding_window + 1)
        output, _ = sdpa_attention_forward(
            module,
            query[:, :, start:end],
            key[:, :, first_key:end],
            value[:, :, first_key:end],
            attention_mask[..., start:end, first_key:end],
            sliding_window=sliding_window,
            **kwargs,
        )
        outputs.append(output)
    return torch.cat(outputs, dim=1), None


def register_windowed_attention() -> None:
    """Make `WINDOWED_ATTENTION` a name transformers' models take for `_attn_implementation`, with SDPA's masks."""
    AttentionInterface.register(WINDOWED_ATTENTION, windowed_sdpa_attention_forward)
    AttentionMaskInterface.register(WINDOWED_ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
