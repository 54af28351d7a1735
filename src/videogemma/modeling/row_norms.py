"""Gemma-3n's RMSNorm in one C pass on the CPU (`quantized_rows.c`'s `rms_norm`), for inference.

The text decoder runs about 310 of these norms a decode step at E2B (11 a layer: around attention, the MLP,
LAuReL, AltUp's router, the per-layer input, and on the query, key and value heads). The module's form is
nine torch operations on a row of 2,048 or 256 values (widen to fp32, square, mean, add, power, two products,
narrow), about 17-25 µs a call on this CPU, 7 ms of an int8 step; the same arithmetic in one C call is a few
µs. It computes as the module does (fp32, the two products in the module's order, rounded once to the
input's dtype); only the order of the sum of squares and 1/√ for the power of -½ differ (tested against the
module: bf16 within one rounding step, fp32 to 1e-6, a tiny model's greedy tokens unchanged).

Training, gradients, traced code (`--compile-prefill`: inductor fuses the module's form), other devices and
what the kernel does not take (another dtype, a width not in 16-value steps, no kernels here) keep the
module's forward.

    use_row_norms(language_model)    # in place, once; `loading.prepare_decoder` does it
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.gemma3n.modeling_gemma3n import Gemma3nRMSNorm

from videogemma.modeling import quantized_rows


class RowRMSNorm(Gemma3nRMSNorm):
    """`Gemma3nRMSNorm` computed by the C kernel where it runs. A loaded norm becomes one by changing its class
    (`use_row_norms`): same parameters, same state dict."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if not self._kernel_takes(hidden_states):
            return super().forward(hidden_states)
        width = hidden_states.shape[-1]
        rows = hidden_states.contiguous()
        out = torch.empty_like(rows)
        weight = fp32_weight(self)
        quantized_rows.run(
            "rms_norm", rows.data_ptr(), 0 if weight is None else weight.data_ptr(), out.data_ptr(),
            int(rows.dtype == torch.bfloat16), rows.numel() // width, width, self.variance_epsilon,
        )  # fmt: skip
        return out

    def _kernel_takes(self, hidden_states: torch.Tensor) -> bool:
        return (
            not torch.is_grad_enabled()
            and not torch.compiler.is_compiling()
            and hidden_states.device.type == "cpu"
            and hidden_states.dtype in quantized_rows.KERNEL_DTYPES
            and hidden_states.shape[-1] % 16 == 0
            and hidden_states.numel() > 0
            and quantized_rows.kernels() is not None
        )


def fp32_weight(norm: Gemma3nRMSNorm) -> torch.Tensor | None:
    """A norm's scale in fp32 (the module's `weight.float()`), kept on the module until the weight changes; None
    for a norm without one."""
    if not norm.with_scale:
        return None
    weight = norm.weight
    if weight.dtype == torch.float32 and weight.is_contiguous():
        return weight
    try:
        key = (weight.data_ptr(), weight._version)
    except RuntimeError:  # an inference-mode tensor keeps no version: no cache
        return weight.detach().float()
    cached = getattr(norm, "_fp32_cache", None)
    if cached is None or cached[0] != key:
        cached = (key, weight.detach().float().contiguous())
        norm._fp32_cache = cached
    return cached[1]


def use_row_norms(language_model: nn.Module) -> None:
    """Make every `Gemma3nRMSNorm` of the language model a `RowRMSNorm`, in place."""
    for module in language_model.modules():
        if type(module) is Gemma3nRMSNorm:
            module.__class__ = RowRMSNorm
