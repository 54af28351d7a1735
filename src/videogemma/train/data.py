"""Training data: the conversation datasets of both splits, and their frozen-feature-cache variant.

Without the cache, samples come straight from `ConversationDataset` and `ConversationCollator`.
With it, `CachedFeatureDataset` looks each video up first: a hit renders only the text (no decoding, no
encoders) and carries the cached features; a miss loads the sample as usual (the trainer computes the features
once and stores them). The bad-sample policy stays the dataset's: misses go through `ConversationDataset`, and
skipped samples are dropped and refilled as `ConversationCollator` does.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import BatchFeature

from videogemma.constants import PIXEL_INPUT_NAMES
from videogemma.train.feature_cache import FeatureCache
from videogemma.train.train_config import TrainConfig, TrainConfigError
from videogemma.train.trainer import CACHED_FEATURES_KEY, VIDEO_PATHS_KEY


def build_datasets(config: TrainConfig, processor: Any, cache: FeatureCache | None) -> tuple[Any, Any, Any]:
    """(train dataset, validation dataset or None, collator)."""
    from videogemma.datasets.collator import ConversationCollator
    from videogemma.datasets.dataset import ConversationDataset
    from videogemma.errors import VideoGemmaDataError

    def load(split_file: str) -> ConversationDataset:
        try:
            return ConversationDataset(
                split_file,
                config.data.dataset_root,
                processor,
                config.data.bad_sample_policy,
                frame_cache_bytes=config.data.frame_cache_mb * 2**20,
            )
        except VideoGemmaDataError as error:
            raise TrainConfigError(f"{split_file}: {error}") from error

    train = load(config.data.train_file)
    if len(train) == 0:
        raise TrainConfigError(f"data.train_file {config.data.train_file}: no usable sample")
    val = load(config.data.val_file) if config.data.val_file else None
    if cache is None:
        datasets = [d for d in (train, val) if d is not None]
        return train, val, ConversationCollator(processor, refill_from=datasets)
    train = CachedFeatureDataset(train, cache)
    val = CachedFeatureDataset(val, cache) if val is not None else None
    datasets = [d for d in (train, val) if d is not None]
    return train, val, CachedFeatureCollator(processor, refill_from=datasets)


class CachedFeatureDataset(torch.utils.data.Dataset):
    """A `ConversationDataset` whose samples carry cached encoder features instead of pixels when cached."""

    def __init__(self, dataset: Any, cache: FeatureCache) -> None:
        self.dataset = dataset
        self.cache = cache

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, position: int) -> Any:
        from videogemma.errors import VideoGemmaDataError

        path = self.dataset.video_paths[position]
        try:
            features = self.cache.load(path)
        except OSError:  # a missing or unreadable video: the dataset's policy decides
            features = None
        if features is not None:
            record = self.dataset.records[position]
            try:
                sample = self.dataset.processor.encode_conversation(list(record.turns), record=record.name)
            except VideoGemmaDataError:
                return self.dataset[position]  # the dataset raises or skips it, as its policy says
            sample["video_path"] = str(path)
            sample[CACHED_FEATURES_KEY] = features
            return sample
        sample = self.dataset[position]
        if isinstance(sample, dict):
            sample[CACHED_FEATURES_KEY] = None
        return sample

    def next_good_sample(self, position: int) -> Any:
        from videogemma.datasets.bad_samples import SkippedSample

        for step in range(1, len(self) + 1):
            sample = self[(position + step) % len(self)]
            if not isinstance(sample, SkippedSample):
                return sample
        return self.dataset.next_good_sample(position)  # raises, naming the file

    def bad_sample_counts(self) -> dict[str, int]:
        return self.dataset.bad_sample_counts()

    @property
    def skipped_samples(self) -> list[Any]:
        return self.dataset.skipped_samples


class CachedFeatureCollator:
    """Pads a batch mixing cache hits (features) and misses (pixels): the text as `ConversationCollator` does,
    `cached_features` per row (None for a miss) and the misses' pixels stacked in row order."""

    def __init__(self, processor: Any, refill_from: list[CachedFeatureDataset]) -> None:
        self.processor = processor
        # Skipped samples are replaced from the dataset they came from (train or validation).
        self.refill_from = {dataset.dataset.split_file: dataset for dataset in refill_from}

    def __call__(self, items: list[Any]) -> BatchFeature:
        from videogemma.datasets.bad_samples import refill

        samples = refill(items, self.refill_from)
        pixels = {key: [s.pop(key) for s in samples if key in s] for key in PIXEL_INPUT_NAMES}
        batch = self.processor.collate(samples, padding_side="right", return_labels=True)
        batch[VIDEO_PATHS_KEY] = [s["video_path"] for s in samples]
        batch[CACHED_FEATURES_KEY] = [s.get(CACHED_FEATURES_KEY) for s in samples]
        for key, tensors in pixels.items():
            if tensors:
                batch[key] = torch.stack(tensors)
        return batch
