"""A decoder MLP's activation over a prompt in one C pass, for eager inference on the CPU.

Between its two products Gemma-3n's MLP makes five to eight passes over the (positions × 8,192) gate: in its first
ten layers the Gaussian top-k (the row's mean and standard deviation, the cut-off, its subtraction, ReLU), then
GELU-tanh, then the product with the up projection. In an eager E2B prefill of 2,443 positions (bf16, the 2-core
Xeon of stop 32) these were about 1.3 s of 11.5 s (`aten::std` 0.56 s, GELU 0.61 s, the products and copies).
Here they are one pass per row (`gated_activation_rows` in `quantized_rows.c`, the rows split between the
threads), rounding where the library's operations round, the same computation a decode step's layer calls for
its one row (`decode_layer.py`).

Training, gradients, traced code (inductor fuses the library's form), other devices and activations run the
module's own forward.

    use_gated_mlps(language_model)    # in place, once; `loading.prepare_decoder` does it
"""

from __future__ import annotations

import torch
from torch import nn

from videogemma.modeling import quantized_rows
from videogemma.modeling.sparse_activation import std_multiplier


class PromptGatedMLP:
    """A layer's `mlp.forward`: the products as the module's, the activation between them in C where it runs."""

    def __init__(self, mlp: nn.Module) -> None:
        self.mlp = mlp
        self.otherwise = mlp.forward
        self.sparse = mlp.activation_sparsity > 0
        self.multiplier = std_multiplier(mlp.activation_sparsity)

    def __call__(self, hidden_states: torch.Tensor) -> torch.Tensor:
        mlp = self.mlp
        if not _takes(mlp, hidden_states):
            return self.otherwise(hidden_states)
        gate = mlp.gate_proj(hidden_states).contiguous()
        up = mlp.up_proj(hidden_states).contiguous()
        dtype, width = gate.dtype, gate.shape[-1]
        if up.dtype != dtype:
            return self.otherwise(hidden_states)
        multiplier = float(self.multiplier.to(dtype)) if self.sparse else 0.0  # as the library casts it
        quantized_rows.run(
            "gated_activation_rows", gate.data_ptr(), up.data_ptr(), gate.data_ptr(),
            int(dtype == torch.bfloat16), gate.numel() // width, width, multiplier, int(self.sparse),
        )  # fmt: skip
        return mlp.down_proj(gate)


def _takes(mlp: nn.Module, hidden_states: torch.Tensor) -> bool:
    """Eager inference on the CPU in a dtype the kernels read, with Gemma-3n's GELU-tanh."""
    return (
        not mlp.training
        and not torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
        and hidden_states.device.type == "cpu"
        and hidden_states.dtype in quantized_rows.KERNEL_DTYPES
        and mlp.config.hidden_activation == "gelu_pytorch_tanh"
        and mlp.intermediate_size % 16 == 0
        and quantized_rows.kernels() is not None
    )


def use_gated_mlps(language_model: nn.Module) -> None:
    """Give every decoder layer's MLP of a Gemma-3n language model the C activation (in place; idempotent)."""
    for layer in language_model.model.layers:
        if not isinstance(layer.mlp.forward, PromptGatedMLP):
            layer.mlp.forward = PromptGatedMLP(layer.mlp)
