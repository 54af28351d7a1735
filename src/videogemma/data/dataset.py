"""Conversation datasets (DATA.md): records read from a JSON list or JSON Lines file, videos decoded lazily
(in DataLoader workers), a bad-sample policy, and the collator.

    records = load_conversation_records("qved_train.json")  # schema-checked; RecordError otherwise
    dataset = ConversationDataset("qved_train.json", "dataset/", processor, bad_sample_policy="skip")
    collator = ConversationCollator(processor, refill_from=dataset)
    loader = DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=collator)
    for batch in loader:  # input_ids, attention_mask, labels, clip/videomamba pixel values, video_paths
        ...
    dataset.skipped_samples, dataset.bad_sample_counts()  # every skip, from every worker process

`frame_cache_bytes` keeps each video's decoded frames in memory (per process) up to that many bytes: training
reads every clip once an epoch, and decoding is most of a small model's data cost.

A bad sample is a record that does not parse, a video path outside the dataset root, a video that does not
decode, or a conversation the chat template cannot render (e.g. a prompt too long for the limit):

- `"strict"`: the first one raises, naming the file and the record.
- `"skip"`: it is logged with a warning and left out. Records that do not parse or resolve are left out when
  the dataset is built; a sample that fails later comes back from `dataset[i]` as a `SkippedSample` marker,
  which the collator drops (and, given `refill_from`, replaces by the next good sample, so that batches keep
  their size). DataLoader workers are separate processes, so every skip is appended to a small JSON Lines
  log that the main process reads back: `skipped_samples` lists each skipped record once, with its reason.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import uuid
import weakref
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from transformers import BatchFeature
from transformers.trainer_pt_utils import LengthGroupedSampler

from videogemma.data.chat_template import IGNORE_INDEX, ConversationError, Turn, normalize_conversation
from videogemma.data.errors import RecordError, VideoGemmaDataError
from videogemma.data.paths import resolve_in_root

logger = logging.getLogger(__name__)

BadSamplePolicy = Literal["skip", "strict"]
BAD_SAMPLE_POLICIES = ("skip", "strict")


# ---- records ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConversationRecord:
    """One checked record of a conversation file."""

    source_file: str
    index: int  # position among the file's records, 0-based (JSON Lines: among its non-blank lines)
    line: int | None  # 1-based line number, for JSON Lines
    video: str | None  # as written in the file (relative to the dataset root)
    turns: tuple[Turn, ...]  # roles normalised to user / model / system
    data: dict[str, Any]  # the record as read: id, split and any other fields

    @property
    def label(self) -> str:
        """How errors name the record within its file, e.g. `record 3 (line 4, video squats/00000340.mp4)`."""
        details = ([f"line {self.line}"] if self.line is not None else []) + (
            [f"video {self.video}"] if self.video is not None else []
        )
        return f"record {self.index}" + (f" ({', '.join(details)})" if details else "")

    @property
    def name(self) -> str:
        """File and record, for messages read outside the file's context."""
        return f"{self.source_file} {self.label}"


def load_conversation_records(
    path: str | os.PathLike, *, require_video: bool = True, errors: list[RecordError] | None = None
) -> list[ConversationRecord]:
    """Read and check a conversation file: a JSON list of records, or JSON Lines (one record per line).

    A record is `{"video": ..., "conversations": [{"from": "human"|"gpt"|"user"|"assistant"|"system",
    "value": ...}, ...]}` (`role`/`content` also accepted) or the flat `{"video": ..., "question": ...,
    "answer": ...}`; other fields are kept in `data`. A malformed record raises `RecordError` naming the file
    and the record, unless `errors` is a list: then it is appended there and left out. A file that cannot be
    read as a whole (missing, not JSON) always raises.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise RecordError(path, None, "file not found") from None
    except UnicodeDecodeError as error:
        raise RecordError(path, None, f"not UTF-8 text ({error})") from None
    except OSError as error:
        raise RecordError(path, None, f"cannot read the file ({error})") from None

    stripped = text.lstrip()
    if not stripped:
        raise RecordError(path, None, "empty file; expected a JSON list of records or JSON Lines")
    if stripped[0] == "[":
        try:
            items = json.loads(text)
        except json.JSONDecodeError as error:
            raise RecordError(
                path, None, f"invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
            ) from None
        entries = [(index, None, item) for index, item in enumerate(items)]
    elif stripped[0] == "{":
        entries = []
        for line_number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                entries.append((len(entries), line_number, line))
    else:
        raise RecordError(
            path, None, f"expected a JSON list of records or JSON Lines objects, found {stripped[:20]!r}"
        )

    records = []
    for index, line_number, item in entries:
        try:
            if line_number is not None:
                item = _parse_json_line(path, index, line_number, item)
            records.append(_check_record(path, index, line_number, item, require_video))
        except RecordError as error:
            if errors is None:
                raise
            errors.append(error)
    return records


def _parse_json_line(path: Path, index: int, line_number: int, line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        raise RecordError(
            path,
            f"record {index} (line {line_number})",
            f"invalid JSON at column {error.colno}: {error.msg} (JSON Lines: one record per line)",
        ) from None


def _check_record(
    path: Path, index: int, line: int | None, item: Any, require_video: bool
) -> ConversationRecord:
    where = f"record {index}" + (f" (line {line})" if line is not None else "")
    if not isinstance(item, dict):
        raise RecordError(path, where, f"expected a JSON object, got {type(item).__name__}")
    video = item.get("video")
    if video is None:
        if require_video:
            raise RecordError(path, where, "missing field 'video'")
    elif not isinstance(video, str) or not video.strip():
        raise RecordError(path, where, f"'video' must be a non-empty string, got {video!r}")
    if "conversations" in item:
        conversation = item["conversations"]
        if not isinstance(conversation, list) or not conversation:
            raise RecordError(
                path, where, f"'conversations' must be a non-empty list, got {conversation!r:.60}"
            )
        for turn_index, turn in enumerate(conversation):
            if not isinstance(turn, dict):
                raise RecordError(
                    path, where, f"turn {turn_index} must be an object, got {type(turn).__name__}"
                )
            if "from" not in turn and "role" not in turn:
                raise RecordError(path, where, f"turn {turn_index}: missing field 'from'")
            if "value" not in turn and "content" not in turn:
                raise RecordError(path, where, f"turn {turn_index}: missing field 'value'")
    elif "question" not in item:
        raise RecordError(path, where, "missing field 'conversations' (or the flat 'question' / 'answer')")
    try:
        turns = normalize_conversation(item, record=where)
    except ConversationError as error:
        raise RecordError(path, where, error.reason) from None
    if not any(turn.role == "user" for turn in turns):
        raise RecordError(path, where, "the conversation has no human/user turn")
    return ConversationRecord(str(path), index, line, video, tuple(turns), item)


def resolve_video_path(
    video: str, dataset_root: str | os.PathLike, *, source_file: str | os.PathLike, record: int | str | None
) -> Path:
    """The video's real path under `dataset_root`; `PathOutsideRootError` if it escapes the root.

    Symlinks are followed (of the file and of every folder on the way) before the check, so a link inside
    the root that points elsewhere is refused like `../x.mp4` (`paths.resolve_in_root`).
    """
    return resolve_in_root(video, dataset_root, source_file=source_file, record=record)


# ---- bad samples ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SkippedSample:
    """A record left out under the "skip" policy, and why. Also the marker `dataset[i]` returns for it."""

    source_file: str
    index: int | None  # the record's index in its file (None: the file position is unknown)
    label: str  # as errors name the record
    video: str | None  # resolved path, when known
    error: str  # exception type, e.g. "VideoDecodeError"
    reason: str  # the error message
    position: int | None = None  # index in the dataset (None: left out when the dataset was built)


class SkipLog:
    """Append-only JSON Lines file of skipped samples, shared by the main process and DataLoader workers.

    Appends of one short line from several processes do not interleave (O_APPEND). A given file is
    truncated when the log is created. Without one, the log goes to a temporary file, created at the first
    skip (so that a clean dataset leaves nothing behind) and removed when its dataset is garbage-collected.
    """

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        if path is None:
            name = f"videogemma-skipped-{os.getpid()}-{uuid.uuid4().hex}.jsonl"
            self.path = Path(tempfile.gettempdir()) / name
            self.temporary = True
        else:
            self.path = Path(path)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("", encoding="utf-8")
            self.temporary = False

    def append(self, sample: SkippedSample) -> None:
        line = json.dumps(asdict(sample), ensure_ascii=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)

    def read(self) -> list[SkippedSample]:
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [SkippedSample(**json.loads(line)) for line in lines if line.strip()]


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


# ---- the dataset ----------------------------------------------------------------------------------------------


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
        self._lengths: list[int] | None = None
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

    # ---- lengths, for length-grouped batching -------------------------------------------------------------

    @property
    def lengths(self) -> list[int]:
        """Token count of every sample (prompt with its visual block, and answer), from the text alone.

        A record whose conversation does not render counts as 0 (it will be skipped when loaded).
        """
        if self._lengths is None:
            lengths = []
            for record in self.records:
                try:
                    ids = self.processor.encode_conversation(list(record.turns), record=record.name)[
                        "input_ids"
                    ]
                    lengths.append(len(ids))
                except VideoGemmaDataError:
                    lengths.append(0)
            self._lengths = lengths
        return self._lengths


def length_grouped_sampler(
    dataset: ConversationDataset, batch_size: int, seed: int = 0
) -> LengthGroupedSampler:
    """Shuffled batches of similar length (less padding): `transformers`' sampler on `dataset.lengths`."""
    generator = torch.Generator().manual_seed(seed)
    return LengthGroupedSampler(batch_size, lengths=dataset.lengths, generator=generator)


# ---- the collator -------------------------------------------------------------------------------------------


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
        samples = [item for item in items if not isinstance(item, SkippedSample)]
        for item in items:
            if isinstance(item, SkippedSample) and item.source_file in self.refill_from:
                samples.append(self.refill_from[item.source_file].next_good_sample(item.position))
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
