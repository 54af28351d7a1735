"""Fixtures shared by the modeling tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch

import videogemma
from videogemma.modeling import quantized_rows


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny preset (bf16) saved with its processor, as `save_pretrained` writes it; AltUp's output scales
    random (the preset starts them at zero, which would hide each layer's per-layer input path: 0 times it)."""
    model, processor = videogemma.load("tiny", dtype="bfloat16", device="cpu", quiet=True)
    generator = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for layer in model.language_model.model.layers:
            scale = layer.altup.correct_output_scale
            scale.copy_(torch.rand(scale.shape, generator=generator) + 0.5)
    folder = tmp_path_factory.mktemp("tiny_saved")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(params=["C kernels", "fallback"])
def c_or_fallback(request, monkeypatch) -> Callable[[ModuleType, str], str]:
    """Runs a test on both forms of an operator: our C kernels (skipped where they do not build) and what it falls
    back to, which `use(module, switch)` forces by making `module.switch` (the predicate choosing C) say no."""

    def use(module: ModuleType, switch: str) -> str:
        if request.param == "fallback":
            monkeypatch.setattr(module, switch, lambda *arguments: False)
        elif quantized_rows.kernels() is None:
            pytest.skip("no AVX-512 or no C compiler here: the fallback computes")
        return request.param

    return use


@pytest.fixture
def library_layers(monkeypatch) -> Callable[[torch.nn.Module], None]:
    """Puts a loaded model's decoder layers back on the library's forward (which calls each operator, ours or the
    library's, one by one) instead of their few-call decode step, for the tests of those operators in a model."""

    def use(model: torch.nn.Module) -> None:
        for layer in model.language_model.model.layers:
            monkeypatch.setattr(layer, "forward", layer.forward.otherwise)

    return use
