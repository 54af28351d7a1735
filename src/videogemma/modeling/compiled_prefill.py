"""Gemma-3n's decoder layers compiled for the prefill on the CPU, with `torch.compile` (inductor).

Eager, a prefill of a video prompt (2,443 tokens at E2B) spends as long in element-wise work as in its
matrix products: AltUp's four streams, LAuReL, the norms in fp32, the sparse GELU, the per-layer gate, and for
a quantised decoder the dequantisation of each weight, each a pass over memory. Inductor fuses those chains
into a few C++ loops per layer (E2B on 2 cores: bf16 1.7×, int8 2.3× faster prefill on the Intel host; on the
AMD host, with the prompt attention's block products and reused temporaries, 1.1-1.2×; on the Intel host of
stop 32, once eager ran AltUp and the MLP's activation in C, 0.9-1.03×; docs/ONDEVICE.md).

- The attention module stays eager: its KV-cache update and the shared-KV dictionary are side effects that
  make dynamo specialise (and recompile) per layer index; its query / key / value norms are compiled on their
  own, and its matrix products are kernels already.
- AltUp's prediction and correction and the MLP's activation run eager between the compiled parts, as our C
  calls (`altup_predict.py`, `gated_mlp.py`): on the 2-core Xeon of stop 32 the E2B bf16 prefill compiled that
  way took 7.9 s against 8.3 s with inductor fusing the library's forms, and its first prompt 13 s against 31 s
  (eager with the same C calls: 8.0 s). Where the C cannot run they run the library's forms eagerly there.
- Decoding (one new position) runs eager: a compiled layer there was not faster on this CPU (its guards and
  graph breaks cost what the fused element-wise work saves).

Shapes are dynamic, so prompts of other lengths reuse the compile after the first two lengths (dynamo
specialises the first shape it sees). Compiling needs a C++ compiler (inductor builds its kernels with it);
the first prompt pays it (E2B bf16 on 2 cores: a 31 s prefill instead of 14 s eager), inductor's on-disk cache
shortens it for later processes (15 s).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from videogemma.errors import ModelLoadError
from videogemma.modeling.altup_predict import use_fused_altup_predict

# What inductor builds its CPU kernels with (its own lookup order: $CXX, then these).
CXX_COMPILERS = ("g++", "clang++", "c++")
# Said before the first prompt compiles: the wait is long enough to look like a hang.
FIRST_PROMPT_NOTICE = (
    "compiling the prefill for the first prompt (once per process; E2B on 2 cores: 15-30 s, "
    "later prompts' prefill up to 1.2x faster)"
)


class PrefillCompiled:
    """A module's forward compiled for calls over many positions (a prompt), eager for one (a decode step)."""

    def __init__(
        self, module: nn.Module, positions_dim: int, before_first: Callable[[], None] | None = None
    ) -> None:
        self.eager = module.forward
        self.compiled = torch.compile(module.forward, dynamic=True)
        self.positions_dim = positions_dim
        self.before_first = before_first  # called once, before the first compiled call

    def __call__(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if hidden_states.shape[self.positions_dim] == 1:
            return self.eager(hidden_states, *args, **kwargs)
        if self.before_first is not None:
            before_first, self.before_first = self.before_first, None
            before_first()
        # Each layer's per-layer input is a slice at its own offset of one tensor: contiguous copies
        # (small) keep dynamo from guarding on the offsets and recompiling per layer.
        if kwargs.get("per_layer_input") is not None:
            kwargs["per_layer_input"] = kwargs["per_layer_input"].contiguous()
        return self.compiled(hidden_states.contiguous(), *args, **kwargs)


def cxx_compiler() -> str | None:
    """The C++ compiler inductor would use, or None."""
    candidates = [os.environ["CXX"]] if os.environ.get("CXX") else list(CXX_COMPILERS)
    return next((path for name in candidates if (path := shutil.which(name))), None)


def compile_prefill(language_model: nn.Module, notice: Callable[[str], None] | None = None) -> None:
    """Give each decoder layer of a Gemma-3n language model (in place) a forward compiled for the prefill;
    `notice` (if given) is told `FIRST_PROMPT_NOTICE` when the first prompt starts compiling."""
    device = next(language_model.parameters()).device
    if device.type != "cpu":
        raise ModelLoadError(f"compiling the prefill is for a model on the CPU; this one is on {device}")
    if cxx_compiler() is None:
        raise ModelLoadError(
            "compiling the prefill needs a C++ compiler (g++ or clang++, or $CXX) for torch's inductor; "
            "install one or leave the option off"
        )
    use_fused_altup_predict(language_model)
    for index, layer in enumerate(language_model.model.layers):
        if isinstance(layer.forward, PrefillCompiled):
            continue
        attention = layer.self_attn
        attention.forward = torch.compiler.disable(attention.forward)
        # AltUp's two steps and the MLP's activation run faster in our C calls than inductor's fusion of the
        # library's forms (E2B bf16 on the 2-core Xeon of stop 32): eager between the compiled parts.
        layer.altup.predict = torch.compiler.disable(layer.altup.predict)
        layer.altup.correct = torch.compiler.disable(layer.altup.correct)
        layer.mlp.forward = torch.compiler.disable(layer.mlp.forward)
        # Its query / key / value norms (fp32 inside, a pass each over the heads) compiled on their own.
        for norm in ("q_norm", "k_norm", "v_norm"):
            if hasattr(attention, norm):  # a layer that reuses another's keys and values has no k / v norm
                module = getattr(attention, norm)
                module.forward = PrefillCompiled(module, positions_dim=1)  # (batch, positions, heads, dim)
        # The layer's hidden states are AltUp's (streams, batch, positions, hidden).
        first_layer_notice = None if notice is None or index else lambda: notice(FIRST_PROMPT_NOTICE)
        layer.forward = PrefillCompiled(layer, positions_dim=-2, before_first=first_layer_notice)


def is_prefill_compiled(language_model: nn.Module) -> bool:
    return all(isinstance(layer.forward, PrefillCompiled) for layer in language_model.model.layers)
