"""Batch inference: a split file or a folder of videos in, one prediction record per sample out.

    samples = list_samples("data/synthetic/qved_test.json")      # or a folder of videos
    stats = run_batch_inference(model, processor, samples, "predictions.jsonl", batch_size=4)

Decoding and preprocessing run in DataLoader workers, ahead of the model, while the model generates for
the previous batch. Each worker processes its samples one by one, so a sample that fails (missing or
corrupt video, prompt too long) becomes an error record with the error text and the rest of its batch
goes on. Records are appended to a JSON Lines file as each batch finishes (`evaluation.records`), so a
killed run keeps what it finished and `resume=True` skips it; JSON and CSV exports and the throughput
statistics are written at the end.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from videogemma.constants import VIDEO_SUFFIXES
from videogemma.errors import VideoGemmaDataError
from videogemma.inference.generate import GenerationSettings, generate_answers
from videogemma.inference.records import (
    STATUS_ERROR,
    STATUS_SUCCESS,
    PredictionRecord,
    PredictionWriter,
    export_csv,
    export_json,
    format_throughput,
    throughput_stats,
)


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
        videos = sorted(p for p in data.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
        if not videos:
            raise FileNotFoundError(f"{data}: no video files ({', '.join(VIDEO_SUFFIXES)})")
        question = prompt or DEFAULT_PROMPT
        return [
            InferenceSample(
                id=video.relative_to(data).as_posix(),
                video=video,
                video_path=video.relative_to(data).as_posix(),
                conversation=[{"from": "human", "value": question}],
                prompt=question,
            )
            for video in videos
        ]

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
    return samples


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
    out_path: str | os.PathLike,
    *,
    batch_size: int = 1,
    num_workers: int = 1,
    resume: bool = False,
    retry_errors: bool = False,
    settings: GenerationSettings | None = None,
    system: str | None = None,
    model_name: str | None = None,
    dataset_name: str | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Generate an answer for every sample not yet in `out_path`; returns this run's throughput statistics.

    Writes `out_path` (JSON Lines, one record per sample), and at the end `<stem>.json`, `<stem>.csv` and
    `<stem>_throughput.json` beside it. Without `resume`, an existing `out_path` is started over.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    out_path = Path(out_path)
    writer = PredictionWriter(out_path, resume=resume)
    done = writer.finished_ids(include_errors=not retry_errors)
    pending = [sample for sample in samples if sample.id not in done]
    if resume and done:
        print(f"resuming {out_path}: {len(samples) - len(pending)} samples done, {len(pending)} to go")

    loader = DataLoader(
        _PreprocessedSamples(pending, processor, system),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_keep_items,
        worker_init_fn=_one_thread_per_worker if num_workers else None,
        prefetch_factor=2 if num_workers else None,
        persistent_workers=False,
    )
    identifiers = {"model": model_name, "dataset": dataset_name}
    new_records: list[PredictionRecord] = []
    start = time.perf_counter()
    progress = tqdm(total=len(pending), unit="video", desc="inference", disable=not show_progress)
    with writer:
        for items in loader:
            ready = [(sample, inputs) for sample, inputs in items if not isinstance(inputs, str)]
            for sample, message in ((s, m) for s, m in items if isinstance(m, str)):
                new_records.append(
                    writer.append(_record(sample, identifiers, status=STATUS_ERROR, error=message))
                )
            if ready:
                batch = processor.collate(
                    [inputs for _, inputs in ready], padding_side="left", return_labels=False
                )
                answers = generate_answers(model, processor, batch, settings)
                for (sample, _), answer in zip(ready, answers):
                    record = _record(
                        sample,
                        identifiers,
                        prediction=answer.text,
                        generated_tokens=answer.generated_tokens,
                        generation_time=answer.generation_time,
                        tokens_per_second=answer.tokens_per_second,
                        time_to_first_token=answer.time_to_first_token,
                    )
                    new_records.append(writer.append(record))
            progress.update(len(items))
            rates = [r.tokens_per_second for r in new_records if r.tokens_per_second]
            if rates:
                progress.set_postfix(
                    tok_s=f"{sum(rates) / len(rates):.1f}", errors=_count_errors(new_records)
                )
        all_records = writer.records()
    progress.close()
    wall_time = time.perf_counter() - start

    # Exports in the order of the inputs (the JSON Lines file is in order of completion).
    order = {sample.id: position for position, sample in enumerate(samples)}
    all_records.sort(key=lambda record: order.get(record.id, len(order)))
    export_json(all_records, out_path.with_suffix(".json"))
    export_csv(all_records, out_path.with_suffix(".csv"))
    stats = throughput_stats(new_records, wall_time_s=wall_time)
    stats.update(
        batch_size=batch_size,
        num_workers=num_workers,
        wall_time_s=wall_time,
        errors=_count_errors(new_records),
    )
    throughput_path = out_path.with_name(out_path.stem + "_throughput.json")
    throughput_path.write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    if show_progress:
        print(format_throughput(stats))
        print(
            f"wrote {out_path}, {out_path.with_suffix('.json')}, {out_path.with_suffix('.csv')}, {throughput_path}"
        )
    return stats


def _count_errors(records: list[PredictionRecord]) -> int:
    return sum(record.is_error for record in records)


def _record(sample: InferenceSample, identifiers: dict[str, Any], **fields: Any) -> PredictionRecord:
    fields.setdefault("status", STATUS_SUCCESS)
    return PredictionRecord(
        id=sample.id,
        video_path=sample.video_path,
        prompt=sample.prompt,
        ground_truth=sample.ground_truth,
        **{k: v for k, v in identifiers.items() if v is not None},
        **fields,
    )
