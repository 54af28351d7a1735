"""Greedy answers for consecutive windows, the previous window's answer checked first in one pass.

Consecutive windows share most of their frames, and while the exercise and the form stay the same the
model answers the same words window after window. Decoding them again costs one forward pass per token;
checking them costs one: the previous answer (with its stop token) is appended to the prompt and the
model is run once over it, which gives the greedy choice after every prefix of it. The longest prefix the
model confirms is kept; where the model would say something else, its choice there is taken and greedy
generation goes on from that point (as `generate` would have got there). The answer is the greedy answer
either way (up to floating-point ties between the cached and uncached passes); only its cost changes: one
pass for an unchanged answer instead of one per token.

Sampling (`do_sample`), or a generation config whose logits processing this pass does not reproduce
(repetition penalties, banned words, minimum lengths, beams...), decodes plainly with `generate_answers`.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from videogemma.inference.generate import GenerationSettings, generate_answers, stop_token_ids

# Generation-config fields that change greedy choices beyond `suppress_tokens`, with their neutral values.
_NEUTRAL = {
    "repetition_penalty": (None, 1.0),
    "no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None,),
    "min_new_tokens": (None, 0),
    "min_length": (None, 0),
    "begin_suppress_tokens": (None,),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "sequence_bias": (None,),
    "num_beams": (None, 1),
    "encoder_repetition_penalty": (None, 1.0),
}


def draft_checking_applies(model: Any, settings: GenerationSettings) -> bool:
    config = model.generation_config
    if settings.do_sample:
        return False
    return all(getattr(config, name, None) in neutral for name, neutral in _NEUTRAL.items())


class AnswerDecoder:
    """Answers one window at a time; `reuse=False` always decodes from scratch (for comparison)."""

    def __init__(
        self,
        model: Any,
        processor: Any,
        input_ids: torch.Tensor,
        settings: GenerationSettings,
        reuse: bool = True,
        tokenizer_lock: contextlib.AbstractContextManager[Any] | None = None,
    ) -> None:
        self.model, self.processor, self.settings = model, processor, settings
        self.tokenizer_lock = tokenizer_lock or contextlib.nullcontext()
        self.input_ids = input_ids.to(model.device)
        self.reuse = reuse and draft_checking_applies(model, settings)
        self.stops = stop_token_ids(model)
        self.suppressed = list(model.generation_config.suppress_tokens or [])
        self._previous: list[int] | None = None
        self.drafts_checked = 0
        self.drafts_kept = 0  # answers confirmed whole by the single pass

    def answer(self, features: Any) -> str:
        if not self.reuse:
            inputs = {"input_ids": self.input_ids, "attention_mask": torch.ones_like(self.input_ids),
                      "video_features": features}  # fmt: skip
            return generate_answers(self.model, self.processor, inputs, self.settings)[0].text
        tokens = self._greedy(features)
        self._previous = tokens
        with self.tokenizer_lock:
            return self.processor.decode(tokens, skip_special_tokens=True).strip()

    @torch.inference_mode()
    def _greedy(self, features: Any) -> list[int]:
        features = features.to(self.model.device)
        limit = self.settings.max_new_tokens
        tokens: list[int] = []
        if self._previous:
            self.drafts_checked += 1
            tokens = self._check(features, self._previous)[:limit]
            if tokens[-1] in self.stops or len(tokens) == limit:
                self.drafts_kept += tokens == self._previous
                return tokens
        prompt = torch.cat(
            [self.input_ids, torch.tensor([tokens], dtype=torch.long, device=self.model.device)], 1
        )
        sequences = self.model.generate(
            input_ids=prompt, attention_mask=torch.ones_like(prompt), video_features=features,
            max_new_tokens=limit - len(tokens), do_sample=False,
        )  # fmt: skip
        for token in sequences[0, prompt.shape[1] :].tolist():
            tokens.append(token)
            if token in self.stops:
                break
        return tokens

    def _check(self, features: Any, draft: list[int]) -> list[int]:
        """The greedy answer's start as far as one pass over `draft` tells: the confirmed prefix and the
        model's own next token."""
        draft_ids = torch.tensor([draft], dtype=torch.long, device=self.model.device)
        ids = torch.cat([self.input_ids, draft_ids], dim=1)
        logits = self.model(input_ids=ids, attention_mask=torch.ones_like(ids), video_features=features,
                            use_cache=False).logits[0, self.input_ids.shape[1] - 1 :]  # fmt: skip
        logits = logits.float()
        if self.suppressed:
            logits[:, self.suppressed] = -float("inf")
        choices = logits.argmax(dim=-1).tolist()  # choices[i]: the greedy token after draft[:i]
        kept = []
        for position, token in enumerate(choices):
            kept.append(token)
            if token in self.stops or position >= len(draft) or token != draft[position]:
                break
        return kept
