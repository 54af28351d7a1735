"""AltUp's prediction in its fused forms (`modeling/altup_predict.py`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import videogemma
from videogemma.modeling.altup_predict import FusedAltUpPredict, use_fused_altup_predict


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
    language_model: torch.nn.Module,
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
def test_a_prompt_run_eager_takes_the_librarys_form(
    language_model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    altup = language_model.model.layers[0].altup
    streams = _streams(language_model, positions=5)
    monkeypatch.setattr(FusedAltUpPredict, "_mixed", lambda *args: pytest.fail("fused form for a prompt"))
    assert torch.equal(altup.predict(streams), altup.predict.library(streams))


def test_installing_twice_wraps_once(language_model: torch.nn.Module) -> None:
    before = [layer.altup.predict for layer in language_model.model.layers]
    use_fused_altup_predict(language_model)
    assert [layer.altup.predict for layer in language_model.model.layers] == before
