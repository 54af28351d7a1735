"""A decoder MLP's activation over a prompt in one C pass (`modeling/gated_mlp.py`): the module's output (bf16,
fp32, sparse and dense layers, any rows), the module's own forward where it does not apply, and a loaded model's
greedy tokens unchanged."""

from __future__ import annotations

import pytest
import torch

import videogemma
from videogemma.modeling import quantized_rows
from videogemma.modeling.gated_mlp import PromptGatedMLP, use_gated_mlps

pytestmark = pytest.mark.skipif(
    quantized_rows.kernels() is None, reason="no AVX-512 or no C compiler here: the module's form computes"
)


@pytest.fixture(scope="module", params=["bfloat16", "float32"])
def model(request) -> torch.nn.Module:
    model, _ = videogemma.load("tiny", dtype=request.param, device="cpu", quiet=True)
    return model


def _rows(model: torch.nn.Module, *shape: int, seed: int = 0) -> torch.Tensor:
    dtype = next(model.language_model.parameters()).dtype
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, model.language_model.config.hidden_size, generator=generator) * 2).to(dtype)


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (2, 37)])
def test_the_activation_in_c_gives_the_modules_output(model: torch.nn.Module, shape: tuple[int, ...]) -> None:
    layers = model.language_model.model.layers
    sparse = [layer.mlp.activation_sparsity > 0 for layer in layers]
    assert any(sparse) and not all(sparse)  # both kinds of MLP below
    for layer in layers:
        mlp = layer.mlp
        assert isinstance(mlp.forward, PromptGatedMLP)  # loading gave every MLP the C activation
        x = _rows(model, *shape, seed=len(shape))
        with torch.inference_mode():
            ours, library = mlp(x), mlp.forward.otherwise(x)
        assert ours.dtype == library.dtype and ours.shape == library.shape
        # GELU's exponential is our own and the statistics sum in another order: within a rounding of the
        # dtype (bf16 measured: equal but for a last bit here and there); a wrong cut-off is off by far more.
        tolerance = dict(rtol=2**-7, atol=1e-2) if x.dtype == torch.bfloat16 else dict(rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours.float(), library.float(), **tolerance)


def test_gradients_and_traced_code_take_the_modules_forward(model, monkeypatch: pytest.MonkeyPatch) -> None:
    mlp = model.language_model.model.layers[0].mlp
    monkeypatch.setattr(
        quantized_rows, "run", lambda *arguments: pytest.fail("the C activation under gradients")
    )
    x = _rows(model, 1, 5).requires_grad_()
    mlp(x).float().sum().backward()
    assert x.grad is not None
    use_gated_mlps(model.language_model)  # idempotent: not wrapped twice
    assert not isinstance(mlp.forward.otherwise, PromptGatedMLP)


def test_a_loaded_models_greedy_tokens_are_the_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    model, _ = videogemma.load("tiny", dtype="float32", device="cpu", quiet=True)
    mlps = [layer.mlp for layer in model.language_model.model.layers]
    forms = [mlp.forward for mlp in mlps]
    calls = []
    run = quantized_rows.run

    def counted(name: str, *arguments) -> None:
        if (
            name == "gated_activation_rows" and arguments[5] == mlps[0].intermediate_size
        ):  # not the per-layer gate
            calls.append(name)
        return run(name, *arguments)

    monkeypatch.setattr(quantized_rows, "run", counted)
    ids = torch.randint(
        10, 1000, (2, 30), generator=torch.Generator().manual_seed(2)
    )  # a batch: no decode step
    answers = []
    for ours in (True, False):
        for mlp, form in zip(mlps, forms, strict=True):
            mlp.forward = form if ours else form.otherwise
        with torch.inference_mode():
            answers.append(
                model.generate(
                    input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False
                )
            )
        if ours:  # the prompt and each step of the batch, every layer
            assert len(calls) == 8 * len(mlps)
    assert torch.equal(answers[0], answers[1])
