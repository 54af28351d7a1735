"""Prediction records: the one file format batch inference writes and evaluation reads.

One JSON object per line (JSON Lines), appended and fsync'ed as each sample finishes, so a killed run
loses at most the line being written and a restarted run skips what is already done:

    {"id": 17, "video_path": "squats/00000340.mp4", "prompt": "...", "ground_truth": "squats - ...",
     "prediction": "squats - ...", "status": "success", "error": null,
     "generated_tokens": 23, "generation_time": 0.84, "tokens_per_second": 27.4}

Optional keys: `time_to_first_token` (seconds), `model` and `dataset` (identifiers that reports show).
Any other key is kept as is. A failed sample has `"status": "error"`, an empty prediction and the error
text. A record with the same id as an earlier one replaces it (a resumed run that retried the sample).
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from videogemma.errors import VideoGemmaDataError

STATUS_SUCCESS = "success"
STATUS_ERROR = "error"
_STATUSES = (STATUS_SUCCESS, STATUS_ERROR)

# Column names of the label-free CSV that earlier QVED tools read.
UNLABELED_CSV_COLUMNS = ("video_name", "model_output")


class PredictionRecordError(VideoGemmaDataError):
    """A prediction file or record that cannot be read; the message names the file, line or record."""


@dataclass
class PredictionRecord:
    id: Any
    video_path: str | None = None
    prompt: str | None = None
    ground_truth: str | None = None
    prediction: str = ""
    status: str = STATUS_SUCCESS
    error: str | None = None
    generated_tokens: int | None = None
    generation_time: float | None = None
    tokens_per_second: float | None = None
    time_to_first_token: float | None = None
    model: str | None = None
    dataset: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_error(self) -> bool:
        return self.status == STATUS_ERROR

    @property
    def is_empty(self) -> bool:
        """A sample that ran but produced no text (errors are counted separately)."""
        return not self.is_error and not self.prediction.strip()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "record") -> PredictionRecord:
        if not isinstance(data, Mapping):
            raise PredictionRecordError(f"{where}: expected a JSON object, got {type(data).__name__}")
        if "id" not in data or data["id"] is None:
            raise PredictionRecordError(f"{where}: missing 'id'")
        if isinstance(data["id"], (dict, list)):
            raise PredictionRecordError(f"{where}: 'id' must be a number or a string, got {data['id']!r}")
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {key: data[key] for key in known if key in data}
        values["extra"] = {key: value for key, value in data.items() if key not in known}
        # A missing or null prediction is an empty one: it scores 0 and is counted, it is not a bad record.
        prediction = values.get("prediction")
        if prediction is None:
            values["prediction"] = ""
        elif not isinstance(prediction, str):
            raise PredictionRecordError(f"{where} (id {data['id']!r}): 'prediction' must be a string")
        ground_truth = values.get("ground_truth")
        if ground_truth is not None and not isinstance(ground_truth, str):
            raise PredictionRecordError(f"{where} (id {data['id']!r}): 'ground_truth' must be a string")
        status = values.get("status") or STATUS_SUCCESS
        if status not in _STATUSES:
            raise PredictionRecordError(
                f"{where} (id {data['id']!r}): status {status!r} is not one of {', '.join(_STATUSES)}"
            )
        values["status"] = status
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        extra = data.pop("extra")
        # Optional keys stay out of the file when unset, so records read like the documented example.
        for key in ("time_to_first_token", "model", "dataset"):
            if data[key] is None:
                del data[key]
        data.update(extra)
        return data


def read_json_lines(path: str | os.PathLike) -> tuple[list[tuple[int, Any]], int]:
    """(line number, object) for each line of a JSON Lines file, and the byte length of its intact part.

    A run killed mid-write leaves a partial last line: it is dropped with a warning and excluded from the
    intact length. Invalid JSON anywhere else is an error naming the line.
    """
    path = Path(path)
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    items: list[tuple[int, Any]] = []
    offset = 0
    for line_number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                items.append((line_number, json.loads(line)))
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                if all(not rest.strip() for rest in lines[line_number:]):
                    warnings.warn(
                        f"{path}: ignoring the incomplete last line {line_number} (an interrupted run?)",
                        stacklevel=2,
                    )
                    return items, offset
                raise PredictionRecordError(f"{path}, line {line_number}: invalid JSON ({error})") from error
        offset += len(line) + 1  # +1: the newline
    return items, min(offset, len(raw))


def _parse_lines(path: Path) -> tuple[list[PredictionRecord], int]:
    items, intact_length = read_json_lines(path)
    records = [PredictionRecord.from_dict(data, where=f"{path}, line {number}") for number, data in items]
    return records, intact_length


def _latest_per_id(records: Iterable[PredictionRecord]) -> list[PredictionRecord]:
    """One record per id, the last one written winning, in order of first appearance."""
    by_id: dict[Any, PredictionRecord] = {}
    for record in records:
        by_id[record.id] = record
    return list(by_id.values())


def read_records(path: str | os.PathLike) -> list[PredictionRecord]:
    """Read prediction records from a JSON Lines file (a torn last line is ignored) or a JSON list."""
    path = Path(path)
    if not path.is_file():
        raise PredictionRecordError(f"{path}: no such prediction file")
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise PredictionRecordError(f"{path}: invalid JSON ({error})") from error
        if not isinstance(data, list):
            raise PredictionRecordError(f"{path}: expected a JSON list of prediction records")
        records = [PredictionRecord.from_dict(item, where=f"{path}, item {i}") for i, item in enumerate(data)]
    else:
        records, _ = _parse_lines(path)
    return _latest_per_id(records)


class PredictionWriter:
    """Appends prediction records to a JSON Lines file, one durable line per finished sample.

    With `resume=True` an existing file is kept (a torn last line from a killed run is cut off first, so
    the next record starts on a clean line) and `finished_ids()` tells the caller which samples to skip.
    With `resume=False` the file is started over.
    """

    def __init__(self, path: str | os.PathLike, resume: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._records: dict[Any, PredictionRecord] = {}
        if resume and self.path.exists():
            records, intact_length = _parse_lines(self.path)
            if intact_length < self.path.stat().st_size:
                with open(self.path, "r+b") as file:
                    file.truncate(intact_length)
            self._records = {record.id: record for record in records}
            mode = "a"
        else:
            mode = "w"
        self._file = open(self.path, mode, encoding="utf-8")  # noqa: SIM115 (closed in close())
        if mode == "a" and self._file.tell() > 0:
            # An intact file normally ends with a newline; make sure the next record starts a line.
            with open(self.path, "rb") as check:
                check.seek(-1, os.SEEK_END)
                if check.read(1) != b"\n":
                    self._file.write("\n")

    def finished_ids(self, include_errors: bool = True) -> set[Any]:
        """Ids already in the file; with `include_errors=False`, failed samples count as not done."""
        return {
            record_id for record_id, record in self._records.items() if include_errors or not record.is_error
        }

    def append(self, record: PredictionRecord | Mapping[str, Any]) -> PredictionRecord:
        if not isinstance(record, PredictionRecord):
            record = PredictionRecord.from_dict(record)
        line = json.dumps(record.to_dict(), ensure_ascii=False, default=_json_default)
        self._file.write(line + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._records[record.id] = record
        return record

    def records(self) -> list[PredictionRecord]:
        return list(self._records.values())

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _json_default(value: Any) -> Any:
    # numpy scalars and paths show up in records built by inference code.
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def export_json(records: Iterable[PredictionRecord], path: str | os.PathLike) -> Path:
    """Write the records as one JSON list (the end-of-run export)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = [record.to_dict() for record in records]
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2, default=_json_default) + "\n", "utf-8")
    return path


def has_labels(records: Iterable[PredictionRecord]) -> bool:
    return any(record.ground_truth is not None for record in records)


def export_csv(records: Iterable[PredictionRecord], path: str | os.PathLike) -> Path:
    """Write the records as CSV: every column when they carry labels, else `video_name, model_output`."""
    records = list(records)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        if has_labels(records):
            rows = [record.to_dict() for record in records]
            columns: list[str] = []
            for row in rows:
                columns.extend(key for key in row if key not in columns)
            writer.writerow(columns)
            for row in rows:
                writer.writerow(["" if row.get(column) is None else row[column] for column in columns])
        else:
            writer.writerow(UNLABELED_CSV_COLUMNS)
            for record in records:
                video_name = Path(record.video_path).name if record.video_path else str(record.id)
                writer.writerow([video_name, record.prediction])
    return path


def _summary(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "mean": statistics.fmean(values),
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
    }


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def throughput_stats(records: Iterable[PredictionRecord], wall_time_s: float | None = None) -> dict[str, Any]:
    """Generation speed from the records of samples that did not fail.

    Videos per second is every record over the run's wall time when given (that includes decoding,
    preprocessing and failed samples), else the timed records over the sum of their generation times;
    `videos_per_second_basis` says which.
    """
    records = list(records)
    successful = [record for record in records if not record.is_error]
    tokens_per_second = [r.tokens_per_second for r in successful if _finite(r.tokens_per_second)]
    first_token = [r.time_to_first_token for r in successful if _finite(r.time_to_first_token)]
    generation_times = [r.generation_time for r in successful if _finite(r.generation_time)]
    generated_tokens = [r.generated_tokens for r in successful if _finite(r.generated_tokens)]
    if wall_time_s is not None and wall_time_s > 0:
        videos_per_second, basis = len(records) / wall_time_s, "wall_time"
    elif generation_times and sum(generation_times) > 0:
        videos_per_second, basis = len(generation_times) / sum(generation_times), "sum_generation_time"
    else:
        videos_per_second, basis = None, None
    return {
        "records": len(records),
        "successful": len(successful),
        "generated_tokens_total": int(sum(generated_tokens)),
        "tokens_per_second": _summary(tokens_per_second),
        "time_to_first_token_s": _summary(first_token),
        "generation_time_s": _summary(generation_times),
        "videos_per_second": videos_per_second,
        "videos_per_second_basis": basis,
    }


def format_throughput(stats: Mapping[str, Any]) -> str:
    """A few human-readable lines of `throughput_stats` output."""
    lines = [
        f"records: {stats['records']} ({stats['successful']} without error), "
        f"generated tokens: {stats['generated_tokens_total']}"
    ]
    for key, label in (("tokens_per_second", "tokens/s"), ("time_to_first_token_s", "first token (s)")):
        summary = stats.get(key)
        if summary:
            lines.append(
                f"{label}: mean {summary['mean']:.2f}, median {summary['median']:.2f}, "
                f"min {summary['min']:.2f}, max {summary['max']:.2f}"
            )
    if stats.get("videos_per_second") is not None:
        lines.append(f"videos/s: {stats['videos_per_second']:.3f} (from {stats['videos_per_second_basis']})")
    return "\n".join(lines)
