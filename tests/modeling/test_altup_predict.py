"""AltUp's prediction and correction in their fused forms (`modeling/altup_predict.py`): one C call for one
position (where the kernels build), the broadcast form otherwise, the library's for prompts and training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import videogemma
from videogemma.modeling import altup_predict
from videogemma.modeling.altup_predict import FusedAltUpCorrect, FusedAltUpPredict, use_fused_altup_predict


@pytest.fixture
def form(c_or_fallback) -> str:
    """Each test on both one-position forms: the C call (where the kernels build) and the broadcast one."""
    return c_or_fallback(altup_predict, "_one_call_takes")


@pytest.fixture(scope="module")
def language_model(saved_tiny: Path) -> torch.nn.Module:
    model, _ = videogemma.load(saved_tiny, dtype="bfloat16", quiet=True)
    return model.language_model


def _streams(language_model: torch.nn.Module, positions: int) -> torch.Tensor:
    config = language_model.config
    generator = torch.Generator().manual_seed(positions)
    shape = (config.altup_num_inputs, 2, positions, config.hidden_size)
    return torch.randn(shape, generator=generator).to(torch.bfloat16)


@torch.inference_mode()
def test_one_positions_prediction_equals_the_librarys_within_its_rounding(
    language_model: torch.nn.Module, form: str
) -> None:
    altup = language_model.model.layers[0].altup
    assert isinstance(altup.predict, FusedAltUpPredict)  # loading gave every layer the fused form
    streams = _streams(language_model, positions=1)
    weight = altup.prediction_coefs.weight
    saved = weight.clone()
    weight.copy_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)))  # mixing that shows
    try:
        fused, library = altup.predict(streams), altup.predict.library(streams)
    finally:
        weight.copy_(saved)
    assert fused.dtype == library.dtype == torch.bfloat16 and fused.shape == library.shape
    # The library's form rounds the product and then the sum with the input, the fused one once: within two
    # bf16 roundings (a mixing with the coefficients transposed would be off by the coefficients' size).
    assert torch.allclose(fused.float(), library.float(), rtol=2**-7, atol=1e-3)
    assert not torch.equal(fused, streams)


@torch.inference_mode()
@pytest.mark.parametrize("positions", [1, 5, 37])
def test_a_prompts_prediction_and_correction_equal_the_librarys_within_its_rounding(
    language_model: torch.nn.Module, form: str, positions: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eager inference over a prompt's positions (a batch of two): the C calls where they run, each position
    mixed with its own coefficients; where they cannot, the library's forms (the broadcast one only for one
    position)."""
    altup = language_model.model.layers[2].altup
    if positions > 1:
        monkeypatch.setattr(
            FusedAltUpPredict, "_mixed", lambda *args: pytest.fail("broadcast form for a prompt")
        )
    streams = _streams(language_model, positions=positions)
    activated = torch.randn(streams.shape[1:], generator=torch.Generator().manual_seed(4)).to(torch.bfloat16)
    for weight in (altup.prediction_coefs.weight, altup.correction_coefs.weight):
        monkeypatch.setattr(weight, "data", torch.randn(weight.shape).to(weight.dtype))  # mixing that shows
    predicted = altup.predict(streams)
    torch.testing.assert_close(predicted, altup.predict.library(streams), rtol=2**-7, atol=1e-3)
    corrected, library = altup.correct(predicted, activated), altup.correct.library(predicted, activated)
    # As for one position: the library rounds the innovation, the product and the sum, the C call once.
    scale = library.float().abs().max().item()
    torch.testing.assert_close(corrected.float(), library.float(), rtol=2**-6, atol=2**-6 * scale)
    if form == "fallback" and positions > 1:
        assert torch.equal(predicted, altup.predict.library(streams))


@torch.inference_mode()
def test_one_positions_correction_equals_the_librarys_within_its_rounding(
    language_model: torch.nn.Module, form: str
) -> None:
    altup = language_model.model.layers[1].altup
    assert isinstance(altup.correct, FusedAltUpCorrect)
    predictions = _streams(language_model, positions=1)
    activated = torch.randn(predictions.shape[1:], generator=torch.Generator().manual_seed(9)).to(
        torch.bfloat16
    )
    weight = altup.correction_coefs.weight
    saved = weight.clone()
    weight.copy_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(1)))
    try:
        fused, library = altup.correct(predictions, activated), altup.correct.library(predictions, activated)
    finally:
        weight.copy_(saved)
    assert fused.dtype == library.dtype == torch.bfloat16 and fused.shape == library.shape
    # The library rounds the innovation (up to the streams' size), the product and the sum; the fused forms
    # once: within two bf16 steps of the largest value.
    scale = library.float().abs().max().item()
    assert torch.allclose(fused.float(), library.float(), rtol=2**-6, atol=2**-6 * scale)
    assert not torch.equal(fused, predictions)


def test_in_fp32_both_steps_equal_the_librarys_and_greedy_tokens_do_not_change(
    form: str, library_layers
) -> None:
    model, _ = videogemma.load("tiny", dtype="float32", device="cpu", quiet=True)
    library_layers(model)  # the decode steps through the AltUp modules too
    layer = model.language_model.model.layers[0]
    config = model.language_model.config
    generator = torch.Generator().manual_seed(3)
    streams = torch.randn(config.altup_num_inputs, 2, 1, config.hidden_size, generator=generator)
    activated = torch.randn(2, 1, config.hidden_size, generator=generator)
    with torch.inference_mode():
        torch.testing.assert_close(layer.altup.predict(streams), layer.altup.predict.library(streams))
        torch.testing.assert_close(
            layer.altup.correct(streams, activated), layer.altup.correct.library(streams, activated)
        )
    ids = torch.randint(10, 1000, (1, 30), generator=generator)
    wrappers = [
        (each.altup, each.altup.predict, each.altup.correct) for each in model.language_model.model.layers
    ]
    answers = []
    for fused in (True, False):
        for altup, predict, correct in wrappers:
            altup.predict = predict if fused else predict.library
            altup.correct = correct if fused else correct.library
        with torch.inference_mode():
            answers.append(
                model.generate(
                    input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False
                )
            )
    assert torch.equal(answers[0], answers[1])


def test_installing_twice_wraps_once(language_model: torch.nn.Module) -> None:
    before = [(layer.altup.predict, layer.altup.correct) for layer in language_model.model.layers]
    use_fused_altup_predict(language_model)
    assert [(layer.altup.predict, layer.altup.correct) for layer in language_model.model.layers] == before
