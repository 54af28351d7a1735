"""A decode step's attention on the CPU: one query position against the cache, as two matrix products in fp32.

For one query, torch 2.13's CPU flash-attention kernel (where SDPA sends bf16 and fp32 on this CPU) costs far more
than the work: at E2B (8 query heads, 2 KV heads of 256) 1.1 ms a call over a local layer's 512 cached
positions and 5.4 ms over a global layer's 2,443 (2 cores), 37 ms of a 192 ms int8 decode step, where the
products themselves are 20 MFLOP. Here each KV head's group of query heads is one (group × D) by (D × S) product,
the softmax and the (group × S) by (S × D) product follow, all in fp32 (the cache is widened once a call):
0.12 and 0.66 ms (`benchmarks/inference.py --e2b` shows the decode steps). The result is SDPA's up to the order
of the sums and the rounding of the output to the query's dtype (tested against transformers' SDPA path: masks
of either kind, grouped heads, a padded batch, greedy tokens).

Prompts (many query positions), gradients, traced code, other devices and what SDPA's path does that this does
not (dropout, a position bias, soft-capping) go to transformers' SDPA as before (`windowed_attention`).
"""

from __future__ import annotations

from typing import Any

import torch


def takes(query: torch.Tensor, dropout: float, kwargs: dict[str, Any]) -> bool:
    """Whether this call is a CPU decode step that the two products compute as SDPA would."""
    return (
        query.shape[2] == 1
        and query.device.type == "cpu"
        and not torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
        and not dropout
        and kwargs.get("position_bias") is None
        and kwargs.get("softcap") is None
    )


def one_query_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None,
) -> torch.Tensor:
    """query (B, heads, 1, D), key / value (B, kv heads, S, D), a boolean (True: attend) or additive mask
    broadcastable to (B, heads, 1, S) -> (B, 1, heads, D) in the query's dtype (transformers' layout)."""
    batch, heads, _, head_dim = query.shape
    kv_heads = key.shape[1]
    group = heads // kv_heads
    scale = head_dim**-0.5 if scaling is None else scaling
    # (B, kv heads, group, D): the query heads that share a KV head side by side, one product per KV head.
    grouped = query.reshape(batch, kv_heads, group, head_dim).float()
    logits = torch.matmul(grouped, key.float().transpose(-1, -2))
    if scale != 1.0:
        logits.mul_(scale)
    if attention_mask is not None:
        mask = _grouped_mask(attention_mask, batch, heads, kv_heads, group)
        if mask.dtype == torch.bool:
            logits.masked_fill_(~mask, float("-inf"))
        else:
            logits.add_(mask)
    weights = torch.softmax(logits, dim=-1)
    output = torch.matmul(weights, value.float())  # (B, kv heads, group, D)
    return output.reshape(batch, 1, heads, head_dim).to(query.dtype)


def _grouped_mask(mask: torch.Tensor, batch: int, heads: int, kv_heads: int, group: int) -> torch.Tensor:
    """A (B | 1, heads | 1, 1, S) mask in the grouped logits' shape (B | 1, kv heads | 1, group | 1, S)."""
    if mask.shape[1] == heads and heads > 1:
        return mask.reshape(mask.shape[0], kv_heads, group, mask.shape[-1])
    return mask.reshape(mask.shape[0], 1, 1, mask.shape[-1])
