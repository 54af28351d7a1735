"""A decoder layer's decode step (one position, batch 1) in a few calls, for inference on the CPU.

With every product and norm of a decode step in our C kernels, what was left of an E2B int4 step (~60 ms on the
2-core AMD host of stop 31) beside reading the weights was Python and torch dispatch: 2,881 torch operations a
step, 12.5 ms in the 30 decoder layers (0.42 ms a layer: the module calls, RoPE's slices and concatenations,
views, the layer's element-wise additions, each norm's and product's wrapper). Here a layer's step is its
products (each a bound kernel call), five C calls for the element-wise work between them (`quantized_rows.c`:
the attention's heads, the residuals around LAuReL and the attention, the gated activation, a norm added to
streams, AltUp's scale), AltUp's two C calls, the cache's update and the decode attention as the library's path
calls them.

Whole E2B steps with it against the same C operators under the library's layer (`benchmarks/decode_steps.py`):
bf16 1.13×, int8 1.19×, int4 1.19× on the 2-core Xeon of stop 32 (int4 154 → 130 ms); 1.13-1.26× on the AMD host
(int4 47.7 → 37.9 ms).

It computes what `Gemma3nTextDecoderLayer.forward` does, in its order, rounding to the layer's dtype where the
library's operations round; the sums run in another order and GELU's exponential is our own, so bf16 results
may differ in a last bit (tested against the library's layer: bf16 within a rounding step, fp32 to 1e-5, greedy
tokens of a quantised model unchanged).

The step's kernels read the layer's weights where they lie: each layer's plan (the bound calls) is rebuilt when
a tensor it reads is replaced, moves (`data_ptr`) or changes in place (its version), or torch's thread count
changes. Prompts, batches, gradients, traced code, other devices, other attention implementations and what the
kernels do not take run the layer's own forward.

    use_decode_steps(language_model)    # in place, once; `loading.prepare_decoder` does it
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from videogemma.constants import WINDOWED_ATTENTION
from videogemma.modeling import decode_attention, quantized_rows
from videogemma.modeling.altup_predict import ONE_CALL_STREAMS
from videogemma.modeling.quantization import QuantizedLinear
from videogemma.modeling.row_norms import fp32_weight
from videogemma.modeling.row_products import RowVectorLinear, bf16_kernel_fits
from videogemma.modeling.sparse_activation import std_multiplier

# The C file's ROPE_HEAD_DIM: the widest head `attention_heads` takes.
ROPE_HEAD_DIM = 1024

Product = Callable[[torch.Tensor], torch.Tensor]


class _KernelProduct:
    """x (in,) · Wᵀ -> (out,) through one of the row kernels, its weight's arguments bound."""

    def __init__(self, function: Any, before: tuple, between: tuple, after: tuple, out_features: int) -> None:
        self.function, self.before, self.between, self.after = function, before, between, after
        self.out_features = out_features

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.empty(self.out_features, dtype=x.dtype)
        if self.function(*self.before, x.data_ptr(), *self.between, out.data_ptr(), *self.after):
            raise MemoryError("a row kernel could not allocate its working copy")
        return out


def _product(
    linear: nn.Module, dtype: torch.dtype, threads: int
) -> tuple[Product, list[tuple[nn.Module, str]]]:
    """A one-row product (in,) -> (out,) for `linear` in `dtype` and the tensors whose memory it reads, as
    (module, name): a bound row kernel where one takes the layer, else the module itself (torch.mv, torch's int4
    layout, a bias), which reads its tensors when called."""
    library = quantized_rows.kernels()
    flag = int(dtype == torch.bfloat16)
    if getattr(linear, "bias", None) is not None:
        return linear, []
    if isinstance(linear, QuantizedLinear) and linear._scales_and_zeros is None:
        if linear.scales.dtype not in quantized_rows.KERNEL_DTYPES:
            return linear, []
        names = ["qweight", "scales"] + (["zeros"] if linear.bits == 4 else [])
        scales_flag = int(linear.scales.dtype == torch.bfloat16)
        function = library.int8_rows if linear.bits == 8 else library.int4_rows
        before = (*(getattr(linear, name).data_ptr() for name in names), scales_flag)
        activations = (int(linear.int8_activations),) if linear.bits == 4 else ()
        after = (1, linear.out_features, linear.in_features, *activations, threads)
        product = _KernelProduct(function, before, (flag,), after, linear.out_features)
        return product, [(linear, name) for name in names]
    if isinstance(linear, RowVectorLinear) and bf16_kernel_fits(linear.weight, dtype):
        after = (linear.out_features, linear.in_features, threads)
        product = _KernelProduct(
            library.bf16_row, (linear.weight.data_ptr(),), (), after, linear.out_features
        )
        return product, [(linear, "weight")]
    return linear, []


class _LayerPlan:
    """One layer's step, bound: its products, its norms' fp32 weights, AltUp's arguments, and the tensors whose
    memory they read or copied (`sources`: the plan holds while each is still its module's, where it was, and
    unchanged in place: an adapter merged into a weight, `load_state_dict`, `model.to` all rebuild it)."""

    def __init__(self, layer: nn.Module, dtype: torch.dtype, threads: int) -> None:
        config, attention, mlp, altup = layer.config, layer.self_attn, layer.mlp, layer.altup
        self.dtype, self.threads, self.flag = dtype, threads, int(dtype == torch.bfloat16)
        self.width, self.streams, self.active = (
            config.hidden_size,
            config.altup_num_inputs,
            config.altup_active_idx,
        )
        self.eps = layer.input_layernorm.variance_epsilon
        self.itemsize = dtype.itemsize
        self.sources: list[tuple[dict[str, Any], str, torch.Tensor, int, int]] = []
        # Each int4 kernel's input rounding as it was bound (`holds` compares it with the layer's now).
        self.activations: list[tuple[QuantizedLinear, bool]] = []
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = config.head_dim
        self.reuses_keys, self.stores_keys = attention.is_kv_shared_layer, attention.store_full_length_kv
        self.layer_type, self.layer_idx = attention.layer_type, layer.layer_idx
        self.sparse = mlp.activation_sparsity > 0
        multiplier = std_multiplier(mlp.activation_sparsity)
        self.multiplier = float(multiplier.to(dtype)) if self.sparse else 0.0  # as the library casts it
        self.products = {
            name: self._bound(module, threads)
            for name, module in (
                ("laurel_left", layer.laurel.linear_left), ("laurel_right", layer.laurel.linear_right),
                ("q", attention.q_proj), ("o", attention.o_proj), ("gate", mlp.gate_proj), ("up", mlp.up_proj),
                ("down", mlp.down_proj), ("per_layer_gate", layer.per_layer_input_gate),
                ("per_layer_projection", layer.per_layer_projection),
            ) + ((("k", attention.k_proj), ("v", attention.v_proj)) if not self.reuses_keys else ())
        }  # fmt: skip
        norms = ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                 "post_feedforward_layernorm", "post_per_layer_input_norm")  # fmt: skip
        self.norms = {name: self._norm(getattr(layer, name)) for name in norms}
        self.norms["laurel"] = self._norm(layer.laurel.post_laurel_norm)
        self.norms["q"] = self._norm(attention.q_norm)
        self.norms["k"] = None if self.reuses_keys else self._norm(attention.k_norm)
        self.router_norm = self._norm(altup.router_norm)
        self.router_scale = config.hidden_size**-1.0
        altup_weights = (altup.modality_router, altup.prediction_coefs, altup.correction_coefs)
        pointers = (self._track(linear, "weight").data_ptr() for linear in altup_weights)
        self.router, self.prediction_coefs, self.correction_coefs = pointers
        self.output_scale = self._track(altup, "correct_output_scale") if config.altup_correct_scale else None

    def _bound(self, module: nn.Module, threads: int) -> Product:
        product, places = _product(module, self.dtype, threads)
        if isinstance(module, QuantizedLinear) and module.bits == 4 and places:
            self.activations.append((module, module.int8_activations))
        for owner, name in places:
            self._track(owner, name)
        return product

    def _norm(self, norm: nn.Module) -> torch.Tensor:
        self._track(norm, "weight")
        return fp32_weight(norm)

    def _track(self, module: nn.Module, name: str) -> torch.Tensor:
        """Record a tensor the plan reads (where it is, and its in-place version); returns it."""
        table = module._parameters if name in module._parameters else module._buffers
        tensor = table[name]
        self.sources.append((table, name, tensor, tensor.data_ptr(), _version(tensor)))
        return tensor

    def holds(self) -> bool:
        """Whether the plan still computes the layer: the same threads, each tensor it read in place, each
        quantised layer's activations as they were bound."""
        return (
            torch.get_num_threads() == self.threads
            and all(
                table.get(name) is tensor and tensor.data_ptr() == pointer and _version(tensor) == version
                for table, name, tensor, pointer, version in self.sources
            )
            and all(linear.int8_activations == bound for linear, bound in self.activations)
        )


def _version(tensor: torch.Tensor) -> int:
    """The tensor's in-place version; an inference-mode tensor keeps none (changed only within inference mode)."""
    try:
        return tensor._version
    except RuntimeError:
        return -1


def norms_fit(layer: nn.Module) -> bool:
    """The layer's norms as our C calls take them: one eps for all, and a scale on each but the value norm's."""
    value_norm = getattr(layer.self_attn, "v_norm", None)
    norms = [module for module in layer.modules() if hasattr(module, "variance_epsilon")]
    return len({norm.variance_epsilon for norm in norms}) == 1 and all(
        norm.with_scale for norm in norms if norm is not value_norm
    )


def _plan_fits(layer: nn.Module, dtype: torch.dtype) -> bool:
    """Whether the step's kernels take this layer in `dtype` (widths, heads, norms, AltUp, activation)."""
    config, attention, altup = layer.config, layer.self_attn, layer.altup
    altup_weights = (
        altup.modality_router.weight,
        altup.prediction_coefs.weight,
        altup.correction_coefs.weight,
    )
    scale = altup.correct_output_scale
    return (
        config.hidden_activation == "gelu_pytorch_tanh"
        and dtype in quantized_rows.KERNEL_DTYPES
        and norms_fit(layer)
        and (attention.is_kv_shared_layer or not attention.v_norm.with_scale)
        and all(w.dtype == dtype and w.is_contiguous() for w in altup_weights)
        and (not config.altup_correct_scale or (scale.dtype == dtype and scale.is_contiguous()))
        and config.altup_num_inputs <= ONE_CALL_STREAMS
        and config.head_dim % 32 == 0
        and config.head_dim <= ROPE_HEAD_DIM
        and all(
            width % 16 == 0
            for width in (config.hidden_size, layer.mlp.intermediate_size, config.hidden_size_per_layer_input)
        )
    )


class DecodeStep:
    """A decoder layer's forward: a decode step of one position through the bound plan where it runs, else the
    forward the layer had (the library's, or a compiled prefill's wrapper around it)."""

    def __init__(self, layer: nn.Module) -> None:
        self.layer = layer
        self.otherwise = layer.forward
        self.plan: _LayerPlan | None = None

    def __call__(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        per_layer_input: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        plan = None if args else self._plan(hidden_states, position_embeddings, per_layer_input)
        if plan is None:
            return self.otherwise(hidden_states, position_embeddings, per_layer_input, *args, **kwargs)
        return _step(plan, self.layer, hidden_states, position_embeddings, per_layer_input, **kwargs)

    def _plan(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None,
        per_layer_input: torch.Tensor | None,
    ) -> _LayerPlan | None:
        """The layer's plan if this call is one it computes (rebuilt when a tensor it reads has changed)."""
        if not _step_takes(self.layer, hidden_states, position_embeddings, per_layer_input):
            return None
        if self.plan is not None and self.plan.dtype == hidden_states.dtype and self.plan.holds():
            return self.plan
        self.plan = None
        if _plan_fits(self.layer, hidden_states.dtype):
            self.plan = _LayerPlan(self.layer, hidden_states.dtype, torch.get_num_threads())
        return self.plan


def _step_takes(
    layer: nn.Module,
    hidden_states: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor] | None,
    per_layer_input: torch.Tensor | None,
) -> bool:
    """One position of one sequence on the CPU, no gradients, not traced, the inputs in the streams' dtype, and
    the model's attention still ours (checked each call: a plan outlives a switch to another attention)."""
    config = layer.config
    if torch.compiler.is_compiling() or torch.is_grad_enabled() or layer.training:
        return False
    if config._attn_implementation != WINDOWED_ATTENTION:
        return False
    dtype, shape = hidden_states.dtype, (config.altup_num_inputs, 1, 1, config.hidden_size)
    return (
        tuple(hidden_states.shape) == shape
        and hidden_states.device.type == "cpu"
        and per_layer_input is not None
        and tuple(per_layer_input.shape) == (1, 1, config.hidden_size_per_layer_input)
        and per_layer_input.dtype == dtype
        and position_embeddings is not None
        and all(tuple(t.shape) == (1, 1, config.head_dim) and t.dtype == dtype for t in position_embeddings)
        and quantized_rows.kernels() is not None
    )


def _step(
    plan: _LayerPlan,
    layer: nn.Module,
    hidden_states: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor],
    per_layer_input: torch.Tensor,
    shared_kv_states: Any = None,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    cache: Any = None,
    **kwargs: Any,
) -> torch.Tensor:
    """`Gemma3nTextDecoderLayer.forward` for one position, line for line in its order."""
    library, flag, width, eps = quantized_rows.kernels(), plan.flag, plan.width, plan.eps
    streams = hidden_states.contiguous()
    predictions = torch.empty_like(streams)
    library.altup_predict(
        streams.data_ptr(), plan.active, plan.router_norm.data_ptr(), eps, plan.router_scale, plan.router,
        plan.prediction_coefs, predictions.data_ptr(), flag, plan.streams, 1, width, plan.threads,
    )  # fmt: skip
    active = predictions.data_ptr() + plan.active * width * plan.itemsize
    normed = torch.empty(width, dtype=plan.dtype)
    library.rms_norm(
        active, plan.norms["input_layernorm"].data_ptr(), normed.data_ptr(), flag, 1, width, eps, 1
    )
    products = plan.products
    laurel_right = products["laurel_right"](products["laurel_left"](normed))

    attention = _attention(plan, normed, position_embeddings, shared_kv_states, attention_mask, cache, kwargs)
    residual, mlp_input = torch.empty(width, dtype=plan.dtype), torch.empty(width, dtype=plan.dtype)
    library.attention_residual(
        active, normed.data_ptr(), laurel_right.data_ptr(), attention.data_ptr(),
        plan.norms["laurel"].data_ptr(), plan.norms["post_attention_layernorm"].data_ptr(),
        plan.norms["pre_feedforward_layernorm"].data_ptr(), residual.data_ptr(), mlp_input.data_ptr(), flag,
        width, eps,
    )  # fmt: skip
    gate, up = products["gate"](mlp_input), products["up"](mlp_input)
    library.gated_activation(
        gate.data_ptr(), up.data_ptr(), gate.data_ptr(), flag, gate.numel(), plan.multiplier, plan.sparse
    )
    down = products["down"](gate)
    activated = torch.empty(width, dtype=plan.dtype)
    post_ffw = plan.norms["post_feedforward_layernorm"].data_ptr()
    library.norm_add(
        down.data_ptr(), post_ffw, residual.data_ptr(), activated.data_ptr(), flag, 1, width, eps
    )

    corrected = torch.empty_like(streams)
    library.altup_correct(
        predictions.data_ptr(), activated.data_ptr(), plan.active, plan.router_norm.data_ptr(), eps,
        plan.router_scale, plan.router, plan.correction_coefs, corrected.data_ptr(), flag, plan.streams, 1, width,
        plan.threads,
    )  # fmt: skip
    _add_per_layer_input(plan, corrected, per_layer_input)
    return corrected


def _attention(
    plan: _LayerPlan,
    normed: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor],
    shared_kv_states: Any,
    attention_mask: torch.Tensor | None,
    cache: Any,
    kwargs: dict[str, Any],
) -> torch.Tensor:
    """`Gemma3nTextAttention.forward` for one position: (hidden,) -> the output projection's (hidden,)."""
    products, heads, kv_heads, head_dim = plan.products, plan.heads, plan.kv_heads, plan.head_dim
    cos, sin = (t.contiguous() for t in position_embeddings)
    query = products["q"](normed)
    key = value = None
    if not plan.reuses_keys:
        key, value = products["k"](normed), products["v"](normed)
    status = quantized_rows.kernels().attention_heads(
        query.data_ptr(), 0 if key is None else key.data_ptr(), 0 if value is None else value.data_ptr(),
        plan.norms["q"].data_ptr(), 0 if key is None else plan.norms["k"].data_ptr(), cos.data_ptr(),
        sin.data_ptr(), plan.flag, heads, kv_heads, head_dim, plan.eps,
    )  # fmt: skip
    if status:
        raise ValueError(f"attention heads of {head_dim} values: the kernel takes up to {ROPE_HEAD_DIM}")
    # (batch, heads, positions, head_dim) with one position: the same memory as the library's transposed views.
    query = query.view(1, heads, 1, head_dim)
    if plan.reuses_keys:
        key_states, value_states = shared_kv_states[plan.layer_type]
    else:
        key_states, value_states = key.view(1, kv_heads, 1, head_dim), value.view(1, kv_heads, 1, head_dim)
        if cache is not None:
            key_states, value_states = cache.update(key_states, value_states, plan.layer_idx, kwargs=kwargs)
    if plan.stores_keys:
        shared_kv_states[plan.layer_type] = key_states, value_states
    output = decode_attention.one_query_attention(query, key_states, value_states, attention_mask, 1.0)
    return products["o"](output.reshape(-1))


def _add_per_layer_input(plan: _LayerPlan, corrected: torch.Tensor, per_layer_input: torch.Tensor) -> None:
    """The layer's end: the active stream (scaled), gated by the per-layer input, projected, normed and added to
    the other streams, in place."""
    library, flag, width = quantized_rows.kernels(), plan.flag, plan.width
    first = corrected[plan.active].reshape(-1)
    if plan.output_scale is not None:
        scaled = torch.empty(width, dtype=plan.dtype)
        library.scaled_row(first.data_ptr(), plan.output_scale.data_ptr(), scaled.data_ptr(), flag, width)
        first = scaled
    gate = plan.products["per_layer_gate"](first)
    per_layer_input = per_layer_input.contiguous()
    library.gated_activation(
        gate.data_ptr(), per_layer_input.data_ptr(), gate.data_ptr(), flag, gate.numel(), 0.0, 0
    )
    projected = plan.products["per_layer_projection"](gate)
    others = corrected.data_ptr() + width * plan.itemsize  # streams 1 .. n - 1, one after another
    library.norm_add(
        projected.data_ptr(), plan.norms["post_per_layer_input_norm"].data_ptr(), others, others, flag,
        plan.streams - 1, width, plan.eps,
    )  # fmt: skip


def use_decode_steps(language_model: nn.Module) -> None:
    """Give every decoder layer of a Gemma-3n language model the decode step (in place; idempotent)."""
    for layer in language_model.model.layers:
        if not isinstance(layer.forward, DecodeStep):
            layer.forward = DecodeStep(layer)
