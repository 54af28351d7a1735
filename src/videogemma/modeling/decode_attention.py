"""A decode step's attention on the CPU: one query position against the cache, in two passes of our own.

For one query, torch 2.13's CPU flash-attention kernel (where SDPA sends bf16 and fp32 on this CPU) costs far more
than the work: at E2B (8 query heads, 2 KV heads of 256) 1.1 ms a call over a local layer's 512 cached
positions and 5.4 ms over a global layer's 2,443 (2 cores), 37 ms of a 192 ms int8 decode step, for 20 MFLOP.
Here the logits (each key row read once for the query heads that share it), then the softmax (torch), then the
weighted sum of the value rows, in fp32 from the cache as it lies: with our C halves (`quantized_rows.c`)
0.04-0.08 and 0.15-0.20 ms; as torch's matrix products on the cache widened to fp32 (where the C halves do not
run) 0.10 and 0.40-0.47 ms. The result is the exact one rounded once to the query's dtype (SDPA's kernel also
rounds its probabilities): tested against transformers' SDPA path (masks of either kind, grouped heads, a padded
batch, a cache longer than its positions, greedy tokens).

Prompts (many query positions), gradients, traced code, other devices and what SDPA's path does that this does
not (dropout, a position bias, soft-capping) go to transformers' SDPA as before (`windowed_attention`).
"""

from __future__ import annotations

from typing import Any

import torch

from videogemma.modeling import quantized_rows


def takes(query: torch.Tensor, dropout: float, kwargs: dict[str, Any]) -> bool:
    """Whether this call is a CPU decode step that the two products compute as SDPA would."""
    return query.shape[2] == 1 and cpu_inference_call(query, dropout, kwargs)


def cpu_inference_call(query: torch.Tensor, dropout: float, kwargs: dict[str, Any]) -> bool:
    """Whether an attention call is one our own forms compute as SDPA would (this one's and
    `prefill_attention`'s): on the CPU, no gradients, not traced, nothing of SDPA's path beyond the mask."""
    return (
        query.device.type == "cpu"
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
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    if _kernels_take(query, key, value):
        return _through_kernels(query, key, value, attention_mask, scale)
    return _through_torch(query, key, value, attention_mask, scale)


def _kernels_take(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> bool:
    """Our C halves read rows of 16-value steps in one dtype, the cache's rows contiguous, one batch size."""
    head_dim = query.shape[-1]
    return (
        quantized_rows.kernels() is not None
        and query.dtype in quantized_rows.KERNEL_DTYPES
        and query.dtype == key.dtype == value.dtype
        and head_dim % 16 == 0
        and key.shape[-1] == value.shape[-1] == head_dim
        and key.shape[0] == value.shape[0] == query.shape[0]
        and query.shape[1] % key.shape[1] == 0
        and all(states.stride(-1) == 1 and states.stride(2) == head_dim for states in (key, value))
    )


def _through_kernels(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """The logits and the weighted sum of the values in C, reading the cache where it lies; the softmax (and the
    mask) in torch between them."""
    batch, heads, _, head_dim = query.shape
    kv_heads, length = key.shape[1], key.shape[2]
    flag, shapes = int(query.dtype == torch.bfloat16), (batch, heads, kv_heads, length, head_dim)
    query = query.contiguous()
    logits = torch.empty(batch, heads, 1, length, dtype=torch.float32)
    quantized_rows.run(
        "attention_logits", query.data_ptr(), key.data_ptr(), logits.data_ptr(), flag, *shapes, key.stride(0),
        key.stride(1), scale,
    )  # fmt: skip
    if mask is not None:
        logits = _masked(logits, mask)
    weights = torch.softmax(logits, dim=-1)
    output = torch.empty(batch, 1, heads, head_dim, dtype=query.dtype)
    quantized_rows.run(
        "attention_values", weights.data_ptr(), value.data_ptr(), output.data_ptr(), flag, *shapes,
        value.stride(0), value.stride(1),
    )  # fmt: skip
    return output


def _masked(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if mask.dtype == torch.bool:
        return logits.masked_fill_(~mask, float("-inf"))
    return logits.add_(mask)


def _through_torch(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """The same in torch's operations (the cache widened to fp32 for them), where our kernels do not run."""
    batch, heads, _, head_dim = query.shape
    kv_heads = key.shape[1]
    group = heads // kv_heads
    # (B, kv heads, group, D): the query heads that share a KV head side by side, one product per KV head.
    grouped = query.reshape(batch, kv_heads, group, head_dim).float()
    logits = torch.matmul(grouped, key.float().transpose(-1, -2))
    if scale != 1.0:
        logits.mul_(scale)
    if mask is not None:
        logits = _masked(logits, _grouped_mask(mask, batch, heads, kv_heads, group))
    weights = torch.softmax(logits, dim=-1)
    output = torch.matmul(weights, value.float())  # (B, kv heads, group, value D)
    return output.reshape(batch, 1, heads, value.shape[-1]).to(query.dtype)


def _grouped_mask(mask: torch.Tensor, batch: int, heads: int, kv_heads: int, group: int) -> torch.Tensor:
    """A (B | 1, heads | 1, 1, S) mask in the grouped logits' shape (B | 1, kv heads | 1, group | 1, S)."""
    if mask.shape[1] == heads and heads > 1:
        return mask.reshape(mask.shape[0], kv_heads, group, mask.shape[-1])
    return mask.reshape(mask.shape[0], 1, 1, mask.shape[-1])
