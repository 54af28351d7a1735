"""The training collator: pads conversation samples into a batch, refilling skipped ones."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import BatchFeature

from videogemma.constants import IGNORE_INDEX
from videogemma.datasets.bad_samples import SkippedSample, refill
from videogemma.datasets.dataset import ConversationDataset


class ConversationCollator:
    """Pads dataset samples into a training batch: right padding, labels -100 on padding, stacked pixels.

    Skipped-sample markers are dropped; with `refill_from` (the dataset, or the datasets sharing this
    collator, e.g. train and validation), each is replaced by the next good sample of the dataset it came
    from, so the batch keeps its size. A batch whose samples were all skipped, without refilling, has zero
    rows. The batch also holds `video_paths` (the training feature cache keys on them).
    """

    def __init__(
        self,
        processor: Any,
        refill_from: ConversationDataset | Sequence[ConversationDataset] | None = None,
    ) -> None:
        self.processor = processor
        datasets = [refill_from] if isinstance(refill_from, ConversationDataset) else list(refill_from or [])
        self.refill_from = {dataset.split_file: dataset for dataset in datasets}

    def __call__(self, items: Sequence[dict[str, Any] | SkippedSample]) -> BatchFeature:
        samples = refill(items, self.refill_from)
        if not samples:
            empty = torch.zeros((0, 0), dtype=torch.long)
            return BatchFeature(
                {
                    "input_ids": empty,
                    "attention_mask": empty.clone(),
                    "labels": torch.full((0, 0), IGNORE_INDEX),
                    "video_paths": [],
                }
            )
        batch = self.processor.collate(samples, padding_side="right", return_labels=True)
        batch["video_paths"] = [sample["video_path"] for sample in samples]
        return batch
