"""A decoder layer's few-call decode step (`modeling/decode_layer.py`): a loaded model's greedy decoding through it
gives the library layer's tokens and scores (bf16 and fp32, plain, int8 and int4), its plan follows weights that
move, and every call it does not compute (prompts, batches, gradients, other attention) runs the layer's own
forward."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers.models.gemma3n.modeling_gemma3n import Gemma3nRMSNorm, apply_rotary_pos_emb

import videogemma
from videogemma.modeling import decode_layer, quantized_rows
from videogemma.modeling.decode_layer import DecodeStep, use_decode_steps
from videogemma.modeling.row_norms import fp32_weight

pytestmark = pytest.mark.skipif(
    quantized_rows.kernels() is None, reason="no AVX-512 or no C compiler here: the layers' own forward runs"
)

NEW_TOKENS = 10


def _steps(model: torch.nn.Module) -> list[DecodeStep]:
    steps = [layer.forward for layer in model.language_model.model.layers]
    assert all(isinstance(step, DecodeStep) for step in steps)  # loading gave every layer the step
    return steps


def _greedy(model: torch.nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            output_scores=True,
            return_dict_in_generate=True,
        )
    return out.sequences, torch.stack(out.scores).float()


def _prompt(seed: int = 2, batch: int = 1) -> torch.Tensor:
    return torch.randint(10, 1000, (batch, 24), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("quantize", [None, "int8", "int4"])
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_greedy_decoding_through_the_step_gives_the_library_layers_tokens_and_scores(
    saved_tiny: Path, dtype: str, quantize: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, _ = videogemma.load(saved_tiny, dtype=dtype, quantize=quantize, quiet=True)
    steps = _steps(model)
    calls = []
    step = decode_layer._step
    monkeypatch.setattr(
        decode_layer, "_step", lambda *arguments, **kw: calls.append(1) or step(*arguments, **kw)
    )
    lean_tokens, lean_scores = _greedy(model, _prompt())
    # Every layer decoded every new position but the first (the prompt's) through its plan.
    assert len(calls) == len(steps) * (NEW_TOKENS - 1)
    assert all(step.plan is not None for step in steps)
    if quantize is not None or dtype == "bfloat16":  # fp32 unquantised: torch.mv, through the module
        # The decoder's wide products bound row kernels (the narrow LAuReL and per-layer ones stay modules).
        wide = ("q", "o", "gate", "up", "down")
        assert all(
            isinstance(s.plan.products[name], decode_layer._KernelProduct) for s in steps for name in wide
        )
    for layer, step in zip(model.language_model.model.layers, steps, strict=True):
        layer.forward = step.otherwise
    library_tokens, library_scores = _greedy(model, _prompt())
    calls.clear()
    assert torch.equal(lean_tokens, library_tokens)
    # Sums in another order (and GELU's exponential our own): bf16 within a rounding step of the scores' size
    # (measured: bit-equal), fp32 to 1e-5; a norm, a residual or a head out of place is off by whole units.
    tolerance = dict(rtol=2**-7, atol=2e-2) if dtype == "bfloat16" else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lean_scores, library_scores, **tolerance)


@pytest.fixture(scope="module")
def bf16_model(saved_tiny: Path) -> torch.nn.Module:
    model, _ = videogemma.load(saved_tiny, dtype="bfloat16", quantize="int8", quiet=True)
    return model


def _one_position(model: torch.nn.Module, layer_index: int, seed: int) -> tuple:
    """A decode step's inputs to one layer: the streams, RoPE's cos/sin and the per-layer input, one position."""
    config = model.language_model.config
    generator = torch.Generator().manual_seed(seed)
    streams = torch.randn(config.altup_num_inputs, 1, 1, config.hidden_size, generator=generator)
    per_layer = torch.randn(1, 1, config.hidden_size_per_layer_input, generator=generator)
    angle = torch.rand(1, 1, config.head_dim, generator=generator) * 6
    inputs = (streams, (angle.cos(), angle.sin()), per_layer)
    dtype = next(model.language_model.parameters()).dtype
    return tuple(
        tuple(t.to(dtype) for t in each) if isinstance(each, tuple) else each.to(dtype) for each in inputs
    )


def _first_position_call(layer: torch.nn.Module, inputs: tuple, forward=None) -> torch.Tensor:
    """The layer on a first position without a cache (its keys are the only ones), as the full-attention layers
    that store their keys for the shared layers do."""
    streams, position_embeddings, per_layer = inputs
    shared = {}
    mask = torch.zeros(1, 1, 1, 1, dtype=streams.dtype)
    return (forward or layer.forward)(
        streams, position_embeddings, per_layer, shared_kv_states=shared, attention_mask=mask
    )


@torch.inference_mode()
def test_a_layers_step_equals_its_forward_and_follows_weights_that_change(
    bf16_model: torch.nn.Module,
) -> None:
    layer = bf16_model.language_model.model.layers[1]
    step = layer.forward
    inputs = _one_position(bf16_model, 1, seed=4)

    def step_and_library() -> tuple[torch.Tensor, torch.Tensor]:
        ours, library = (
            _first_position_call(layer, inputs),
            _first_position_call(layer, inputs, step.otherwise),
        )
        torch.testing.assert_close(ours, library, rtol=2**-7, atol=2e-2)
        return ours, step.plan

    before, plan = step_and_library()
    assert step_and_library()[1] is plan  # nothing changed: the same plan
    down, norm = layer.mlp.down_proj, layer.post_feedforward_layernorm
    saved_weight, saved_scale = down.qweight, norm.weight.detach().clone()
    try:
        down.qweight = torch.flip(saved_weight, dims=[0]).contiguous()  # replaced: another tensor elsewhere
        replaced, replaced_plan = step_and_library()
        assert replaced_plan is not plan and not torch.allclose(replaced, before, atol=0.1)
        norm.weight.mul_(3)  # changed in place: the plan's fp32 copy of the scale is stale
        scaled, scaled_plan = step_and_library()
        assert scaled_plan is not replaced_plan and not torch.allclose(scaled, replaced, atol=0.1)
    finally:
        down.qweight = saved_weight
        norm.weight.copy_(saved_scale)


def test_calls_the_step_does_not_compute_run_the_layers_own_forward(
    bf16_model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(decode_layer, "_step", lambda *arguments, **kw: pytest.fail("the step for this call"))
    # A batch of two prompts decoding.
    with torch.inference_mode():
        ids = _prompt(seed=5, batch=2)
        bf16_model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=3, do_sample=False
        )
    layer = bf16_model.language_model.model.layers[0]
    streams, position_embeddings, per_layer = _one_position(bf16_model, 0, seed=6)
    # Gradients (one position), then another attention implementation than the windowed one.
    _first_position_call(layer, (streams.clone().requires_grad_(), position_embeddings, per_layer))
    monkeypatch.setattr(layer.config, "_attn_implementation", "sdpa")
    layer.forward.plan = None
    with torch.inference_mode():
        _first_position_call(layer, (streams, position_embeddings, per_layer))


def test_installing_twice_wraps_once(bf16_model: torch.nn.Module) -> None:
    before = [layer.forward for layer in bf16_model.language_model.model.layers]
    use_decode_steps(bf16_model.language_model)
    assert [layer.forward for layer in bf16_model.language_model.model.layers] == before
    assert not any(isinstance(step.otherwise, DecodeStep) for step in before)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_the_heads_kernel_is_the_librarys_norms_and_rotation_at_e2b_heads(dtype: torch.dtype) -> None:
    """E2B's attention heads (8 query heads, 2 key/value heads of 256): the query and key normed, scaled and
    rotated, the value normed, in place, as `Gemma3nTextAttention.forward` computes them."""
    heads, kv_heads, head_dim, eps = 8, 2, 256, 1e-6
    generator = torch.Generator().manual_seed(7)
    q, k, v = (
        torch.randn(n * head_dim, generator=generator).mul(3).to(dtype) for n in (heads, kv_heads, kv_heads)
    )
    q_norm, k_norm = (Gemma3nRMSNorm(head_dim, eps=eps).to(dtype) for _ in range(2))
    for norm in (q_norm, k_norm):
        torch.nn.init.normal_(norm.weight, generator=generator)
    v_norm = Gemma3nRMSNorm(head_dim, eps=eps, with_scale=False).to(dtype)
    angle = torch.rand(1, 1, head_dim, generator=generator) * 20
    cos, sin = angle.cos().to(dtype), angle.sin().to(dtype)

    def library_heads(x: torch.Tensor, norm: torch.nn.Module, count: int) -> torch.Tensor:
        return norm(x.view(1, 1, count, head_dim))

    expected_q = apply_rotary_pos_emb(library_heads(q, q_norm, heads), cos, sin, unsqueeze_dim=2)
    expected_k = apply_rotary_pos_emb(library_heads(k, k_norm, kv_heads), cos, sin, unsqueeze_dim=2)
    expected_v = library_heads(v, v_norm, kv_heads)
    weights = fp32_weight(q_norm), fp32_weight(k_norm)
    pointers = [t.data_ptr() for t in (q, k, v, *weights, cos, sin)]
    flag = int(dtype == torch.bfloat16)
    status = quantized_rows.kernels().attention_heads(*pointers, flag, heads, kv_heads, head_dim, eps)
    assert status == 0
    tolerance = dict(rtol=2**-7, atol=2**-7) if dtype == torch.bfloat16 else dict(rtol=1e-5, atol=1e-5)
    for got, want in ((q, expected_q), (k, expected_k), (v, expected_v)):
        torch.testing.assert_close(got.float(), want.reshape(-1).float(), **tolerance)
    # Heads wider than the kernel's buffer are refused, not overrun.
    wide, ones = torch.zeros(2 * 2048), torch.ones(2048)
    arguments = [wide.data_ptr(), 0, 0, ones.data_ptr(), 0, ones.data_ptr(), ones.data_ptr()]
    assert quantized_rows.kernels().attention_heads(*arguments, 0, 2, 1, 2048, eps) != 0
