"""AltUp's prediction (`Gemma3nTextAltUp.predict`) in forms that run fast for inference.

The library mixes AltUp's four streams with a batched matrix product: one (hidden × 4) by (4 × 4) product per
position, with transposing copies around it. Traced (a compiled prefill) that is 2-3 s of an E2B prefill on 2
cores; eager for one position (a decode step) 88 µs a layer, 2.6 ms of an E2B step on this CPU, for 32,768
multiply-adds. Written as a broadcast product and a sum instead, inductor fuses it into one pass over the
streams, and eager for one position it is a few small element-wise operations (computed in fp32 and rounded
once, where the library rounds the product and then the sum with the input). A prompt run eager and training
call the library's form (the broadcast form's intermediate is 4 × 4 × positions × hidden).

    use_fused_altup_predict(language_model)    # in place, once; `loading.prepare_decoder` does it
"""

from __future__ import annotations

import torch
from torch import nn


class FusedAltUpPredict:
    """A layer's `altup.predict`: the broadcast form when traced or for one position, else the library's."""

    def __init__(self, altup: nn.Module) -> None:
        self.altup = altup
        self.library = altup.predict

    def __call__(self, hidden_states: torch.Tensor) -> torch.Tensor:
        altup = self.altup
        if altup.training:
            return self.library(hidden_states)
        if torch.compiler.is_compiling():
            return self._mixed(hidden_states, hidden_states.dtype)
        if hidden_states.shape[-2] == 1:  # (streams, batch, positions, hidden): a decode step
            return self._mixed(hidden_states, torch.float32)
        return self.library(hidden_states)

    def _mixed(self, hidden_states: torch.Tensor, compute_dtype: torch.dtype) -> torch.Tensor:
        altup = self.altup
        config = altup.config
        modalities = altup.compute_router_modalities(hidden_states[config.altup_active_idx])
        n = config.altup_num_inputs
        # coefs[j, i]: how much stream i adds to prediction j (the library's coefficients, transposed).
        coefs = altup.prediction_coefs(modalities).reshape(*modalities.shape[:-1], n, n).permute(2, 3, 0, 1)
        streams = hidden_states.to(compute_dtype)
        mixed = (streams[None] * coefs[..., None].to(compute_dtype)).sum(dim=1)
        return (mixed + streams).contiguous().type_as(hidden_states)


def use_fused_altup_predict(language_model: nn.Module) -> None:
    """Give every decoder layer of a Gemma-3n language model the fused prediction (in place; idempotent)."""
    for layer in language_model.model.layers:
        if not isinstance(layer.altup.predict, FusedAltUpPredict):
            layer.altup.predict = FusedAltUpPredict(layer.altup)
