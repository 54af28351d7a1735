"""A decoder layer's pass over a prompt with its element-wise work in C, for eager inference on the CPU.

With AltUp and the MLP's activation in C (`altup_predict.py`, `gated_mlp.py`), what an eager E2B prefill spent
beside its matrix products and attention was the layer's own additions and products over (positions × 2,048):
LAuReL's and the attention's residuals, the division by √2, the feed-forward's residual, AltUp's output scale, the
per-layer gate's product and its in-place addition to three streams (0.8 s of a 10.3 s prefill under the
profiler on the 2-core Xeon of stop 32). Here the layer's forward runs its modules as the library's does (the
products, the norms, the attention with its cache) and those passes as the decode step's C calls over every row
(`attention_residual_rows`, `norm_add_rows`, `scaled_rows`, `gated_activation_rows`; the rows split between the
threads), rounding where the library's operations round.

Decode steps of one sequence take `decode_layer.DecodeStep` first; training, gradients, traced code (a compiled
prefill), other devices, and what the kernels do not take run the layer's own forward.

    use_prompt_steps(language_model)    # in place, once; `loading.prepare_decoder` does it
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from videogemma.modeling import altup_predict, quantized_rows
from videogemma.modeling.decode_layer import DecodeStep, norms_fit
from videogemma.modeling.row_norms import fp32_weight


class PromptStep:
    """A decoder layer's forward: its pass over a prompt with the element-wise work in C where it runs, else the
    forward the layer had."""

    def __init__(self, layer: nn.Module, otherwise: Any) -> None:
        self.layer = layer
        self.otherwise = otherwise
        self.norms_fit = norms_fit(layer)  # the layer's structure: checked once, not on every call

    def __call__(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        per_layer_input: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        if args or not (self.norms_fit and _takes(self.layer, hidden_states, per_layer_input)):
            return self.otherwise(hidden_states, position_embeddings, per_layer_input, *args, **kwargs)
        return _pass(self.layer, hidden_states, position_embeddings, per_layer_input, **kwargs)


def _takes(layer: nn.Module, hidden_states: torch.Tensor, per_layer_input: torch.Tensor | None) -> bool:
    """Eager inference on the CPU in a dtype the kernels read, with the widths the C calls take."""
    config, scale = layer.config, layer.altup.correct_output_scale
    return (
        not layer.training
        and not torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
        and hidden_states.device.type == "cpu"
        and per_layer_input is not None
        and per_layer_input.dtype == hidden_states.dtype
        and altup_predict._one_call_takes(layer.altup, hidden_states)
        and config.hidden_size % 16 == 0
        and (not config.altup_correct_scale or (scale.dtype == hidden_states.dtype and scale.is_contiguous()))
    )


def _pass(
    layer: nn.Module,
    hidden_states: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor] | None,
    per_layer_input: torch.Tensor,
    shared_kv_states: Any = None,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    cache: Any = None,
    **kwargs: Any,
) -> torch.Tensor:
    """`Gemma3nTextDecoderLayer.forward` over a prompt, line for line in its order."""
    config, flag = layer.config, int(hidden_states.dtype == torch.bfloat16)
    width, eps = config.hidden_size, layer.input_layernorm.variance_epsilon
    predictions = layer.altup.predict(hidden_states)
    active = predictions[config.altup_active_idx].contiguous()  # the C calls read it row after row
    normed = layer.input_layernorm(active).contiguous()
    laurel_right = layer.laurel.linear_right(layer.laurel.linear_left(normed)).contiguous()
    attention, _ = layer.self_attn(
        hidden_states=normed,
        attention_mask=attention_mask,
        shared_kv_states=shared_kv_states,
        position_ids=position_ids,
        position_embeddings=position_embeddings,
        cache=cache,
        **kwargs,
    )
    attention = attention.contiguous()
    rows = normed.numel() // width
    residual, mlp_input = torch.empty_like(normed), torch.empty_like(normed)
    weights = [
        fp32_weight(norm)
        for norm in (
            layer.laurel.post_laurel_norm,
            layer.post_attention_layernorm,
            layer.pre_feedforward_layernorm,
        )
    ]
    quantized_rows.run(
        "attention_residual_rows", active.data_ptr(), normed.data_ptr(), laurel_right.data_ptr(),
        attention.data_ptr(), *(w.data_ptr() for w in weights), residual.data_ptr(), mlp_input.data_ptr(), flag,
        rows, width, eps,
    )  # fmt: skip
    down = layer.mlp(mlp_input).contiguous()
    activated = torch.empty_like(normed)
    post_ffw = fp32_weight(layer.post_feedforward_layernorm)
    quantized_rows.run(
        "norm_add_rows", down.data_ptr(), post_ffw.data_ptr(), residual.data_ptr(), activated.data_ptr(), flag,
        rows, 1, width, eps,
    )  # fmt: skip
    corrected = layer.altup.correct(predictions, activated).contiguous()
    _add_per_layer_input(layer, corrected, per_layer_input, rows, flag)
    return corrected


def _add_per_layer_input(
    layer: nn.Module, corrected: torch.Tensor, per_layer_input: torch.Tensor, rows: int, flag: int
) -> None:
    """The layer's end: the active stream (scaled), gated by the per-layer input, projected, normed and added to
    streams 1 .. n − 1, in place."""
    config, width = layer.config, layer.config.hidden_size
    first = corrected[config.altup_active_idx]
    if config.altup_correct_scale:
        scaled = torch.empty_like(first)
        scale = layer.altup.correct_output_scale
        quantized_rows.run(
            "scaled_rows", first.data_ptr(), scale.data_ptr(), scaled.data_ptr(), flag, rows, width
        )
        first = scaled
    # Unscaled, the library's copy is not needed: the gate's product reads the stream before the streams change.
    gate = layer.per_layer_input_gate(first).contiguous()
    per_layer_input = per_layer_input.contiguous()
    quantized_rows.run(
        "gated_activation_rows", gate.data_ptr(), per_layer_input.data_ptr(), gate.data_ptr(), flag, rows,
        gate.shape[-1], 0.0, 0,
    )  # fmt: skip
    projected = layer.per_layer_projection(gate).contiguous()
    norm = fp32_weight(layer.post_per_layer_input_norm)
    others = corrected[1:]  # streams 1 .. n − 1, one after another
    quantized_rows.run(
        "norm_add_rows", projected.data_ptr(), norm.data_ptr(), others.data_ptr(), others.data_ptr(), flag, rows,
        config.altup_num_inputs - 1, width, layer.input_layernorm.variance_epsilon,
    )  # fmt: skip


def use_prompt_steps(language_model: nn.Module) -> None:
    """Give every decoder layer of a Gemma-3n language model the prompt pass (in place; idempotent): under its
    decode step where it has one (the step falls back to the pass), else as its forward."""
    for layer in language_model.model.layers:
        holder = layer.forward if isinstance(layer.forward, DecodeStep) else None
        current = holder.otherwise if holder is not None else layer.forward
        if isinstance(current, PromptStep):
            continue
        if holder is not None:
            holder.otherwise = PromptStep(layer, current)
        else:
            layer.forward = PromptStep(layer, current)
