"""The text decoder's one-row products (a decode step) on the CPU through `torch.mv`.

A decode step multiplies one row by every weight of the decoder: it is bound by how fast the weights are read.
For one row in bf16, torch 2.13's `F.linear` (a GEMM with one row) reads its weight at 16-24 GB/s on 2 cores
of this AVX512-BF16 CPU, `torch.mv` (a GEMV) at 23-30 GB/s: the 2,048 × 8,192 down projection 1.8×, the
262,144 × 2,048 LM head 1.2× faster; fp32 reads at the same speed either way (`benchmarks/row_products.py`).
Measured over E2B's decode steps in one process, alternating: 352 → 297 ms a step in bf16. The results are
the same products in another order of summation (both sum in fp32 and round once to the dtype).

Prompts (many rows), tracing (`torch.compile`), gradients and other devices keep `F.linear`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RowVectorProduct:
    """A linear layer's forward that computes a single input row as a matrix-vector product."""

    def __init__(self, linear: nn.Linear) -> None:
        self.linear = linear

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        linear = self.linear
        if torch.compiler.is_compiling() or x.device.type != "cpu" or torch.is_grad_enabled():
            return F.linear(x, linear.weight, linear.bias)
        if x.numel() != x.shape[-1]:  # more than one row
            return F.linear(x, linear.weight, linear.bias)
        out = torch.mv(linear.weight, x.reshape(-1))
        if linear.bias is not None:
            out = out + linear.bias
        return out.reshape(*x.shape[:-1], linear.out_features)


def use_row_vector_products(language_model: nn.Module) -> None:
    """Give every plain linear layer of the language model (the LM head included) the one-row product, in place."""
    for module in language_model.modules():
        if type(module) is nn.Linear and not isinstance(module.forward, RowVectorProduct):
            module.forward = RowVectorProduct(module)


def uses_row_vector_products(language_model: nn.Module) -> bool:
    return any(isinstance(module.forward, RowVectorProduct) for module in language_model.modules())
