"""The conversation dataset: records of a split file, videos decoded lazily (in DataLoader workers), the
bad-sample policy (`bad_samples`), and an optional in-memory cache of decoded frames.

    dataset = ConversationDataset("qved_train.json", "dataset/", processor, bad_sample_policy="skip")
    collator = ConversationCollator(processor, refill_from=dataset)
    loader = DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=collator)
    for batch in loader:  # input_ids, attention_mask, labels, clip/videomamba pixel values, video_paths
        ...
    dataset.skipped_samples, dataset.bad_sample_counts()  # every skip, from every worker process

`frame_cache_bytes` keeps each video's decoded frames in memory (per process) up to that many bytes: training
reads every clip once an epoch, and decoding is most of a small model's data cost.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from videogemma.datasets.bad_samples import BAD_SAMPLE_POLICIES, BadSamplePolicy, SkipLog, SkippedSample
from videogemma.datasets.records import ConversationRecord, load_conversation_records, resolve_video_path
from videogemma.errors import RecordError, VideoGemmaDataError

logger = logging.getLogger(__name__)


class DecodedFrameCache:
    """Decoded frames (uint8) of the videos read so far, by dataset position, up to `max_bytes` in this process.

    The processor's transforms start from these frames, so a sample built from them equals one decoded afresh.
    Once full it keeps what it holds: with shuffled epochs, any fixed subset saves as much as any other.
    DataLoader workers each hold their own (the Trainer keeps them alive across epochs).
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"a frame cache needs max_bytes >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self.bytes = 0
        self._frames: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._frames)

    def get(self, position: int) -> np.ndarray | None:
        return self._frames.get(position)

    def put(self, position: int, frames: np.ndarray) -> None:
        if position not in self._frames and self.bytes + frames.nbytes <= self.max_bytes:
            self._frames[position] = frames
            self.bytes += frames.nbytes


def _remove_file(path: Path, owner_pid: int) -> None:
    if os.getpid() == owner_pid:  # never from a forked worker holding a copy of the dataset
        path.unlink(missing_ok=True)


class ConversationDataset(torch.utils.data.Dataset):
    """Samples of a conversation file: `input_ids`, `labels`, both pixel tensors and `video_path`.

    `processor` is a `VideoGemmaProcessor` (anything with its `process_sample` / `encode_conversation`);
    it renders the chat template and preprocesses the frames. Videos are decoded in `__getitem__`, i.e.
    lazily, in the DataLoader's worker processes. `dataset_root` defaults to the split file's folder.
    `skip_log`: where skipped samples are written (default: a temporary file).
    """

    def __init__(
        self,
        split_file: str | os.PathLike,
        dataset_root: str | os.PathLike | None,
        processor: Any,
        bad_sample_policy: BadSamplePolicy = "skip",
        *,
        skip_log: str | os.PathLike | None = None,
        frame_cache_bytes: int = 0,
    ) -> None:
        if bad_sample_policy not in BAD_SAMPLE_POLICIES:
            raise ValueError(
                f"bad_sample_policy must be one of {BAD_SAMPLE_POLICIES}, got {bad_sample_policy!r}"
            )
        self.split_file = str(Path(split_file))  # as its records spell it
        self.dataset_root = Path(dataset_root if dataset_root is not None else Path(split_file).parent)
        self.processor = processor
        self.bad_sample_policy = bad_sample_policy
        self.skip_log = SkipLog(skip_log)
        if self.skip_log.temporary:
            weakref.finalize(self, _remove_file, self.skip_log.path, os.getpid())
        self._bad_positions: set[int] = set()  # per process: positions known to fail (for refilling)
        self.frame_cache = DecodedFrameCache(frame_cache_bytes) if frame_cache_bytes > 0 else None

        strict = bad_sample_policy == "strict"
        record_errors: list[RecordError] | None = None if strict else []
        records = load_conversation_records(split_file, errors=record_errors)
        for error in record_errors or []:
            self._log_skip(error.source_file, None, str(error.record), None, error, position=None)
        self.records: list[ConversationRecord] = []
        self.video_paths: list[Path] = []
        for record in records:
            try:
                path = resolve_video_path(
                    record.video, self.dataset_root, source_file=record.source_file, record=record.label
                )
            except RecordError as error:  # outside the root, or not a usable path
                if strict:
                    raise
                self._log_skip(record.source_file, record.index, record.label, None, error, position=None)
                continue
            self.records.append(record)
            self.video_paths.append(path)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, position: int) -> dict[str, Any] | SkippedSample:
        record, path = self.records[position], self.video_paths[position]
        try:
            # The text renders first: a sample whose prompt cannot fit fails before its video is decoded.
            video = self._video(position, record, path)
            sample = self.processor.process_sample(video, list(record.turns), record=record.name)
        except VideoGemmaDataError as error:
            if self.bad_sample_policy == "strict":
                if record.name in str(error):
                    raise
                raise RecordError(record.source_file, record.label, str(error)) from error
            self._bad_positions.add(position)
            return self._log_skip(record.source_file, record.index, record.label, str(path), error, position)
        sample["video_path"] = str(path)
        return sample

    def _video(self, position: int, record: ConversationRecord, path: Path) -> str | np.ndarray:
        """What the processor reads: the path, or (with a frame cache) the video's decoded frames."""
        if self.frame_cache is None:
            return str(path)
        frames = self.frame_cache.get(position)
        if frames is None:
            self.processor.encode_conversation(list(record.turns), record=record.name)  # the text first
            frames = self.processor.load_frames(str(path))
            self.frame_cache.put(position, frames)
        return frames

    def next_good_sample(self, position: int) -> dict[str, Any]:
        """The first sample after `position` (wrapping around) that loads: what replaces a skipped one."""
        for step in range(1, len(self) + 1):
            candidate = (position + step) % len(self)
            if candidate in self._bad_positions:
                continue
            sample = self[candidate]
            if not isinstance(sample, SkippedSample):
                return sample
        raise RecordError(self.split_file, None, "no sample of the file can be loaded; see skipped_samples")

    # ---- what was skipped -----------------------------------------------------------------------------------

    def _log_skip(
        self,
        source_file: str,
        index: int | None,
        label: str,
        video: str | None,
        error: Exception,
        position: int | None,
    ) -> SkippedSample:
        skipped = SkippedSample(source_file, index, label, video, type(error).__name__, str(error), position)
        logger.warning("skipping a bad sample (%s): %s", skipped.error, skipped.reason)
        self.skip_log.append(skipped)
        return skipped

    @property
    def skipped_samples(self) -> list[SkippedSample]:
        """Every record skipped so far, in any process, once each (the first reason seen)."""
        unique: dict[tuple[str, str], SkippedSample] = {}
        for sample in self.skip_log.read():
            unique.setdefault((sample.source_file, sample.label), sample)
        return list(unique.values())

    def bad_sample_counts(self) -> dict[str, int]:
        """`{"skipped": n, "<ErrorType>": n, ...}` over the unique skipped records."""
        skipped = self.skipped_samples
        return {"skipped": len(skipped), **Counter(sample.error for sample in skipped)}
