"""The placeholder token suppressed by one indexed write: the library's scores, and a model that never answers
with the placeholder even where its logits would pick it."""

from __future__ import annotations

import torch
from transformers.generation.logits_process import LogitsProcessorList, SuppressTokensLogitsProcessor

import videogemma
from videogemma.modeling import suppressed_tokens
from videogemma.modeling.suppressed_tokens import IndexedSuppression, index_suppression


def test_the_scores_equal_the_library_suppression() -> None:
    torch.manual_seed(0)
    scores = torch.randn(3, 500)
    ids = [0, 17, 499]
    library = SuppressTokensLogitsProcessor(ids)
    processors = index_suppression(LogitsProcessorList([library]))
    assert [type(p) for p in processors] == [IndexedSuppression]
    original = scores.clone()
    got = processors(torch.zeros(3, 2, dtype=torch.long), scores)
    assert torch.equal(got, library(torch.zeros(3, 2, dtype=torch.long), original))
    assert torch.equal(scores, original)  # the input left as it was


def test_generate_never_answers_with_the_placeholder(monkeypatch) -> None:
    model, _ = videogemma.load("tiny", dtype="float32", device="cpu", quiet=True)
    placeholder = model.config.image_token_id
    assert model.generation_config.suppress_tokens == [placeholder]
    calls = []
    monkeypatch.setattr(
        suppressed_tokens.IndexedSuppression,
        "__call__",
        lambda self, ids, scores: calls.append(1) or scores.index_fill(-1, self.token_ids, -float("inf")),
    )
    # The LM head made to favour the placeholder far above every other token.
    head = model.language_model.lm_head
    hook = head.register_forward_hook(
        lambda _, __, logits: logits.index_fill(-1, torch.tensor([placeholder]), 1e4)
    )
    with torch.inference_mode():
        answer = model.generate(input_ids=torch.tensor([[2, 105, 7, 300]]), max_new_tokens=4, do_sample=False)
    hook.remove()
    assert len(calls) == 4
    assert placeholder not in answer[0, 4:].tolist()
