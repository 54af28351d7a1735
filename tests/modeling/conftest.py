"""Fixtures shared by the modeling tests."""

from __future__ import annotations

from pathlib import Path

import pytest

import videogemma


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny preset (bf16) saved with its processor, as `save_pretrained` writes it."""
    model, processor = videogemma.load("tiny", dtype="bfloat16", device="cpu", quiet=True)
    folder = tmp_path_factory.mktemp("tiny_saved")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
