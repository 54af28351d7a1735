"""Our int8 / int4 row kernels (C, compiled at first use): the products of the dequantised weights in fp32 for
one and several rows, bf16 and fp32; what a quantised layer decodes with; bad arguments refused before any
memory is read; the build cached; torch's kernels where ours cannot run."""

from __future__ import annotations

import pytest
import torch

from videogemma.modeling import quantized_rows
from videogemma.modeling.quantization import INT4_OFFSET, QuantizedLinear, unpack_int4

pytestmark = pytest.mark.skipif(
    quantized_rows.kernels() is None, reason="no AVX-512 or no C compiler here: torch's kernels decode"
)


def _layer(bits: int, in_features: int, out_features: int, dtype: torch.dtype) -> QuantizedLinear:
    torch.manual_seed(bits + in_features)
    return QuantizedLinear.from_linear(torch.nn.Linear(in_features, out_features).to(dtype), bits)


def _exact_weight(layer: QuantizedLinear) -> torch.Tensor:
    """The dequantised weight computed in fp32 from the stored values (the kernels' arithmetic)."""
    if layer.bits == 8:
        return layer.qweight.float() * layer.scales.float()[:, None]
    values = unpack_int4(layer.qweight).float() - INT4_OFFSET
    grouped = values.reshape(layer.out_features, -1, layer.group_size)
    return (grouped * layer.scales.float()[..., None] + layer.zeros.float()[..., None]).reshape_as(values)


def _product(layer: QuantizedLinear, x: torch.Tensor) -> torch.Tensor:
    if layer.bits == 8:
        return quantized_rows.int8_rows(x, layer.qweight, layer.scales)
    return quantized_rows.int4_rows(x, layer.qweight, layer.scales, layer.zeros)


def _arguments(layer: QuantizedLinear) -> tuple:
    return (layer.qweight, layer.scales) if layer.bits == 8 else (layer.qweight, layer.scales, layer.zeros)


# 384: three int4 groups (the kernel's one-group loop); 2432: 19 (sixteen at a time, then three).
@pytest.mark.parametrize("in_features", [384, 2432])
@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("bits", [8, 4])
def test_rows_times_the_weight_equal_the_fp32_product(
    bits: int, dtype: torch.dtype, rows: int, in_features: int
) -> None:
    layer = _layer(bits, in_features, 80, dtype)
    x = torch.randn(rows, in_features, dtype=dtype)
    expected = x.float() @ _exact_weight(layer).t()
    out = _product(layer, x)
    assert out.dtype == dtype and out.shape == (rows, 80)
    # fp32: the order of the sums; bf16: one rounding of the result.
    tolerance = {"atol": 1e-4, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 1e-3, "rtol": 4e-3}
    torch.testing.assert_close(out.float(), expected, **tolerance)


@pytest.mark.parametrize("bits", [8, 4])
def test_a_quantised_layer_decodes_with_them_and_prefills_without(bits: int, monkeypatch) -> None:
    layer = _layer(bits, 256, 64, torch.bfloat16)
    layer.prepare()
    assert layer._scales_and_zeros is None  # int4 stays in the saved row order
    calls = []
    kernel = quantized_rows.int8_rows if bits == 8 else quantized_rows.int4_rows
    name = kernel.__name__

    def spy(x, *args):
        calls.append(tuple(x.shape))
        return kernel(x, *args)

    monkeypatch.setattr(quantized_rows, name, spy)
    step = torch.randn(1, 1, 256, dtype=torch.bfloat16)
    out = layer(step)
    assert calls == [(1, 256)] and out.shape == (1, 1, 64)
    torch.testing.assert_close(out[0], kernel(step[0], *_arguments(layer)) + layer.bias)
    layer(torch.randn(40, 256, dtype=torch.bfloat16))  # a prefill: dequantised, the dtype's GEMM
    assert calls == [(1, 256)]


def test_arguments_the_kernels_cannot_read_are_refused() -> None:
    layer = _layer(8, 256, 32, torch.float32)
    x = torch.randn(2, 256)
    with pytest.raises(ValueError, match="contiguous bf16 or fp32 input rows"):
        quantized_rows.int8_rows(x.half(), layer.qweight, layer.scales)
    with pytest.raises(ValueError, match="contiguous bf16 or fp32 input rows"):
        quantized_rows.int8_rows(torch.randn(256, 2).t(), layer.qweight, layer.scales)
    with pytest.raises(ValueError, match="multiple of 128"):
        quantized_rows.int8_rows(torch.randn(1, 200), torch.zeros(32, 200, dtype=torch.int8), layer.scales)
    with pytest.raises(ValueError, match=r"torch\.uint8"):
        quantized_rows.int4_rows(x, layer.qweight, layer.scales[:, None], layer.scales[:, None])
    int4 = _layer(4, 256, 32, torch.bfloat16)
    with pytest.raises(ValueError, match="share a dtype"):
        quantized_rows.int4_rows(x.bfloat16(), int4.qweight, int4.scales, int4.zeros.float())


def test_the_build_is_made_once_and_reused(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    compiler = next(c for c in quantized_rows.C_COMPILERS if quantized_rows.shutil.which(c))
    library = quantized_rows._build(compiler)
    assert library.parent == tmp_path / "videogemma" and library.is_file()
    built_at = library.stat().st_mtime_ns
    assert quantized_rows._build(compiler) == library and library.stat().st_mtime_ns == built_at
    assert [p.name for p in library.parent.iterdir()] == [library.name]  # no scratch left behind


def test_turned_off_or_without_a_compiler_torch_decodes(monkeypatch) -> None:
    quantized_rows.kernels.cache_clear()
    try:
        monkeypatch.setenv(quantized_rows.ROW_KERNELS_ENV, "0")
        assert quantized_rows.kernels() is None
        quantized_rows.kernels.cache_clear()
        monkeypatch.delenv(quantized_rows.ROW_KERNELS_ENV)
        monkeypatch.delenv("CC", raising=False)
        monkeypatch.setattr(quantized_rows.shutil, "which", lambda name: None)
        assert quantized_rows.kernels() is None
        layer = _layer(4, 256, 64, torch.bfloat16)
        layer.prepare()
        assert layer._scales_and_zeros is not None  # torch's kernel order
        x = torch.randn(1, 256, dtype=torch.bfloat16)
        expected = x.float() @ layer.dequantized().float().t() + layer.bias.float()
        torch.testing.assert_close(layer(x).float(), expected, atol=0.02, rtol=0.02)
    finally:
        quantized_rows.kernels.cache_clear()


@pytest.mark.parametrize("in_features", [256, 288])  # whole 128-wide steps; and 32 left over after them
def test_a_bf16_row_equals_the_fp32_product(in_features: int) -> None:
    torch.manual_seed(in_features)
    weight = torch.randn(72, in_features, dtype=torch.bfloat16)
    x = torch.randn(1, in_features, dtype=torch.bfloat16)
    out = quantized_rows.bf16_row(x, weight)
    assert out.dtype == torch.bfloat16 and out.shape == (72,)
    expected = weight.float() @ x.float()[0]
    torch.testing.assert_close(out.float(), expected, atol=1e-3, rtol=4e-3)
    with pytest.raises(ValueError, match="a row of 288"):
        quantized_rows.bf16_row(
            torch.randn(288, dtype=torch.bfloat16), torch.zeros(8, 256, dtype=torch.bfloat16)
        )
    with pytest.raises(ValueError, match="contiguous bf16 weight"):
        quantized_rows.bf16_row(x, weight.float())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_an_int8_weight_dequantises_in_c_to_torchs_promoted_product(dtype: torch.dtype, monkeypatch) -> None:
    layer = _layer(8, 384, 80, dtype)
    calls = []
    kernel = quantized_rows.int8_dequantize
    monkeypatch.setattr(quantized_rows, "int8_dequantize", lambda *a: calls.append(1) or kernel(*a))
    weight = layer.dequantized()  # eager: one C pass
    assert calls == [1] and weight.dtype == dtype and weight.shape == (80, 384)
    assert torch.equal(weight, torch.mul(layer.qweight, layer.scales[:, None]))  # the same bits
    assert torch.equal(weight, _exact_weight(layer).to(dtype))  # q · scale is exact in fp32, rounded once
    with pytest.raises(ValueError, match="scales of shape"):
        quantized_rows.int8_dequantize(layer.qweight, layer.scales[:40].contiguous())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_an_int4_weight_dequantises_in_c_to_the_rounded_fp32_weight(dtype: torch.dtype, monkeypatch) -> None:
    layer = _layer(4, 384, 80, dtype)
    exact = _exact_weight(layer)
    calls = []
    kernel = quantized_rows.int4_dequantize
    monkeypatch.setattr(quantized_rows, "int4_dequantize", lambda *a: calls.append(1) or kernel(*a))
    weight = layer.dequantized()  # eager: one C pass
    assert calls == [1] and weight.dtype == dtype and weight.shape == (80, 384)
    if dtype == torch.bfloat16:
        assert torch.equal(weight, exact.to(dtype))  # rounded once
    else:
        torch.testing.assert_close(weight, exact, atol=1e-7, rtol=1e-6)
    x = torch.randn(40, 384, dtype=dtype)  # a prefill
    torch.testing.assert_close(
        layer(x).float(), x.float() @ exact.t() + layer.bias.float(), atol=0.05, rtol=0.02
    )
    with pytest.raises(ValueError, match="scales of shape"):
        quantized_rows.int4_dequantize(
            layer.qweight, layer.scales[:, :2].contiguous(), layer.zeros[:, :2].contiguous()
        )
