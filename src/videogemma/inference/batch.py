"""Batch inference: a split file or a folder of videos in, one prediction record per sample out.

    samples = list_samples("data/synthetic/qved_test.json")      # or a folder of videos
    stats = run_batch_inference(model, processor, samples, "predictions.jsonl", batch_size=4)

Decoding and preprocessing run in DataLoader workers, ahead of the model, while the model generates for
the previous batch. Each worker processes its samples one by one, so a sample that fails (missing or
corrupt video, prompt too long) becomes an error record with the error text and the rest of its batch
goes on; so does a generation that is empty or non-finite (an error record, not a success). Records are
appended to a JSON Lines file as each batch finishes (`evaluation.records`), so a killed run keeps what it
finished and `resume=True` skips it, matching records to samples by video path and prompt; JSON and CSV
exports and the throughput statistics are written at the end. `inference.output` holds the rules that keep
an existing file safe (lock, no silent overwrite, no mixing of splits).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from videogemma.constants import VIDEO_SUFFIXES
from videogemma.errors import VideoGemmaDataError
from videogemma.files import atomic_write
from videogemma.inference.generate import (
    GenerationSettings,
    InferenceArgumentError,
    generate_answers,
)
from videogemma.inference.output import PredictionOutput
from videogemma.inference.records import (
    STATUS_ERROR,
    STATUS_SUCCESS,
    PredictionRecord,
    format_throughput,
    sample_key,
    throughput_stats,
)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


@dataclass
class InferenceSample:
    """One question about one video. `conversation` holds the record's turns (its reference answer last,
    if any); the processor's template drops that answer and asks for a new one. A sample whose record is
    already known to be bad carries its `error` and is not run."""

    id: Any
    video: Path | None  # the resolved file
    video_path: str | None  # as the record names it (relative to the dataset root), for the prediction record
    conversation: list[Any]
    prompt: str | None
    ground_truth: str | None = None
    error: str | None = None
    occurrence: int = 0  # k for the k-th repeat of the same video and prompt in the input

    @property
    def key(self) -> tuple[Any, ...]:
        """What its prediction record is matched by on resume (`evaluation.records.sample_key`)."""
        return sample_key(self.video_path, self.prompt, self.occurrence, self.id)


def _folder_samples(folder: Path, question: str) -> list[InferenceSample]:
    """The videos of a folder, sorted, each asked `question`; a file whose real path leaves the folder (a
    symlink pointing outside) becomes a sample carrying that error, never read."""
    from videogemma.datasets.paths import resolve_in_root
    from videogemma.errors import RecordError

    videos = sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    if not videos:
        raise FileNotFoundError(errno.ENOENT, f"no video files ({', '.join(VIDEO_SUFFIXES)})", str(folder))
    samples = []
    for video in videos:
        relative = video.relative_to(folder).as_posix()
        sample = InferenceSample(
            id=relative,
            video=video,
            video_path=relative,
            conversation=[{"from": "human", "value": question}],
            prompt=question,
        )
        try:
            sample.video = resolve_in_root(relative, folder, source_file=folder, record=relative)
        except RecordError as error:
            sample.video, sample.error = None, f"{type(error).__name__}: {error}"
        samples.append(sample)
    return samples


def list_samples(
    data: str | os.PathLike, dataset_root: str | os.PathLike | None = None, prompt: str | None = None
) -> list[InferenceSample]:
    """The samples of a conversation split file (DATA.md formats), or of a folder of videos (no labels).

    Split-file samples are identified by their position in the file and ask the record's question; videos
    resolve against `dataset_root` (default: the file's folder). A malformed record or a path outside the
    root becomes a sample carrying its error. A folder's videos are sorted, identified by their path
    relative to the folder (so a resumed run finds the same ids) and asked `prompt` (default: QVED's
    fine-grained prompt).
    """
    from videogemma.constants import DEFAULT_PROMPT
    from videogemma.datasets.records import load_conversation_records, resolve_video_path
    from videogemma.errors import RecordError

    data = Path(data)
    if data.is_dir():
        return _folder_samples(data, prompt or DEFAULT_PROMPT)

    root = Path(dataset_root) if dataset_root is not None else data.parent
    bad_records: list[RecordError] = []
    samples = []
    for record in load_conversation_records(data, errors=bad_records):
        turns = list(record.turns)
        question = next((turn.text for turn in turns if turn.role == "user"), None)
        answer = turns[-1].text if turns[-1].role == "model" else None
        sample = InferenceSample(record.index, None, record.video, turns, question, answer)
        try:
            sample.video = resolve_video_path(record.video, root, source_file=data, record=record.label)
        except RecordError as error:
            sample.error = f"{type(error).__name__}: {error}"
        samples.append(sample)
    for error in bad_records:
        label = str(error.record)
        samples.append(InferenceSample(label, None, None, [], None, error=f"{type(error).__name__}: {error}"))
    seen: Counter[tuple[Any, ...]] = Counter()
    for sample in samples:
        if sample.video_path is not None:
            sample.occurrence = seen[sample.video_path, sample.prompt]
            seen[sample.video_path, sample.prompt] += 1
    return samples


def check_batch_arguments(batch_size: int, num_workers: int) -> None:
    """Refuse loader settings that cannot work, before anything is opened or loaded."""
    if batch_size < 1:
        raise InferenceArgumentError(f"--batch-size must be at least 1, got {batch_size}")
    if num_workers < 0:
        raise InferenceArgumentError(
            f"--num-workers must be 0 (decode in this process) or more, got {num_workers}"
        )


class _PreprocessedSamples(Dataset):
    """Decodes and preprocesses one sample per item; a failure is returned as its message, not raised."""

    def __init__(self, samples: Sequence[InferenceSample], processor: Any, system: str | None) -> None:
        self.samples = samples
        self.processor = processor
        self.system = system

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[InferenceSample, dict[str, torch.Tensor] | str]:
        sample = self.samples[index]
        if sample.error is not None:
            return sample, sample.error
        try:
            inputs = self.processor.process_sample(
                sample.video,
                sample.conversation,
                system=self.system,
                add_generation_prompt=True,
                record=sample.id,
            )
        except (VideoGemmaDataError, OSError) as error:
            return sample, f"{type(error).__name__}: {error}"
        return sample, inputs


def _keep_items(items: list[Any]) -> list[Any]:
    return items


def _one_thread_per_worker(_: int) -> None:
    # Workers only decode and resize; the model's threads need the cores.
    torch.set_num_threads(1)


def run_batch_inference(
    model: Any,
    processor: Any,
    samples: Sequence[InferenceSample],
    out_path: str | os.PathLike | PredictionOutput,
    *,
    batch_size: int = 1,
    num_workers: int = 1,
    resume: bool = False,
    retry_errors: bool = False,
    overwrite: bool = False,
    settings: GenerationSettings | None = None,
    system: str | None = None,
    model_name: str | None = None,
    dataset_name: str | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Generate an answer for every sample not yet in `out_path`; returns this run's throughput statistics.

    Writes `out_path` (JSON Lines, one record per sample, `<stem>.jsonl`), and at the end `<stem>.json`,
    `<stem>.csv` and `<stem>_throughput.json` beside it. `out_path` is claimed as `PredictionOutput.claim`
    says: an existing file is refused unless `resume` (keep it, skip its samples; `retry_errors`: redo the
    failed ones) or `overwrite` (start over). A caller that claimed the output already (to check it before
    loading the model) passes the `PredictionOutput`; `resume`, `retry_errors` and `overwrite` then come
    from the claim.
    """
    check_batch_arguments(batch_size, num_workers)
    settings = settings or GenerationSettings()
    settings.validate()
    identifiers = {"model": model_name, "dataset": dataset_name}
    claimed = isinstance(out_path, PredictionOutput)
    output = out_path if claimed else PredictionOutput.claim(
        out_path, samples, resume=resume, overwrite=overwrite, retry_errors=retry_errors, data=dataset_name
    )  # fmt: skip
    # A claim made here is released here; the caller's stays the caller's.
    with contextlib.nullcontext() if claimed else output:
        return _run(model, processor, samples, output, batch_size, num_workers, settings, system, identifiers,
                    show_progress)  # fmt: skip


def _run(
    model: Any,
    processor: Any,
    samples: Sequence[InferenceSample],
    output: PredictionOutput,
    batch_size: int,
    num_workers: int,
    settings: GenerationSettings,
    system: str | None,
    identifiers: dict[str, Any],
    show_progress: bool,
) -> dict[str, Any]:
    for note in output.notes:
        print(note)
    writer = output.begin()
    pending = [sample for sample in samples if sample.key not in output.done]
    if output.resume and len(pending) < len(samples):
        print(
            f"resuming {output.paths.jsonl}: {len(samples) - len(pending)} samples done, {len(pending)} to go"
        )
    loader = DataLoader(
        _PreprocessedSamples(pending, processor, system),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_keep_items,
        worker_init_fn=_one_thread_per_worker if num_workers else None,
        prefetch_factor=2 if num_workers else None,
        persistent_workers=False,
    )
    new_records: list[PredictionRecord] = []
    start = time.perf_counter()
    progress = tqdm(total=len(pending), unit="video", desc="inference", disable=not show_progress)
    try:
        for items in loader:
            for record in _answer_batch(model, processor, items, settings, identifiers):
                new_records.append(writer.append(record))
            progress.update(len(items))
            rates = [r.tokens_per_second for r in new_records if r.tokens_per_second]
            if rates:
                progress.set_postfix(
                    tok_s=f"{sum(rates) / len(rates):.1f}", errors=_count_errors(new_records)
                )
    finally:
        writer.close()
        progress.close()
    wall_time = time.perf_counter() - start
    output.finish(writer, samples)
    stats = throughput_stats(new_records, wall_time_s=wall_time)
    stats.update(batch_size=batch_size, num_workers=num_workers, wall_time_s=wall_time,
                 errors=_count_errors(new_records))  # fmt: skip
    # What `eval` shows of the run (evaluation.run_info): the decoding, when it finished, where the videos were.
    stats.update(generation=asdict(settings),
                 finished_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                 video_root=_video_root(samples))  # fmt: skip
    paths = output.paths
    with atomic_write(paths.throughput) as file:
        file.write(json.dumps(stats, indent=2) + "\n")
    if show_progress:
        print(format_throughput(stats))
        print(f"wrote {paths.jsonl}, {paths.json}, {paths.csv}, {paths.throughput}")
    return stats


def _answer_batch(
    model: Any,
    processor: Any,
    items: list[tuple[InferenceSample, dict[str, torch.Tensor] | str]],
    settings: GenerationSettings,
    identifiers: dict[str, Any],
) -> list[PredictionRecord]:
    """The records of one loader batch: failed preprocessing first, then the generated answers."""
    records = [
        _record(sample, identifiers, status=STATUS_ERROR, error=message)
        for sample, message in items
        if isinstance(message, str)
    ]
    ready = [(sample, inputs) for sample, inputs in items if not isinstance(inputs, str)]
    if not ready:
        return records
    batch = processor.collate([inputs for _, inputs in ready], padding_side="left", return_labels=False)
    answers = generate_answers(model, processor, batch, settings)
    # The batch's time, once: its slowest answer's; shared among its samples so that a sum counts it once.
    batch_time_share = max(answer.generation_time for answer in answers) / len(answers)
    for (sample, _), answer in zip(ready, answers):
        timing = {
            "generated_tokens": answer.generated_tokens,
            "generation_time": answer.generation_time,
            "tokens_per_second": answer.tokens_per_second,
            "time_to_first_token": answer.time_to_first_token,
            "batch_time_share": batch_time_share,
        }
        if answer.error is not None:
            # An empty or non-finite answer is no answer: the sample failed (and --retry-errors redoes it).
            records.append(_record(sample, identifiers, status=STATUS_ERROR, error=answer.error, **timing))
        else:
            records.append(_record(sample, identifiers, prediction=answer.text, **timing))
    return records


def _video_root(samples: Sequence[InferenceSample]) -> str | None:
    """The folder the samples' `video_path`s resolved against (the dataset root), or None."""
    for sample in samples:
        if sample.video is not None and sample.video_path:
            resolved, named = Path(sample.video), Path(sample.video_path)
            if not named.is_absolute() and resolved.parts[-len(named.parts) :] == named.parts:
                return str(Path(*resolved.parts[: -len(named.parts)]))
    return None


def _count_errors(records: list[PredictionRecord]) -> int:
    return sum(record.is_error for record in records)


def _record(sample: InferenceSample, identifiers: dict[str, Any], **fields: Any) -> PredictionRecord:
    fields.setdefault("status", STATUS_SUCCESS)
    return PredictionRecord(
        id=sample.id,
        video_path=sample.video_path,
        prompt=sample.prompt,
        ground_truth=sample.ground_truth,
        occurrence=sample.occurrence,
        **{k: v for k, v in identifiers.items() if v is not None},
        **fields,
    )
