"""An int4 decoder's decode steps with their inputs rounded to int8 (`--int4-activations int8`, the default):
the kernel computes exactly the rounded product, stays close to the exact one, and a loaded model's decode
plans follow the choice when it changes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import videogemma
from videogemma.errors import ModelLoadError
from videogemma.modeling import quantized_rows
from videogemma.modeling.quantization import (
    INT4_OFFSET,
    QuantizedLinear,
    int4_activations_in_use,
    set_int4_activations,
    unpack_int4,
)

needs_rounding = pytest.mark.skipif(
    not quantized_rows.int8_activations_run(), reason="the row kernels do not round to int8 on this CPU"
)


def rounded_product(x: torch.Tensor, layer: QuantizedLinear) -> torch.Tensor:
    """What the kernel is meant to compute, in float64 from the same fp32 rounding: per group of 128 inputs
    x̂ = round(x · 127 / max|x|) (ties to even), w = (q − 8)·scale + zero, the offset meeting x̂, the zero x."""
    rows, groups = x.shape[0], layer.in_features // 128
    grouped = x.float().reshape(rows, groups, 128)
    top = grouped.abs().amax(-1, keepdim=True)
    inverse = torch.where(top > 0, torch.tensor(127.0) / top, torch.zeros_like(top))
    rounded = torch.round(grouped * inverse).double()  # fp32 product, then rounded, as the kernel does
    x_scale = (top / 127.0).double()
    q = unpack_int4(layer.qweight).double().reshape(layer.out_features, groups, 128) - INT4_OFFSET
    scales, zeros = layer.scales.double(), layer.zeros.double()
    products = torch.einsum("ngk,mgk->mng", q, rounded) * x_scale.squeeze(-1)[:, None, :]
    exact_sums = grouped.double().sum(-1)
    return (products * scales[None] + zeros[None] * exact_sums[:, None, :]).sum(-1)


def _layer(in_features: int, out_features: int, scales_dtype: torch.dtype) -> QuantizedLinear:
    torch.manual_seed(0)
    layer = QuantizedLinear.from_linear(torch.nn.Linear(in_features, out_features, bias=False), 4)
    layer.scales.data, layer.zeros.data = layer.scales.to(scales_dtype), layer.zeros.to(scales_dtype)
    return layer


@needs_rounding
@pytest.mark.parametrize("scales_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 3])
def test_the_kernel_computes_the_rounded_product_exactly(rows: int, scales_dtype: torch.dtype) -> None:
    # 19 groups: a block of 16 and a tail of 3; one group all zeros (no scale to divide by), one outlier.
    layer = _layer(19 * 128, 80, scales_dtype)
    x = torch.randn(rows, 19 * 128, generator=torch.Generator().manual_seed(1))
    x[:, 2 * 128 : 3 * 128] = 0.0
    x[:, 5] *= 40.0
    expected = rounded_product(x, layer)
    got = quantized_rows.int4_rows(x, layer.qweight, layer.scales, layer.zeros, int8_activations=True)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
    exact = quantized_rows.int4_rows(x, layer.qweight, layer.scales, layer.zeros, int8_activations=False)
    assert not torch.allclose(got, exact, rtol=1e-5, atol=1e-6)  # the flag changed how it multiplies
    # bf16 rows: the same product rounded once to bf16.
    bf16 = quantized_rows.int4_rows(
        x.bfloat16(), layer.qweight, layer.scales, layer.zeros, int8_activations=True
    )
    expected_bf16 = rounded_product(x.bfloat16().float(), layer)
    torch.testing.assert_close(
        bf16.double(), expected_bf16, rtol=1e-2, atol=1e-2 * expected_bf16.abs().max().item()
    )


@needs_rounding
def test_rounding_the_inputs_costs_about_a_percent_of_the_product() -> None:
    layer = _layer(2048, 256, torch.bfloat16)
    x = torch.randn(1, 2048, generator=torch.Generator().manual_seed(2))
    exact = quantized_rows.int4_rows(x, layer.qweight, layer.scales, layer.zeros)
    rounded = quantized_rows.int4_rows(x, layer.qweight, layer.scales, layer.zeros, int8_activations=True)
    relative = ((rounded - exact).norm() / exact.norm()).item()
    assert 0 < relative < 0.02


def test_a_loaded_int4_model_says_what_its_decode_steps_multiply_by(saved_tiny: Path) -> None:
    model, _ = videogemma.load(saved_tiny, dtype="bfloat16", quantize="int4", quiet=True)
    layers = [m for m in model.modules() if isinstance(m, QuantizedLinear)]
    assert layers and all(m.int8_activations for m in layers)  # the default
    assert int4_activations_in_use(model) == ("int8" if quantized_rows.int8_activations_run() else "exact")
    exact, _ = videogemma.load(
        saved_tiny, dtype="bfloat16", quantize="int4", int4_activations="exact", quiet=True
    )
    assert int4_activations_in_use(exact) == "exact"
    int8, _ = videogemma.load(saved_tiny, dtype="bfloat16", quantize="int8", quiet=True)
    assert int4_activations_in_use(int8) is None
    with pytest.raises(ModelLoadError, match="int4 activations: 'int16'"):
        set_int4_activations(model, "int16")


def _greedy(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(10, 1000, (1, 20), generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
            output_scores=True, return_dict_in_generate=True,
        )  # fmt: skip
    return out.sequences, torch.stack(out.scores).float()


@needs_rounding
def test_decode_plans_follow_a_change_of_the_choice(saved_tiny: Path) -> None:
    """The plans built at load bound the kernels with int8 inputs; switched to exact, the same model must answer
    as one loaded exact (a plan that kept its old binding would answer as before)."""
    model, _ = videogemma.load(saved_tiny, dtype="bfloat16", quantize="int4", quiet=True)
    _, rounded_scores = _greedy(model)
    set_int4_activations(model, "exact")
    sequences, scores = _greedy(model)
    reference, _ = videogemma.load(
        saved_tiny, dtype="bfloat16", quantize="int4", int4_activations="exact", quiet=True
    )
    expected_sequences, expected_scores = _greedy(reference)
    assert torch.equal(sequences, expected_sequences) and torch.equal(scores, expected_scores)
    assert not torch.equal(scores, rounded_scores)
    # The rounded decoder's next-token choices are the exact one's at (nearly) every step of the prompt's answer.
    agreement = (rounded_scores.argmax(-1) == scores.argmax(-1)).float().mean().item()
    assert agreement >= 0.75
