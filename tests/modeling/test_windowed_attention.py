"""Sliding-window attention in blocks of queries: the same logits as transformers' SDPA over the whole mask, for
a long prompt, a left-padded batch and a generation that goes on from the prompt; the blocks are really used
(SDPA's blocks where the CPU block products do not run, those where they do)."""

from __future__ import annotations

import pytest
import torch

import videogemma
from videogemma.constants import WINDOWED_ATTENTION
from videogemma.modeling import prefill_attention, windowed_attention


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    model, _ = videogemma.load("tiny", dtype="float32", device="cpu", quiet=True)
    return model


def _prompt(length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(10, 1000, (1, length), generator=torch.Generator().manual_seed(seed))


def _logits(
    model: torch.nn.Module, implementation: str, ids: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    model.language_model.set_attn_implementation(implementation)
    try:
        with torch.inference_mode():
            return model(input_ids=ids, attention_mask=mask).logits
    finally:
        model.language_model.set_attn_implementation(WINDOWED_ATTENTION)


def test_a_model_attends_in_windows_unless_asked_otherwise(model: torch.nn.Module) -> None:
    assert model.language_model.config._attn_implementation == WINDOWED_ATTENTION
    eager, _ = videogemma.load("tiny", device="cpu", quiet=True, attn_implementation="eager")
    assert eager.language_model.config._attn_implementation == "eager"


def test_a_long_prompt_gives_the_whole_mask_logits_through_blocks(
    model: torch.nn.Module, monkeypatch
) -> None:
    window = model.config.text_config.sliding_window
    ids = _prompt(5 * window + 7)  # blocks of half a window, the last one short
    mask = torch.ones_like(ids)
    reference = _logits(model, "sdpa", ids, mask)
    queries = []
    library = windowed_attention.sdpa_attention_forward

    def spy(module, query, key, *args, **kwargs):
        queries.append((query.shape[2], key.shape[2]))
        return library(module, query, key, *args, **kwargs)

    monkeypatch.setattr(windowed_attention, "sdpa_attention_forward", spy)
    # SDPA's blocks serve gradients and other devices; here the CPU's block products are turned away.
    monkeypatch.setattr(prefill_attention, "takes", lambda *args: False)
    ours = _logits(model, WINDOWED_ATTENTION, ids, mask)
    torch.testing.assert_close(ours, reference, atol=2e-5, rtol=1e-5)
    length = ids.shape[1]
    # A local layer's blocks: half a window of queries, each with the window's keys before it.
    assert (window // 2, window // 2 + window - 1) in queries
    assert (length % (window // 2), length % (window // 2) + window - 1) in queries
    assert (length, length) in queries  # the global layers: one call over the whole prompt


def test_a_cpu_prompt_goes_through_the_block_products(model: torch.nn.Module, monkeypatch) -> None:
    ids = _prompt(3 * model.config.text_config.sliding_window)
    reference = _logits(model, "sdpa", ids, torch.ones_like(ids))
    calls = []
    library = prefill_attention.block_attention

    def spy(query, *args):
        calls.append(query.shape[2])
        return library(query, *args)

    monkeypatch.setattr(prefill_attention, "block_attention", spy)
    ours = _logits(model, WINDOWED_ATTENTION, ids, torch.ones_like(ids))
    torch.testing.assert_close(ours, reference, atol=2e-5, rtol=1e-5)
    assert calls == [ids.shape[1]] * model.config.text_config.num_hidden_layers


def test_a_left_padded_batch_gives_the_whole_mask_logits(model: torch.nn.Module) -> None:
    window = model.config.text_config.sliding_window
    long, short = _prompt(4 * window + 3, seed=1), _prompt(4 * window - 20, seed=2)
    pad = long.shape[1] - short.shape[1]
    ids = torch.cat([long, torch.cat([torch.zeros(1, pad, dtype=torch.long), short], dim=1)])
    mask = torch.ones_like(ids)
    mask[1, :pad] = 0
    reference = _logits(model, "sdpa", ids, mask)
    ours = _logits(model, WINDOWED_ATTENTION, ids, mask)
    torch.testing.assert_close(ours[0], reference[0], atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(ours[1, pad:], reference[1, pad:], atol=2e-5, rtol=1e-5)


def test_generation_after_a_long_prompt_is_the_same(model: torch.nn.Module) -> None:
    ids = _prompt(4 * model.config.text_config.sliding_window + 1, seed=3)
    answers = {}
    for implementation in ("sdpa", WINDOWED_ATTENTION):
        model.language_model.set_attn_implementation(implementation)
        with torch.inference_mode():
            answers[implementation] = model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False
            )
    assert torch.equal(answers["sdpa"], answers[WINDOWED_ATTENTION])


def test_training_through_the_blocks_gives_the_same_gradients(model: torch.nn.Module) -> None:
    ids = _prompt(4 * model.config.text_config.sliding_window + 9, seed=4)
    layer = model.language_model.model.layers[0].self_attn.q_proj  # a local layer's
    gradients = {}
    for implementation in ("sdpa", WINDOWED_ATTENTION):
        model.language_model.set_attn_implementation(implementation)
        model.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        gradients[implementation] = layer.weight.grad.clone()
    model.zero_grad()
    torch.testing.assert_close(gradients[WINDOWED_ATTENTION], gradients["sdpa"], atol=1e-6, rtol=1e-4)
