"""The video-answer alignment loss: its answers, its classes, its gradient, and its place in a training run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from videogemma.constants import IGNORE_INDEX
from videogemma.datasets.collator import ConversationCollator
from videogemma.datasets.dataset import ConversationDataset
from videogemma.processing.processor import VideoGemmaProcessor
from videogemma.train.answer_alignment import AnswerAlignment
from videogemma.train.train_config import TrainConfigError


@pytest.fixture(scope="module")
def processor() -> VideoGemmaProcessor:
    return VideoGemmaProcessor.from_preset("tiny")


def _alignment(dataset: ConversationDataset, processor: VideoGemmaProcessor) -> AnswerAlignment:
    return AnswerAlignment.from_records(dataset.records, processor, 0.1, processor.image_token_id)


def test_the_answers_are_the_training_splits_distinct_answers_and_rows_map_to_their_own(
    tiny_dataset: Path, processor: VideoGemmaProcessor
) -> None:
    train = ConversationDataset(tiny_dataset / "qved_train.json", None, processor)
    alignment = _alignment(train, processor)
    records = json.loads((tiny_dataset / "qved_train.json").read_text())
    texts = [r["conversations"][-1]["value"] for r in records]
    assert len(alignment) == len(set(texts))

    batch = ConversationCollator(processor)([train[i] for i in range(len(train))])
    classes = alignment.classes(batch["labels"])
    for text, answer in zip(texts, classes.tolist()):
        tokens = alignment.answer_ids[answer][alignment.answer_mask[answer]]
        assert processor.tokenizer.decode(tokens).startswith(text)  # then its <end_of_turn>
    # Equal answers share a class, different answers do not.
    assert len(set(classes.tolist())) == len(set(texts))


def test_rows_whose_answer_is_not_a_training_answer_are_left_out() -> None:
    alignment = AnswerAlignment([[5, 6, 9], [5, 7, 9]], temperature=0.1, image_token_id=99)
    labels = torch.tensor([[IGNORE_INDEX, 99, 5, 7, 9], [IGNORE_INDEX, 5, 8, 9, IGNORE_INDEX]])
    assert alignment.classes(labels).tolist() == [1, IGNORE_INDEX]

    embed = nn.Embedding(10, 4)
    tokens = torch.randn(2, 3, 4, requires_grad=True)
    only_unknown = alignment.loss(tokens, labels[1:], embed)
    assert only_unknown.item() == 0.0 and only_unknown.requires_grad  # still a graph: DDP needs every grad


def test_the_loss_is_low_when_the_visual_tokens_point_to_their_answer_and_trains_only_the_video_side() -> (
    None
):
    torch.manual_seed(0)
    answers = [[1, 2], [3, 4], [5, 6]]
    alignment = AnswerAlignment(answers, temperature=0.1, image_token_id=99)
    embed = nn.Embedding(8, 16)
    with torch.no_grad():
        directions = torch.stack([embed(torch.tensor(a)).mean(0) for a in answers])
        directions -= directions.mean(0)  # the answers are compared after centring
    labels = torch.tensor([[IGNORE_INDEX, 3, 4], [IGNORE_INDEX, 5, 6]])  # answers 1 and 2
    aligned = directions[[1, 2]].unsqueeze(1).repeat(1, 4, 1)
    swapped = directions[[2, 1]].unsqueeze(1).repeat(1, 4, 1)
    tokens = aligned.clone().requires_grad_(True)
    right = alignment.loss(tokens, labels, embed)
    assert right < 0.1 < alignment.loss(swapped, labels, embed)

    right.backward()
    assert tokens.grad is not None and tokens.grad.abs().sum() > 0
    assert embed.weight.grad is None  # the answer side is read, not trained


@pytest.mark.slow
def test_a_full_run_adds_the_weighted_alignment_loss_and_logs_it(train_tiny) -> None:
    def first_step(run_dir: Path) -> dict:
        lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return next(e for e in lines if "loss" in e)

    plain = first_step(train_tiny("full", name="plain", max_steps=1, data={"val_file": None}))
    aligned = first_step(
        train_tiny("full", name="aligned", max_steps=1, answer_alignment_weight=0.5, data={"val_file": None})
    )
    # Same seed, same first batch: the logged loss grows by exactly the weighted alignment loss.
    assert "answer_alignment_loss" not in plain
    assert aligned["answer_alignment_loss"] > 0
    assert aligned["loss"] == pytest.approx(plain["loss"] + 0.5 * aligned["answer_alignment_loss"], rel=1e-5)


def test_answer_alignment_is_refused_outside_the_full_stage(train_tiny) -> None:
    with pytest.raises(TrainConfigError, match="answer_alignment_weight: for stage full"):
        train_tiny("finetune", answer_alignment_weight=1.0)
