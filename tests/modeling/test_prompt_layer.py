"""A decoder layer's pass over a prompt with its element-wise work in C (`modeling/prompt_layer.py`): a loaded
model's logits and greedy tokens against the library's layer (bf16 and fp32, plain and int8, a padded batch),
and the layer's own forward wherever the pass does not apply."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import videogemma
from videogemma.modeling import prompt_layer, quantized_rows
from videogemma.modeling.decode_layer import DecodeStep
from videogemma.modeling.prompt_layer import PromptStep, use_prompt_steps

pytestmark = pytest.mark.skipif(
    quantized_rows.kernels() is None, reason="no AVX-512 or no C compiler here: the layers' own forward runs"
)


def _passes(model: torch.nn.Module) -> list[PromptStep]:
    forwards = [layer.forward for layer in model.language_model.model.layers]
    assert all(isinstance(forward, DecodeStep) for forward in forwards)
    passes = [forward.otherwise for forward in forwards]  # the decode step falls back to the prompt pass
    assert all(isinstance(each, PromptStep) for each in passes)
    return passes


def _logits(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=ids, attention_mask=mask).logits.float()


@pytest.mark.parametrize("quantize", [None, "int8"])
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_a_prompts_logits_and_greedy_tokens_are_the_library_layers(
    saved_tiny: Path, dtype: str, quantize: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, _ = videogemma.load(saved_tiny, dtype=dtype, quantize=quantize, quiet=True)
    passes = _passes(model)
    calls = []
    original = prompt_layer._pass
    monkeypatch.setattr(prompt_layer, "_pass", lambda *a, **kw: calls.append(1) or original(*a, **kw))
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(10, 1000, (2, 40), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, :7] = 0  # a left-padded second prompt
    ours = _logits(model, ids, mask)
    assert len(calls) == len(passes)  # every layer's prompt through the pass
    with torch.inference_mode():
        greedy = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
    for step, each in zip(
        [layer.forward for layer in model.language_model.model.layers], passes, strict=True
    ):
        monkeypatch.setattr(step, "otherwise", each.otherwise)  # the library's layer under the decode step
    library = _logits(model, ids, mask)
    with torch.inference_mode():
        library_greedy = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
    # The additions in another order than the library's rounding of each: bf16 within a few rounding steps of
    # the logits' size after four layers, fp32 to 1e-5; a residual or a norm out of place is off by whole units.
    scale = library.abs().max().item()
    tolerance = dict(rtol=0.02, atol=0.02 * scale) if dtype == "bfloat16" else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours[0], library[0], **tolerance)
    torch.testing.assert_close(ours[1, 7:], library[1, 7:], **tolerance)
    assert torch.equal(greedy, library_greedy)


def test_gradients_take_the_layers_own_forward(saved_tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, _ = videogemma.load(saved_tiny, dtype="float32", quiet=True)
    monkeypatch.setattr(prompt_layer, "_pass", lambda *a, **kw: pytest.fail("the C pass under gradients"))
    ids = torch.randint(10, 1000, (1, 12), generator=torch.Generator().manual_seed(4))
    model.language_model(input_ids=ids).logits.sum().backward()
    passes = _passes(model)
    use_prompt_steps(model.language_model)  # installed once: the decode step's fallback stays the pass
    assert [layer.forward.otherwise for layer in model.language_model.model.layers] == passes
