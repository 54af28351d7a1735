"""ZeRO-3 set-up: which shipped configs partition parameters, and the modules gathered whole."""

from __future__ import annotations

import pytest

from videogemma.loading import ModelSource, build_model
from videogemma.train.train_config import SHIPPED_CONFIGS
from videogemma.train.zero3 import is_zero3_config, mark_leaf_modules


def test_only_the_zero3_config_partitions_parameters() -> None:
    assert is_zero3_config(SHIPPED_CONFIGS / "deepspeed" / "zero3.json")
    assert not is_zero3_config(SHIPPED_CONFIGS / "deepspeed" / "zero2.json")
    assert not is_zero3_config(None)


def test_mixers_and_decoder_layers_gather_their_parameters_whole() -> None:
    pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (pip install -e '.[deepspeed]')")
    model = build_model(ModelSource(preset="tiny"), seed=0)
    leaves = mark_leaf_modules(model)
    # VideoMamba's mixer reads dt_proj.weight directly; Gemma-3n's AltUp reads its coefficient weights outside
    # their modules' forward: both must gather their submodules' parameters before their own forward.
    expected = [*(layer.mixer for layer in model.videomamba.layers), *model.language_model.model.layers]
    assert {id(m) for m in leaves} == {id(m) for m in expected}
    assert all(getattr(m, "_z3_leaf", False) for m in expected)
