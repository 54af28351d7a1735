"""Prediction records: the one file format batch inference writes and evaluation reads.

One JSON object per line (JSON Lines), appended and fsync'ed as each sample finishes, so a killed run
loses at most the line being written and a restarted run skips what is already done:

    {"id": 17, "video_path": "squats/00000340.mp4", "prompt": "...", "ground_truth": "squats - ...",
     "prediction": "squats - ...", "status": "success", "error": null,
     "generated_tokens": 23, "generation_time": 0.84, "tokens_per_second": 27.4}

`generation_time` and `tokens_per_second` are the sample's own (from the start of its batch's generation to
its last token). Optional keys: `time_to_first_token` (seconds), `batch_time_share` (the time its batch took,
divided among the batch's samples: summed over the records, the run's generation time, each batch counted
once), `model` and `dataset` (identifiers that reports show), and
`occurrence` (k > 0 for the k-th repeat of a sample listed more than once). Any other key is kept as is. A
failed sample has `"status": "error"`, an empty prediction and the error text.

A record answers the sample its `key` names: the video path, the prompt and the occurrence (the id, a position
in the split, only for records without a video). A later record for the same sample (same key and id)
replaces an earlier one (a resumed run that retried the sample). A line that cannot be read (invalid JSON, not
a record) is skipped and reported by its line number; the other records are kept.
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
from videogemma.files import atomic_write

STATUS_SUCCESS = "success"
STATUS_ERROR = "error"
_STATUSES = (STATUS_SUCCESS, STATUS_ERROR)

# Column names of the label-free CSV that earlier QVED tools read.
UNLABELED_CSV_COLUMNS = ("video_name", "model_output")
# A spreadsheet reads a cell starting with one of these as a formula (OWASP, "CSV injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
# Damaged lines named one by one in a message; the rest are counted.
_SHOWN_DAMAGE = 10


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
    batch_time_share: float | None = None
    model: str | None = None
    dataset: str | None = None
    occurrence: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[Any, ...]:
        """The sample this record answers (see `sample_key`)."""
        return sample_key(self.video_path, self.prompt, self.occurrence, self.id)

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
        occurrence = values.get("occurrence", 0)
        if not isinstance(occurrence, int) or isinstance(occurrence, bool) or occurrence < 0:
            raise PredictionRecordError(f"{where} (id {data['id']!r}): 'occurrence' must be an integer ≥ 0")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        extra = data.pop("extra")
        # Optional keys stay out of the file when unset, so records read like the documented example.
        for key in ("time_to_first_token", "batch_time_share", "model", "dataset"):
            if data[key] is None:
                del data[key]
        if not data["occurrence"]:
            del data["occurrence"]
        data.update(extra)
        return data


def sample_key(
    video_path: str | None, prompt: str | None, occurrence: int, record_id: Any
) -> tuple[Any, ...]:
    """What identifies a sample across runs: its video path (as the split names it), prompt and occurrence
    (k for the k-th repeat of the same video and prompt in one split); a record without a video (a malformed
    split record) is known by its id only. Positions are not keys: a re-prepared split moves them."""
    if video_path is None:
        return ("id", record_id)
    return ("video", video_path, prompt, occurrence)


@dataclass
class DamagedLine:
    """A line (or list item) of a prediction file that could not be read; `message` names it and says why."""

    number: int  # the 1-based line number (a JSON list: the 0-based item index)
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass
class JsonLinesScan:
    """What a JSON Lines file holds, line by line (see `scan_json_lines`)."""

    items: list[tuple[int, Any]]  # (line number, parsed value) of every intact line
    damaged: list[DamagedLine]  # invalid lines before the last one
    torn_tail: DamagedLine | None  # an invalid last line: a write cut short by a kill
    intact_length: int  # bytes before the torn tail (the whole file when there is none)


def scan_json_lines(path: str | os.PathLike) -> JsonLinesScan:
    """Parse each line of a JSON Lines file on its own, so that one bad line costs only itself."""
    raw = Path(path).read_bytes()
    lines = raw.split(b"\n")
    last = max((index for index, line in enumerate(lines) if line.strip()), default=-1)
    items: list[tuple[int, Any]] = []
    damaged: list[DamagedLine] = []
    torn_tail = None
    intact_length = offset = 0
    for index, line in enumerate(lines):
        number = index + 1
        if line.strip():
            try:
                items.append((number, json.loads(line)))
            except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
                if index == last:
                    torn_tail = DamagedLine(
                        number, f"line {number}: incomplete last line (an interrupted run?)"
                    )
                    break
                damaged.append(DamagedLine(number, f"line {number}: invalid JSON ({error})"))
        offset += len(line) + 1  # +1: the newline
        intact_length = min(offset, len(raw))
    return JsonLinesScan(items, damaged, torn_tail, intact_length)


def read_json_lines(path: str | os.PathLike) -> tuple[list[tuple[int, Any]], int]:
    """(line number, object) for each line of a JSON Lines file, and the byte length of its intact part.

    A run killed mid-write leaves a partial last line: it is dropped with a warning and excluded from the
    intact length. Invalid JSON anywhere else is an error naming the line (prediction files are read with
    `read_prediction_file`, which skips such lines instead).
    """
    scan = scan_json_lines(path)
    if scan.damaged:
        raise PredictionRecordError(f"{path}, {scan.damaged[0]}")
    if scan.torn_tail is not None:
        warnings.warn(f"{path}: ignoring the {scan.torn_tail.message}", stacklevel=2)
    return scan.items, scan.intact_length


@dataclass
class PredictionFile:
    """A prediction file as read: its intact records in file order, and the lines that could not be read."""

    path: Path
    entries: list[tuple[int, PredictionRecord]]  # (line number or item index, record)
    damaged: list[DamagedLine] = field(default_factory=list)
    torn_tail: DamagedLine | None = None
    intact_length: int = 0

    def latest(self) -> list[PredictionRecord]:
        """One record per sample (see `latest_per_sample`)."""
        return latest_per_sample(record for _, record in self.entries)

    @property
    def damaged_numbers(self) -> list[int]:
        """Line numbers (item indices) of everything skipped, the torn last line included."""
        return [item.number for item in self._problems()]

    def _problems(self) -> list[DamagedLine]:
        return self.damaged + ([self.torn_tail] if self.torn_tail is not None else [])

    def damage_report(self) -> str | None:
        """One line naming what was skipped, or None when everything was read."""
        problems = self._problems()
        if not problems:
            return None
        shown = "; ".join(str(problem) for problem in problems[:_SHOWN_DAMAGE])
        more = f"; and {len(problems) - _SHOWN_DAMAGE} more" if len(problems) > _SHOWN_DAMAGE else ""
        unit = "line" if self.path.suffix != ".json" else "item"
        unit += "s" if len(problems) > 1 else ""
        return f"{self.path}: skipped {len(problems)} unreadable {unit} (every other record is kept): {shown}{more}"


def read_prediction_file(path: str | os.PathLike) -> PredictionFile:
    """Read a JSON Lines prediction file (or a JSON list export), skipping what cannot be read.

    A line that is not valid JSON or not a valid record is skipped and listed in `damaged` with its line
    number; an invalid last line (a write cut short) is `torn_tail`. A JSON list that does not parse as a whole
    is an error: nothing of it can be trusted.
    """
    path = Path(path)
    if not path.is_file():
        raise PredictionRecordError(f"{path}: no such prediction file")
    if path.suffix == ".json":
        return _read_json_list(path)
    scan = scan_json_lines(path)
    entries, damaged = [], list(scan.damaged)
    for number, data in scan.items:
        try:
            entries.append((number, PredictionRecord.from_dict(data, where=f"line {number}")))
        except PredictionRecordError as error:
            damaged.append(DamagedLine(number, str(error)))
    damaged.sort(key=lambda item: item.number)
    return PredictionFile(path, entries, damaged, scan.torn_tail, scan.intact_length)


def _read_json_list(path: Path) -> PredictionFile:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise PredictionRecordError(f"{path}: invalid JSON ({error})") from error
    if not isinstance(data, list):
        raise PredictionRecordError(f"{path}: expected a JSON list of prediction records")
    entries, damaged = [], []
    for index, item in enumerate(data):
        try:
            entries.append((index, PredictionRecord.from_dict(item, where=f"item {index}")))
        except PredictionRecordError as error:
            damaged.append(DamagedLine(index, str(error)))
    return PredictionFile(path, entries, damaged)


def _identity(record: PredictionRecord) -> tuple[Any, ...]:
    # The id joins the key so that a hand-made file listing one video and prompt twice keeps both records.
    return (*record.key, record.id)


def latest_per_sample(records: Iterable[PredictionRecord]) -> list[PredictionRecord]:
    """One record per sample (same key and id), the last one written winning, in order of first appearance."""
    by_sample: dict[tuple[Any, ...], PredictionRecord] = {}
    for record in records:
        by_sample[_identity(record)] = record
    return list(by_sample.values())


def read_records(path: str | os.PathLike) -> list[PredictionRecord]:
    """Prediction records of a JSON Lines file or a JSON list, one per sample; unreadable lines are skipped
    with a warning naming them."""
    predictions = read_prediction_file(path)
    report = predictions.damage_report()
    if report:
        warnings.warn(report, stacklevel=2)
    return predictions.latest()


def rewrite_records(records: Iterable[PredictionRecord], path: str | os.PathLike) -> Path:
    """Replace a JSON Lines file by exactly these records, atomically (a reader sees the old or the new)."""
    path = Path(path)
    with atomic_write(path) as file:
        for record in records:
            file.write(_json_line(record))
    return path


def _json_line(record: PredictionRecord) -> str:
    return json.dumps(record.to_dict(), ensure_ascii=False, default=_json_default) + "\n"


class PredictionWriter:
    """Appends prediction records to a JSON Lines file, one durable line per finished sample.

    With `resume=True` an existing file is kept (a torn last line from a killed run is cut off first, so
    the next record starts on a clean line; other unreadable lines are skipped with a warning) and
    `finished_keys()` tells the caller which samples to skip. With `resume=False` the file is started over.
    `compact()` rewrites the file with one record per sample once a run has replaced some.
    """

    def __init__(self, path: str | os.PathLike, resume: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._records: dict[tuple[Any, ...], PredictionRecord] = {}
        self.replaced = 0  # records superseded by a later one for the same sample
        self.damaged = 0  # unreadable lines found on opening
        if resume and self.path.exists():
            existing = read_prediction_file(self.path)
            report = existing.damage_report()
            if report:
                warnings.warn(report, stacklevel=2)
            self.damaged = len(existing.damaged)
            if existing.torn_tail is not None:
                with open(self.path, "r+b") as file:
                    file.truncate(existing.intact_length)
            for _, record in existing.entries:
                self._remember(record)
        self._open("a" if resume else "w")

    def _open(self, mode: str) -> None:
        self._file = open(self.path, mode, encoding="utf-8")  # noqa: SIM115 (closed in close())
        if mode == "a" and self._file.tell() > 0:
            # An intact file normally ends with a newline; make sure the next record starts a line.
            with open(self.path, "rb") as check:
                check.seek(-1, os.SEEK_END)
                if check.read(1) != b"\n":
                    self._file.write("\n")

    def _remember(self, record: PredictionRecord) -> None:
        identity = _identity(record)
        if identity in self._records:
            self.replaced += 1
        self._records[identity] = record

    def finished_ids(self, include_errors: bool = True) -> set[Any]:
        """Ids already in the file; with `include_errors=False`, failed samples count as not done."""
        return {record.id for record in self._records.values() if include_errors or not record.is_error}

    def finished_keys(self, include_errors: bool = True) -> set[tuple[Any, ...]]:
        """Sample keys already in the file; with `include_errors=False`, failed samples count as not done."""
        return {record.key for record in self._records.values() if include_errors or not record.is_error}

    def append(self, record: PredictionRecord | Mapping[str, Any]) -> PredictionRecord:
        if not isinstance(record, PredictionRecord):
            record = PredictionRecord.from_dict(record)
        self._file.write(_json_line(record))
        self._file.flush()
        os.fsync(self._file.fileno())
        self._remember(record)
        return record

    def records(self) -> list[PredictionRecord]:
        """One record per sample, in order of first appearance in the file."""
        return list(self._records.values())

    @property
    def needs_compaction(self) -> bool:
        """True when the file holds replaced records or unreadable lines."""
        return bool(self.replaced or self.damaged)

    def compact(self) -> None:
        """Rewrite the file (atomically) with one record per sample and nothing unreadable."""
        reopen = not self._file.closed
        self.close()
        rewrite_records(self.records(), self.path)
        self.replaced = self.damaged = 0
        if reopen:
            self._open("a")

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
    """Write the records as one JSON list (the end-of-run export), atomically."""
    path = Path(path)
    data = [record.to_dict() for record in records]
    with atomic_write(path) as file:
        file.write(json.dumps(data, ensure_ascii=False, indent=2, default=_json_default) + "\n")
    return path


def has_labels(records: Iterable[PredictionRecord]) -> bool:
    return any(record.ground_truth is not None for record in records)


def csv_cell(value: Any) -> Any:
    """A CSV value a spreadsheet shows as the text it is: text that would start a formula gets a leading `'`."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def export_csv(records: Iterable[PredictionRecord], path: str | os.PathLike) -> Path:
    """Write the records as CSV, atomically: every column when they carry labels, else `video_name,
    model_output`. Text that a spreadsheet would run as a formula is escaped (`csv_cell`)."""
    records = list(records)
    path = Path(path)
    with atomic_write(path, newline="") as file:
        writer = csv.writer(file)
        if has_labels(records):
            rows = [record.to_dict() for record in records]
            columns = list(dict.fromkeys(key for row in rows for key in row))
            writer.writerow([csv_cell(column) for column in columns])
            for row in rows:
                writer.writerow(
                    ["" if row.get(column) is None else csv_cell(row[column]) for column in columns]
                )
        else:
            writer.writerow(UNLABELED_CSV_COLUMNS)
            for record in records:
                video_name = Path(record.video_path).name if record.video_path else str(record.id)
                writer.writerow([csv_cell(video_name), csv_cell(record.prediction)])
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

    Videos per second is the generated videos over the time their batches took (each record's
    `batch_time_share` summed, so a batch counts once), the same figure for `infer-batch` and for `eval` of
    its file; records without shares (older files) fall back to the sum of their generation times.
    `wall_time_s`, when given, adds the end-to-end rate (every record over the run's wall time: decoding,
    preprocessing and failed samples included).
    """
    records = list(records)
    successful = [record for record in records if not record.is_error]
    tokens_per_second = [r.tokens_per_second for r in successful if _finite(r.tokens_per_second)]
    first_token = [r.time_to_first_token for r in successful if _finite(r.time_to_first_token)]
    generation_times = [r.generation_time for r in successful if _finite(r.generation_time)]
    generated_tokens = [r.generated_tokens for r in successful if _finite(r.generated_tokens)]
    shares = [r.batch_time_share for r in successful if _finite(r.batch_time_share)]
    if shares and sum(shares) > 0:
        videos_per_second, basis = len(shares) / sum(shares), "batch_time"
    elif generation_times and sum(generation_times) > 0:
        videos_per_second, basis = len(generation_times) / sum(generation_times), "sum_generation_time"
    else:
        videos_per_second, basis = None, None
    stats = {
        "records": len(records),
        "successful": len(successful),
        "generated_tokens_total": int(sum(generated_tokens)),
        "tokens_per_second": _summary(tokens_per_second),
        "time_to_first_token_s": _summary(first_token),
        "generation_time_s": _summary(generation_times),
        "videos_per_second": videos_per_second,
        "videos_per_second_basis": basis,
    }
    if wall_time_s is not None and wall_time_s > 0:
        stats["end_to_end_videos_per_second"] = len(records) / wall_time_s
    return stats


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
    if stats.get("end_to_end_videos_per_second") is not None:
        lines.append(f"videos/s end to end (decoding included): {stats['end_to_end_videos_per_second']:.3f}")
    return "\n".join(lines)
