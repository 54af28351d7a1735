"""A long prompt's attention at E2B shapes, torch's SDPA forms against our block products, side by side.

One layer's attention over `benchmarks/inference.py`'s prompt (2,443 positions; the E2B preset's 8 query heads,
2 KV heads of 256; bf16 and fp32; random states of unit scale as Gemma-3n's query and key norms leave them), for
a local layer (its window, 512) and a global one, each form in turn, order rotated every round:

- `sdpa mask`: transformers' SDPA path as it is, the whole (T × T) boolean mask;
- `sdpa blocks`: the same SDPA call on blocks of half a window (`windowed_attention`, local layers only);
- `sdpa causal`: SDPA told `is_causal` (global layers only; what transformers does without a mask);
- `ours`: `prefill_attention.block_attention` (fp32 logits over each block's keys, our default on the CPU).

Each figure is the median of the rounds; beside it the largest error against the exact result (float64).

    python benchmarks/prompt_attention.py [--rounds 7] [--length N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

# benchmarks/inference.py (its prompt): run as a script, this folder is on sys.path.
import inference as BENCH
from videogemma.config import VideoGemmaConfig
from videogemma.modeling.prefill_attention import block_attention
from videogemma.modeling.windowed_attention import windowed_sdpa_attention_forward

E2B = VideoGemmaConfig.from_preset("e2b")
HEADS, KV_HEADS = E2B.text_config.num_attention_heads, E2B.text_config.num_key_value_heads
HEAD_DIM, WINDOW = E2B.text_config.head_dim, E2B.text_config.sliding_window


class _Attention(torch.nn.Module):
    """What transformers' SDPA path reads off the attention module."""

    is_causal = True
    num_key_value_groups = HEADS // KV_HEADS


def masks(length: int) -> dict[str, torch.Tensor]:
    positions = torch.arange(length)
    causal = positions[None, :] <= positions[:, None]
    local = causal & (positions[:, None] - positions[None, :] < WINDOW)
    return {"local": local[None, None], "global": causal[None, None]}


def forms(layer: str, mask: torch.Tensor) -> dict[str, Callable]:
    """The ways to compute this layer's attention, each (q, k, v) -> (B, T, heads, D)."""
    module = _Attention()

    def sdpa(q, k, v, attn_mask=None, is_causal=False):
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=is_causal, enable_gqa=True, scale=1.0
        )
        return out.transpose(1, 2)

    def sdpa_blocks(q, k, v):
        with torch.enable_grad():  # gradients on: the windowed path's SDPA blocks, not our products
            return windowed_sdpa_attention_forward(module, q, k, v, mask, sliding_window=WINDOW, scaling=1.0)[
                0
            ]

    found = {"sdpa mask": lambda q, k, v: sdpa(q, k, v, attn_mask=mask)}
    if layer == "local":
        found["sdpa blocks"] = sdpa_blocks
    else:
        found["sdpa causal"] = lambda q, k, v: sdpa(q, k, v, is_causal=True)
    found["ours"] = lambda q, k, v: block_attention(q, k, v, mask, 1.0, False)
    return found


def measure(length: int, dtype: torch.dtype, rounds: int) -> list[tuple[str, str, float, float]]:
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(1, HEADS, length, HEAD_DIM, generator=generator).to(dtype)
    k = torch.randn(1, KV_HEADS, length, HEAD_DIM, generator=generator).to(dtype)
    v = torch.randn(1, KV_HEADS, length, HEAD_DIM, generator=generator).to(dtype)
    rows = []
    for layer, mask in masks(length).items():
        exact = F.scaled_dot_product_attention(
            q.double(), k.double(), v.double(), attn_mask=mask, enable_gqa=True, scale=1.0
        ).transpose(1, 2)
        candidates = forms(layer, mask)
        times: dict[str, list[float]] = {name: [] for name in candidates}
        errors = {}
        with torch.no_grad():
            for name, form in candidates.items():  # a warm-up each, and the error
                errors[name] = (form(q, k, v).double() - exact).abs().max().item()
            for index in range(rounds):
                names = list(candidates)
                names = names[index % len(names) :] + names[: index % len(names)]
                for name in names:
                    start = time.perf_counter()
                    candidates[name](q, k, v)
                    times[name].append(time.perf_counter() - start)
        rows += [(layer, name, statistics.median(times[name]) * 1e3, errors[name]) for name in candidates]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--length", type=int, default=None, help="prompt positions (default: the E2B prompt's)"
    )
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    args.length = args.length or int(BENCH.prompt_ids(E2B, E2B.num_visual_tokens).shape[1])
    print(f"{args.length} positions, {torch.get_num_threads()} threads, {args.rounds} rounds (medians)")
    print(f"{'dtype':<10}{'layer':<8}{'form':<13}{'ms':>9}{'× ours':>9}{'max |error|':>13}")
    for dtype in (torch.bfloat16, torch.float32):
        rows = measure(args.length, dtype, args.rounds)
        ours = {layer: ms for layer, name, ms, _ in rows if name == "ours"}
        for layer, name, ms, error in rows:
            name_of = str(dtype).removeprefix("torch.")
            print(f"{name_of:<10}{layer:<8}{name:<13}{ms:>9.1f}{ms / ours[layer]:>9.2f}{error:>13.4f}")
    print(f"load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
