"""Tokens a model never answers with (its placeholder for video features), suppressed as one indexed write.

transformers' `SuppressTokensLogitsProcessor` builds a vocabulary-long `arange` and an `isin` over it at every
step: for Gemma-3n's 262,400 tokens, 0.7-1.0 ms of an E2B decode step on a 2-core CPU (torch.profiler, int4),
for the one token the saved generation config names. `IndexedSuppression` writes −inf into those scores
directly: the same scores, the same place in the processor list.

    VideoGemmaForConditionalGeneration._get_logits_processor swaps one for the other
"""

from __future__ import annotations

import torch
from transformers.generation.logits_process import (
    LogitsProcessor,
    LogitsProcessorList,
    SuppressTokensLogitsProcessor,
)


class IndexedSuppression(LogitsProcessor):
    """The scores of `token_ids` set to −inf (a copy: processors do not change their input)."""

    def __init__(self, token_ids: torch.Tensor) -> None:
        self.token_ids = token_ids

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return scores.index_fill(-1, self.token_ids.to(scores.device), -float("inf"))


def index_suppression(processors: LogitsProcessorList) -> LogitsProcessorList:
    """`processors` with each of the library's token suppressions replaced, in place, by `IndexedSuppression`."""
    for index, processor in enumerate(processors):
        if type(processor) is SuppressTokensLogitsProcessor:
            processors[index] = IndexedSuppression(processor.suppress_tokens)
    return processors
