"""The decoder's one-row products through `torch.mv`: what `F.linear` computes, used for a decode step's single
row only, on every plain linear layer of an inference-loaded model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch._dynamo.utils import counters

import videogemma
from videogemma.modeling import quantized_rows
from videogemma.modeling.row_products import (
    RowVectorLinear,
    use_row_vector_products,
    uses_row_vector_products,
)

IDS = torch.tensor([[2, 105, 7, 7, 300, 1000, 5, 106, 9, 1031, 0, 42, 17, 23, 400, 106]])


def _counting(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list[int]:
    """A list that grows by one at each call of `owner.name` (patched for the test)."""
    calls = []
    function = getattr(owner, name)

    def counted(*args: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return function(*args)

    monkeypatch.setattr(owner, name, counted)
    return calls


def _counting_mv(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    return _counting(monkeypatch, torch, "mv")


@pytest.mark.parametrize("kernels", ["ours", "none"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bias", [False, True])
def test_one_row_is_the_linear_product_and_many_rows_are_the_library(
    dtype: torch.dtype, bias: bool, kernels: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if kernels == "none":
        monkeypatch.setattr(quantized_rows, "kernels", lambda: None)
    # bf16 weights go through our row kernel where it runs, the rest through torch.mv.
    ours = dtype == torch.bfloat16 and quantized_rows.kernels() is not None
    torch.manual_seed(0)
    linear = nn.Linear(64, 48, bias=bias).to(dtype)  # not square: a transposed weight would fail
    product = nn.Linear(64, 48, bias=bias).to(dtype)
    product.load_state_dict(linear.state_dict())
    use_row_vector_products(product)
    assert type(product) is RowVectorLinear and product.state_dict().keys() == linear.state_dict().keys()
    mv_calls, kernel_calls = _counting_mv(monkeypatch), _counting(monkeypatch, quantized_rows, "bf16_row")
    calls = kernel_calls if ours else mv_calls
    tolerance = {"rtol": 1e-2, "atol": 1e-2} if dtype == torch.bfloat16 else {"rtol": 1e-5, "atol": 1e-6}
    with torch.inference_mode():
        for shape in ((64,), (1, 64), (1, 1, 64)):  # a decode step's row, whatever its leading dims
            x = torch.randn(shape, dtype=dtype)
            got = product(x)
            assert got.shape == (*shape[:-1], 48) and got.dtype == dtype
            torch.testing.assert_close(got, F.linear(x, linear.weight, linear.bias), **tolerance)
        assert len(calls) == 3 and len(mv_calls) + len(kernel_calls) == 3
        many = torch.randn(2, 5, 64, dtype=dtype)
        assert torch.equal(product(many), F.linear(many, linear.weight, linear.bias))
    # With gradients (training), the library's product even for one row.
    row = torch.randn(1, 64, dtype=dtype)
    assert torch.equal(product(row), F.linear(row, linear.weight, linear.bias)) and len(calls) == 3


def test_an_inference_model_decodes_its_one_row_products_with_mv(monkeypatch: pytest.MonkeyPatch) -> None:
    model, _ = videogemma.load("tiny", dtype="float32", device="cpu", quiet=True)
    language_model = model.language_model
    linears = [m for m in language_model.modules() if isinstance(m, nn.Linear)]
    assert linears and all(type(m) is RowVectorLinear for m in linears)
    assert type(language_model.lm_head) is RowVectorLinear
    calls = _counting_mv(monkeypatch)
    greedy = {"max_new_tokens": 5, "do_sample": False}
    with torch.inference_mode():
        model(input_ids=IDS)  # a prompt: many rows, no mv
        assert calls == []
        answer = model.generate(input_ids=IDS, **greedy)
        assert len(calls) > 0  # the decode steps (and the last prompt row's LM head)
        for module in linears:  # back to the library's forward: the same answer
            module.__class__ = nn.Linear
        assert not uses_row_vector_products(language_model)
        assert torch.equal(model.generate(input_ids=IDS, **greedy), answer)


def test_traced_layers_of_one_shape_share_one_graph() -> None:
    """A compiled prefill traces through every layer's linears: one graph for them all, not one per layer
    (a forward bound to each instance made dynamo guard on it and recompile per layer)."""
    torch.manual_seed(0)
    layers = [nn.Sequential(nn.Linear(32, 32), nn.Linear(32, 32)) for _ in range(3)]
    for layer in layers:
        use_row_vector_products(layer)
    compiled = torch.compile(lambda layer, x: layer(x), dynamic=True)
    x = torch.randn(5, 32)
    torch._dynamo.reset()
    before = counters["stats"]["unique_graphs"]
    with torch.inference_mode():
        for layer in layers:
            torch.testing.assert_close(compiled(layer, x), layer(x))
    assert counters["stats"]["unique_graphs"] == before + 1
