"""The KV cache whose full-attention layers grow in place (`modeling/growing_cache.py`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers.cache_utils import DynamicCache, DynamicLayer, DynamicSlidingWindowLayer

import videogemma
from videogemma.modeling.growing_cache import GROW_POSITIONS, GrowingCache, GrowingLayer


def _states(positions: int, seed: int, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, 2, positions, 8, generator=generator) for _ in range(2))


def _feed(layer: DynamicLayer, steps: list[int], seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [layer.update(*_states(positions, seed + index)) for index, positions in enumerate(steps)]


@torch.inference_mode()
def test_a_growing_layer_returns_what_concatenation_returns_and_writes_in_place() -> None:
    steps = [37] + [1] * (GROW_POSITIONS + 20)  # a prompt, then decode steps past the first buffer's room
    grown, concatenated = _feed(GrowingLayer(), steps), _feed(DynamicLayer(), steps)
    for (keys, values), (expected_keys, expected_values) in zip(grown, concatenated, strict=True):
        assert torch.equal(keys, expected_keys) and torch.equal(values, expected_values)
    pointers = {keys.data_ptr() for keys, _ in grown}
    assert len(pointers) == 2  # one buffer, then one larger one: not a new tensor a step


@torch.inference_mode()
def test_a_growing_layer_follows_a_reordered_or_cropped_cache() -> None:
    layer, reference = GrowingLayer(), DynamicLayer()
    for cache in (layer, reference):
        cache.update(*_states(10, seed=1, batch=3))
        cache.batch_select_indices(torch.tensor([2, 0]))  # a beam search keeps beams 2 and 0
        cache.update(*_states(1, seed=2, batch=2))
        cache.crop(-3)  # an assistant's rejected tokens
        cache.update(*_states(2, seed=3, batch=2))
    assert torch.equal(layer.keys, reference.keys) and torch.equal(layer.values, reference.values)
    assert layer.get_seq_length() == 10


def test_with_gradients_a_growing_layer_concatenates() -> None:
    layer = GrowingLayer()
    keys, values = _states(4, seed=5)
    keys.requires_grad_(True)
    first, _ = layer.update(keys, values)
    second, _ = layer.update(*_states(1, seed=6))
    second.sum().backward()  # a written buffer would have changed `first` under autograd
    assert torch.equal(first, keys) and torch.equal(keys.grad, torch.ones_like(keys))


def test_the_cache_grows_only_the_full_attention_layers(saved_tiny: Path) -> None:
    model, _ = videogemma.load(saved_tiny, quiet=True)
    text_config = model.config.text_config
    grown = [type(layer) for layer in GrowingCache(config=text_config).layers]
    library = [type(layer) for layer in DynamicCache(config=text_config).layers]
    assert DynamicSlidingWindowLayer in library and DynamicLayer in library  # the tiny preset has both
    assert grown == [GrowingLayer if kind is DynamicLayer else kind for kind in library]


@pytest.mark.parametrize("num_beams", [1, 2])
def test_generation_with_the_growing_cache_equals_the_librarys_cache(
    saved_tiny: Path, num_beams: int
) -> None:
    model, _ = videogemma.load(saved_tiny, dtype="float32", quiet=True)
    ids = torch.tensor([[2, 105, 7, 7, 300, 1000, 5, 106, 9]])
    settings = {"max_new_tokens": 12, "do_sample": False, "num_beams": num_beams, "min_new_tokens": 12}
    used = []
    original = GrowingLayer.update

    def spy(self: GrowingLayer, *args: object, **kwargs: object) -> object:
        used.append(self)
        return original(self, *args, **kwargs)

    with torch.inference_mode(), pytest.MonkeyPatch.context() as patch:
        patch.setattr(GrowingLayer, "update", spy)
        grown = model.generate(input_ids=ids, **settings)
    assert used  # the default cache was the growing one
    with torch.inference_mode():
        library = model.generate(
            input_ids=ids, cache=DynamicCache(config=model.config.text_config), **settings
        )
    assert torch.equal(grown, library)
