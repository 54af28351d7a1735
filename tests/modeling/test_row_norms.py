"""Gemma-3n's RMSNorm in one C pass: the module's output (bf16, fp32, with and without a scale, any rows), the
module's own forward wherever the kernel does not apply, and a model's greedy tokens unchanged."""

from __future__ import annotations

import pytest
import torch
from transformers.models.gemma3n.modeling_gemma3n import Gemma3nRMSNorm

import videogemma
from videogemma.modeling import quantized_rows, row_norms
from videogemma.modeling.row_norms import RowRMSNorm, use_row_norms

pytestmark = pytest.mark.skipif(
    quantized_rows.kernels() is None, reason="no AVX-512 or no C compiler here: the module's form computes"
)


def _pair(width: int, dtype: torch.dtype, with_scale: bool = True) -> tuple[Gemma3nRMSNorm, RowRMSNorm]:
    library = Gemma3nRMSNorm(width, eps=1e-6, with_scale=with_scale).to(dtype)
    if with_scale:
        torch.nn.init.normal_(library.weight, generator=torch.Generator().manual_seed(0))
    ours = Gemma3nRMSNorm(width, eps=1e-6, with_scale=with_scale).to(dtype)
    ours.load_state_dict(library.state_dict())
    use_row_norms(torch.nn.ModuleList([ours]))
    assert type(ours) is RowRMSNorm
    return library, ours


def _rows(*shape: int, dtype: torch.dtype, seed: int = 1) -> torch.Tensor:
    return (torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 3).to(dtype)


@pytest.mark.parametrize("with_scale", [True, False])
@pytest.mark.parametrize("shape", [(1, 1, 2048), (2, 7, 2048), (1, 1, 8, 256)])
def test_the_kernel_gives_the_modules_output(shape: tuple[int, ...], with_scale: bool) -> None:
    for dtype, tolerance in ((torch.bfloat16, 2**-7), (torch.float32, 2e-6)):
        library, ours = _pair(shape[-1], dtype, with_scale)
        x = _rows(*shape, dtype=dtype)
        with torch.inference_mode():
            expected, got = library(x), ours(x)
        assert got.dtype == dtype and got.shape == x.shape
        # The sum of squares in another order: at most one rounding step of the dtype apart.
        torch.testing.assert_close(got.float(), expected.float(), rtol=tolerance, atol=1e-6)


def test_a_non_contiguous_input_is_read_as_its_values() -> None:
    library, ours = _pair(256, torch.bfloat16)
    x = _rows(1, 3, 512, dtype=torch.bfloat16)[..., ::2]
    with torch.inference_mode():
        torch.testing.assert_close(ours(x), library(x), rtol=2**-7, atol=1e-6)


def test_the_modules_forward_where_the_kernel_does_not_apply(monkeypatch) -> None:
    _, ours = _pair(2048, torch.float32)
    x = _rows(2, 2048, dtype=torch.float32).requires_grad_()
    calls = []
    monkeypatch.setattr(row_norms.quantized_rows, "run", lambda *arguments: calls.append(arguments))
    ours(x).sum().backward()  # gradients: the module's form, which they flow through
    assert x.grad is not None and not calls
    with torch.inference_mode():
        odd_library, odd = _pair(100, torch.float32)  # not in 16-value steps
        part = x[:, :100].detach()
        torch.testing.assert_close(odd(part), odd_library(part), rtol=0, atol=0)
        ours(torch.randn(2, 2048, dtype=torch.float16))  # a dtype the kernel does not read
    assert not calls


def test_the_scale_is_read_again_after_it_changes() -> None:
    library, ours = _pair(2048, torch.bfloat16)
    x = _rows(1, 1, 2048, dtype=torch.bfloat16)
    with torch.inference_mode():
        ours(x)
    with torch.no_grad():
        library.weight.mul_(2)
        ours.weight.mul_(2)  # in place: the same storage, a new version
    with torch.inference_mode():
        torch.testing.assert_close(ours(x), library(x), rtol=2**-7, atol=1e-6)


def test_a_loaded_models_norms_use_the_kernel_and_its_greedy_tokens_are_unchanged(library_layers) -> None:
    model, _ = videogemma.load("tiny", dtype="float32", device="cpu", quiet=True)
    library_layers(model)  # the decode steps through the norm modules too
    norms = [m for m in model.language_model.modules() if isinstance(m, Gemma3nRMSNorm)]
    assert norms and all(type(norm) is RowRMSNorm for norm in norms)
    ids = torch.randint(10, 1000, (1, 30), generator=torch.Generator().manual_seed(2))
    answers = []
    for norm_class in (RowRMSNorm, Gemma3nRMSNorm):
        for norm in norms:
            norm.__class__ = norm_class
        with torch.inference_mode():
            answers.append(
                model.generate(
                    input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False
                )
            )
    assert torch.equal(answers[0], answers[1])
