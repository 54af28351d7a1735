"""Where `infer-batch` writes, and the rules that keep earlier results safe.

    output = PredictionOutput.claim("preds.jsonl", samples, resume=True)   # before the model loads
    with output:
        writer = output.begin()        # the JSON Lines file, ready to append
        ...
        output.finish(writer, samples)  # one record per sample, then the exports

Naming: the incremental file is always `<stem>.jsonl`; its exports are `<stem>.json`, `<stem>.csv` and
`<stem>_throughput.json` beside it, so an `--out` that does not end in `.jsonl` is refused (with
`--out preds.json` the export would overwrite the file it is made from).

Safety: a claim holds an exclusive lock (`<stem>.jsonl.lock`, holding the owner's pid) until released, so a
second run on the same file stops at once, naming the first. Without `resume` a file that already holds
predictions (or an export that would be replaced) is refused unless `overwrite`. With `resume` each existing
record is matched to a sample by its key (video path, prompt, occurrence), never by position: records of
samples that the input does not hold are refused (the file belongs to another split), records whose
sample moved are renumbered, and unreadable lines are reported, dropped and their samples run again.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from videogemma.errors import VideoGemmaDataError
from videogemma.inference.records import (
    PredictionRecord,
    PredictionWriter,
    export_csv,
    export_json,
    read_prediction_file,
    rewrite_records,
)

JSONL_SUFFIX = ".jsonl"
LOCK_SUFFIX = ".lock"
THROUGHPUT_SUFFIX = "_throughput.json"
# Records named one by one when a file is refused for holding another split's samples.
_SHOWN_FOREIGN = 3


class PredictionOutputError(VideoGemmaDataError):
    """An `--out` that cannot be used as asked (it would replace results, collide with an input or another
    output, or is in use); the message names the file and what to do."""


class PredictionFileBusyError(PredictionOutputError):
    """Another process holds the prediction file's lock."""

    def __init__(self, path: Path, pid: str | None) -> None:
        self.path = path
        self.pid = pid
        owner = f"pid {pid}" if pid else "a process whose pid could not be read"
        super().__init__(
            f"{path} is being written by another infer-batch run ({owner}); wait for it to finish or "
            "choose another --out"
        )


@dataclass(frozen=True)
class PredictionPaths:
    """The files of one prediction output: the incremental JSON Lines file and what is derived from it."""

    jsonl: Path

    @classmethod
    def for_out(cls, out: str | os.PathLike) -> PredictionPaths:
        out = Path(out)
        if out.suffix != JSONL_SUFFIX:
            suggestion = (
                out.with_suffix(JSONL_SUFFIX) if out.suffix else out.with_name(out.name + JSONL_SUFFIX)
            )
            raise PredictionOutputError(
                f"--out {out}: the prediction file must end in {JSONL_SUFFIX} (it is written record by record; "
                f"its JSON and CSV exports get the same name with .json and .csv); use --out {suggestion}"
            )
        return cls(out)

    @property
    def json(self) -> Path:
        return self.jsonl.with_suffix(".json")

    @property
    def csv(self) -> Path:
        return self.jsonl.with_suffix(".csv")

    @property
    def throughput(self) -> Path:
        return self.jsonl.with_name(self.jsonl.stem + THROUGHPUT_SUFFIX)

    @property
    def lock(self) -> Path:
        return self.jsonl.with_name(self.jsonl.name + LOCK_SUFFIX)

    @property
    def exports(self) -> tuple[Path, ...]:
        return (self.json, self.csv, self.throughput)

    def check_not_input(self, data: str | os.PathLike | None) -> None:
        """Refuse outputs that would overwrite the input split (`--data x.json --out x.jsonl`)."""
        if data is None or not Path(data).exists():
            return
        for path in (self.jsonl, *self.exports, self.lock):
            if path.exists() and os.path.samefile(path, data):
                role = "itself" if path == self.jsonl else f"its output {path.name}"
                raise PredictionOutputError(
                    f"--out {self.jsonl}: {role} would overwrite the input {data}; choose another --out"
                )


class PredictionFileLock:
    """An exclusive `flock` on a lock file that holds the owner's pid; released (and removed) by `release`.

    The lock dies with its process, so a killed run never leaves the file locked.
    """

    def __init__(self, path: Path, target: Path) -> None:
        self.path = path
        self.target = target  # the file the lock protects, for the message
        self._descriptor: int | None = None

    def acquire(self) -> None:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                owner = os.pread(descriptor, 64, 0).decode("ascii", "replace").strip() or None
                os.close(descriptor)
                if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise PredictionFileBusyError(self.target, owner) from None
                raise
            # The previous owner removes the file on release: if ours is no longer the one at the path,
            # a third run could lock the new one; start again on that.
            try:
                same = os.stat(self.path).st_ino == os.fstat(descriptor).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(descriptor)
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode("ascii"), 0)
        self._descriptor = descriptor

    def release(self) -> None:
        if self._descriptor is None:
            return
        # Remove the file while still holding the lock, so no one locks a file that is about to vanish.
        self.path.unlink(missing_ok=True)
        os.close(self._descriptor)
        self._descriptor = None


@dataclass
class PredictionOutput:
    """A prediction output claimed for one run (locked and checked); see the module docstring."""

    paths: PredictionPaths
    lock: PredictionFileLock
    resume: bool
    retry_errors: bool
    done: set[tuple[Any, ...]] = field(default_factory=set)  # sample keys this run skips
    kept: list[PredictionRecord] | None = None  # on resume, the records to rewrite the file with first
    notes: list[str] = field(default_factory=list)  # what the claim found, for the user

    @classmethod
    def claim(
        cls,
        out: str | os.PathLike,
        samples: Sequence[Any],
        *,
        resume: bool = False,
        overwrite: bool = False,
        retry_errors: bool = False,
        data: str | os.PathLike | None = None,
    ) -> PredictionOutput:
        """Lock `out` and check it against `samples` (objects with `id` and `key`); raises
        `PredictionOutputError` (nothing touched but the lock file) when it cannot be used as asked."""
        if resume and overwrite:
            raise PredictionOutputError(
                "--resume keeps the prediction file and --overwrite replaces it: pick one"
            )
        if retry_errors and not resume:
            raise PredictionOutputError(
                "--retry-errors redoes the failed samples of a run: it needs --resume"
            )
        paths = PredictionPaths.for_out(out)
        paths.check_not_input(data)
        lock = PredictionFileLock(paths.lock, paths.jsonl)
        lock.acquire()
        output = cls(paths, lock, resume=resume, retry_errors=retry_errors)
        try:
            if resume and _holds_data(paths.jsonl):
                output._match_existing(samples, data)
            elif not overwrite:
                output._refuse_replacing()
        except BaseException:
            lock.release()
            raise
        return output

    def _refuse_replacing(self) -> None:
        for path in (self.paths.jsonl, *self.paths.exports):
            if _holds_data(path):
                what = (
                    "holds predictions" if path == self.paths.jsonl else "exists (an earlier run's export?)"
                )
                hint = "--resume to finish it, " if path == self.paths.jsonl else ""
                raise PredictionOutputError(
                    f"{path} {what}; pass {hint}--overwrite to replace it, or choose another --out"
                )

    def _match_existing(self, samples: Sequence[Any], data: str | os.PathLike | None) -> None:
        existing = read_prediction_file(self.paths.jsonl)
        report = existing.damage_report()
        if report:
            self.notes.append(f"{report}; their samples run again")
        by_key = {sample.key: sample for sample in samples}
        foreign = [(line, record) for line, record in existing.entries if record.key not in by_key]
        if foreign:
            raise PredictionOutputError(
                _foreign_message(self.paths.jsonl, foreign, len(existing.entries), data)
            )
        latest = existing.latest()
        renumbered = [record for record in latest if record.id != by_key[record.key].id]
        for record in renumbered:
            record.id = by_key[record.key].id
        if renumbered:
            self.notes.append(
                f"{self.paths.jsonl}: {len(renumbered)} records match their samples by video and prompt at new "
                "positions and are renumbered"
            )
        if renumbered or existing.damaged or len(latest) < len(existing.entries):
            self.kept = latest
        self.done = {record.key for record in latest if not (self.retry_errors and record.is_error)}

    def begin(self) -> PredictionWriter:
        """The writer this run appends to: the kept file (renumbered and cleaned first if needed) on resume,
        else a new file. Call it once the model has loaded: until then nothing but the lock is written."""
        if self.kept is not None:
            rewrite_records(self.kept, self.paths.jsonl)
        return PredictionWriter(self.paths.jsonl, resume=self.resume)

    def finish(self, writer: PredictionWriter, samples: Sequence[Any]) -> list[PredictionRecord]:
        """Close the writer, leave one record per sample in the JSON Lines file and write the exports (in the
        order of `samples`, atomically); returns the records."""
        if writer.needs_compaction:
            writer.compact()
        writer.close()
        order = {sample.key: position for position, sample in enumerate(samples)}
        records = sorted(writer.records(), key=lambda record: order.get(record.key, len(order)))
        export_json(records, self.paths.json)
        export_csv(records, self.paths.csv)
        return records

    def release(self) -> None:
        self.lock.release()

    def __enter__(self) -> PredictionOutput:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _holds_data(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:
        return False


def _foreign_message(
    path: Path, foreign: list[tuple[int, PredictionRecord]], total: int, data: str | os.PathLike | None
) -> str:
    shown = "; ".join(
        f"line {line}: video {record.video_path!r}, prompt {_short(record.prompt)}"
        if record.video_path is not None
        else f"line {line}: id {record.id!r}"
        for line, record in foreign[:_SHOWN_FOREIGN]
    )
    source = data if data is not None else "the samples of this run"
    return (
        f"{path}: {len(foreign)} of its {total} records answer samples that {source} does not hold ({shown}); "
        "it was written for another split or prompt: choose another --out, or pass --overwrite to start it over"
    )


def _short(text: str | None, limit: int = 40) -> str:
    if text is None:
        return "none"
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")
