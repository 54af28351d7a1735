"""Video-answer alignment: an auxiliary loss that teaches encoders trained from scratch to see what matters.

For each training clip, the mean of its visual tokens should point the way of its own answer more than the way
of any other answer in the training split. An answer is represented by the mean input embedding of its tokens
(the language model's own `embed_tokens`, read without gradient), centred over all answers. The loss is a
cross-entropy over the cosine similarities to every distinct answer, divided by a temperature: CLIP's contrastive
objective, with the text side fixed and all the training answers as the candidates.

Why it exists: with the `tiny` preset trained from scratch (`full`), the language model's gradient into the
video is a weak teacher. The decoder first learns the answers' text prior; after that, the gradient it sends
into the visual tokens depends only weakly on which answer is right. A linear probe on the visual tokens then
stays at its starting accuracy for hundreds of steps (benchmarks/learning.py; the figures are in the README).
This loss gives the encoders and projectors a direct, answer-dependent signal from the first step, and the
decoder learns to read the visual tokens as they improve. Generation and evaluation do not use it.

An answer is the whole supervised token sequence of a sample (every assistant turn and its `<end_of_turn>`), so
this works for any conversation file. Validation samples whose answer never occurs in training are left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from videogemma.constants import IGNORE_INDEX
from videogemma.errors import VideoGemmaDataError


class AnswerAlignment:
    def __init__(self, answers: Sequence[Sequence[int]], temperature: float, image_token_id: int) -> None:
        if not answers:
            raise ValueError("answer alignment needs at least one answer")
        if temperature <= 0:
            raise ValueError(f"answer alignment temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.image_token_id = image_token_id
        self.index = {tuple(answer): i for i, answer in enumerate(answers)}
        longest = max(len(answer) for answer in answers)
        # The answers' token ids, right-padded, and where each answer's tokens are.
        self.answer_ids = torch.zeros(len(answers), longest, dtype=torch.long)
        self.answer_mask = torch.zeros(len(answers), longest, dtype=torch.bool)
        for i, answer in enumerate(answers):
            self.answer_ids[i, : len(answer)] = torch.tensor(answer, dtype=torch.long)
            self.answer_mask[i, : len(answer)] = True

    @classmethod
    def from_records(
        cls, records: Iterable[Any], processor: Any, temperature: float, image_token_id: int
    ) -> AnswerAlignment:
        """The distinct answers of conversation records (a dataset's `records`), rendered as training renders
        them (text only: no video is decoded). Records that cannot be rendered are the dataset's to report."""
        answers: dict[tuple[int, ...], None] = {}
        for record in records:
            try:
                sample = processor.encode_conversation(list(record.turns), record=record.name)
            except VideoGemmaDataError:
                continue
            answer = answer_tokens(sample["labels"], image_token_id)
            if answer:
                answers.setdefault(answer, None)
        return cls(list(answers), temperature, image_token_id)

    def __len__(self) -> int:
        return len(self.index)

    def classes(self, labels: torch.Tensor) -> torch.Tensor:
        """Each row's answer index (-100 where its answer is not one of the training answers)."""
        rows = [
            self.index.get(answer_tokens(row, self.image_token_id), IGNORE_INDEX) for row in labels.tolist()
        ]
        return torch.tensor(rows, dtype=torch.long, device=labels.device)

    def loss(
        self,
        video_hidden_states: torch.Tensor,
        labels: torch.Tensor,
        embed_tokens: nn.Module,
    ) -> torch.Tensor:
        """The mean alignment loss of the rows whose answer is known (0, still tied to the graph, if none is)."""
        classes = self.classes(labels)
        known = classes != IGNORE_INDEX
        if not bool(known.any()):
            return video_hidden_states.sum() * 0.0
        device = video_hidden_states.device
        with torch.no_grad():
            ids, mask = self.answer_ids.to(device), self.answer_mask.to(device)
            embedded = embed_tokens(ids).float() * mask.unsqueeze(-1)
            answers = embedded.sum(1) / mask.sum(1, keepdim=True)
            # Centred: what every answer shares (punctuation, <end_of_turn>, common words) would otherwise
            # make them all point nearly one way (cosine up to 0.9 between two answers of a fresh model).
            answers = F.normalize(answers - answers.mean(0), dim=-1)
        videos = F.normalize(video_hidden_states[known].float().mean(1), dim=-1)
        logits = videos @ answers.T / self.temperature
        return F.cross_entropy(logits, classes[known])


def answer_tokens(labels: Sequence[int] | torch.Tensor, image_token_id: int) -> tuple[int, ...]:
    """A row's supervised tokens in order, i.e. its answer (the processor's labels are the token ids there)."""
    if isinstance(labels, torch.Tensor):
        labels = labels.tolist()
    return tuple(t for t in labels if t != IGNORE_INDEX and t != image_token_id)
