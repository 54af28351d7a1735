"""The text decoder's one-row products (a decode step) on the CPU through `torch.mv`, or for bf16 weights our
row kernel where it runs (`quantized_rows.bf16_row`: prefetching, AVX512-BF16 products).

A decode step multiplies one row by every weight of the decoder: it is bound by how fast the weights are read.
For one row in bf16, torch 2.13's `F.linear` (a GEMM with one row) reads its weight at 18-25 GB/s on 2 cores
of this AVX512-BF16 CPU, `torch.mv` (a GEMV) at 20-31 GB/s: the 2,048 × 8,192 down projection 1.55×, the
262,400 × 2,048 LM head 1.2× faster; fp32 reads at the same speed either way (`benchmarks/row_products.py`).
E2B's bf16 decode steps, one process, the two alternating: 293 → 252 ms a step. The results are the same
products summed in another order (both sum in fp32 and round once to the dtype).

Our bf16 kernel reads the same weights at 1.0-1.3× `torch.mv`'s GB/s (`benchmarks/row_products.py`).

Prompts (many rows), traced code (`torch.compile`), gradients and other devices keep `F.linear`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from videogemma.modeling import quantized_rows


class RowVectorLinear(nn.Linear):
    """`nn.Linear` computing a single input row as a matrix-vector product. A loaded layer becomes one by
    changing its class (`use_row_vector_products`): same parameters, same state dict; traced code sees one
    class for every layer (an instance-bound forward made dynamo compile a graph per layer)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling() or x.device.type != "cpu" or torch.is_grad_enabled():
            return F.linear(x, self.weight, self.bias)
        if x.numel() != x.shape[-1]:  # more than one row
            return F.linear(x, self.weight, self.bias)
        if bf16_kernel_fits(self.weight, x.dtype):
            out = quantized_rows.bf16_row(x, self.weight)
        else:
            out = torch.mv(self.weight, x.reshape(-1))
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)


def bf16_kernel_fits(weight: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether our bf16 row kernel takes this weight for rows of `dtype`."""
    return (
        weight.dtype == dtype == torch.bfloat16
        and weight.shape[1] % 32 == 0
        and weight.is_contiguous()
        and quantized_rows.kernels() is not None
    )


def use_row_vector_products(language_model: nn.Module) -> None:
    """Make every plain linear layer of the language model (the LM head included) a `RowVectorLinear`, in place."""
    for module in language_model.modules():
        if type(module) is nn.Linear:
            module.__class__ = RowVectorLinear


def uses_row_vector_products(language_model: nn.Module) -> bool:
    return any(isinstance(module, RowVectorLinear) for module in language_model.modules())
