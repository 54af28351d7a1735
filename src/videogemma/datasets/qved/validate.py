"""Check conversation split files before training on them: every record, every video, every problem.

Validation applies what `train` and `infer` apply, with their own code, so that a file it passes they
accept. For each record of each file: the schema (parsed by the training loader's own
`dataset.load_conversation_records`, plus: there is an answer turn), the conversation as the processor's
chat template renders it for training (a `<video>` tag out of place or twice, a prompt or sequence longer
than the context: `processor.encode_conversation`, as `ConversationDataset` calls it), that its video
path stays inside the dataset root once symlinks are followed, that it is not a duplicate (same video and
prompt as an earlier record: one would shadow the other in keyed predictions), that the file exists, is not
empty, is a self-contained video within the processor's `VideoLimits`, decodes from start to end, and has
enough frames and duration for the model's sampler. A split file without records is a problem too.
Nothing stops at the first problem: the report lists each one with its file, record index and video, and
`ok` is False if there was any.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from videogemma.datasets.qved.io import write_json
from videogemma.datasets.qved.prepare import SPLIT_FILE_NAMES
from videogemma.datasets.records import ConversationRecord, load_conversation_records, resolve_video_path
from videogemma.errors import (
    PromptTooLongError,
    RecordError,
    VideoDecodeError,
    VideoGemmaDataError,
)
from videogemma.processing.chat_template import ConversationError, SequenceTooLongError
from videogemma.processing.video_source import DEFAULT_LIMITS, VideoLimits

# The chat template's refusals, by the problem kind a report gives them (other data errors: bad_conversation).
_TEMPLATE_PROBLEMS = ((PromptTooLongError, "prompt_too_long"), (SequenceTooLongError, "sequence_too_long"))


@dataclass
class Problem:
    file: str
    record: int | None  # index in the file (0-based), or the line number - 1 for JSON Lines
    video: str | None
    kind: str  # bad_json | bad_schema | path_outside_root | missing_file | empty_file | undecodable | ...
    message: str

    def __str__(self) -> str:
        where = self.file if self.record is None else f"{self.file}, record {self.record}"
        video = f" ({self.video})" if self.video else ""
        return f"{where}{video}: {self.kind}: {self.message}"


@dataclass
class VideoCheck:
    """What was learned about one video file (probed once, shared by every record naming it)."""

    problems: list[tuple[str, str]] = field(default_factory=list)  # (kind, message)
    num_frames: int | None = None
    duration: float | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None


@dataclass
class FileReport:
    file: str
    records: int = 0
    ok_records: int = 0
    problems: list[Problem] = field(default_factory=list)


@dataclass
class ValidationReport:
    files: list[FileReport]
    videos: dict[str, VideoCheck]

    @property
    def problems(self) -> list[Problem]:
        return [p for f in self.files for p in f.problems]

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "files": [
                {
                    "file": f.file,
                    "records": f.records,
                    "ok_records": f.ok_records,
                    "problems_by_kind": dict(sorted(Counter(p.kind for p in f.problems).items())),
                    "problems": [p.__dict__ for p in f.problems],
                }
                for f in self.files
            ],
            "videos": {path: check.__dict__ for path, check in sorted(self.videos.items())},
        }

    def write(self, path: str | os.PathLike[str]) -> None:
        write_json(path, self.as_dict())


def split_files_in(paths: list[str | os.PathLike[str]]) -> tuple[list[Path], list[Problem]]:
    """Files to check: files as given, directories expanded to the six split files (absent ones reported)."""
    files, problems = [], []
    for path in map(Path, paths):
        if path.is_dir():
            for name in SPLIT_FILE_NAMES:
                if (path / name).is_file():
                    files.append(path / name)
                else:
                    problems.append(
                        Problem(str(path / name), None, None, "missing_file", "split file not found")
                    )
        else:
            files.append(path)
    return files, problems


def _record_index(error: RecordError) -> int | None:
    """The 0-based record index of a `RecordError` ("record 3 (line 4)" → 3)."""
    if isinstance(error.record, int):
        return error.record
    match = re.match(r"record (\d+)", str(error.record or ""))
    return int(match.group(1)) if match else None


def check_video(
    path: Path, min_frames: int, min_duration: float, limits: VideoLimits = DEFAULT_LIMITS
) -> VideoCheck:
    """Probe a video (decoding every frame) and list what makes it unusable."""
    from videogemma.processing.video import probe_video

    check = VideoCheck()
    if not path.exists():
        check.problems.append(("missing_video", f"{path} does not exist"))
        return check
    if path.is_file() and path.stat().st_size == 0:
        check.problems.append(("empty_video", f"{path} is empty (0 bytes)"))
        return check
    try:
        info = probe_video(path, count_frames=True, limits=limits)
    except VideoDecodeError as error:
        check.problems.append(("undecodable", error.reason))
        return check
    except Exception as error:  # a decoder crash on a broken file is still that file's problem
        check.problems.append(("undecodable", f"{type(error).__name__}: {error}"))
        return check
    check.num_frames, check.duration = info.num_frames, info.duration
    check.width, check.height, check.fps = info.width, info.height, info.fps
    if info.num_frames is None or info.num_frames < min_frames:
        check.problems.append(("too_few_frames", f"{info.num_frames} frames, need at least {min_frames}"))
    if info.duration is None or info.duration < min_duration or info.duration <= 0:
        check.problems.append(("too_short", f"duration {info.duration} s, need more than {min_duration} s"))
    return check


def _template_problem(processor: Any, record: ConversationRecord) -> tuple[str, str] | None:
    """(kind, message) when the chat template refuses the record as training renders it, else None."""
    try:
        processor.encode_conversation(list(record.turns), record=record.index)
    except VideoGemmaDataError as error:
        kind = next((k for cls, k in _TEMPLATE_PROBLEMS if isinstance(error, cls)), "bad_conversation")
        message = error.reason if isinstance(error, ConversationError) else str(error)
        return kind, message
    return None


def _prompt(record: ConversationRecord) -> str | None:
    return next((turn.text for turn in record.turns if turn.role == "user"), None)


def _check_records(
    path: Path,
    report: FileReport,
    records: list[ConversationRecord],
    dataset_root: Path,
    processor: Any,
    pending: list[tuple[FileReport, int, str, Path]],
) -> None:
    """The per-record checks that need no decoding; records whose video still needs checking go to `pending`."""
    first_of: dict[tuple[Path, str | None], int] = {}  # (video, prompt) → first record with them
    for record in records:
        if not any(turn.role == "model" for turn in record.turns):
            message = "no answer turn (from gpt/assistant): nothing to train or score on"
            report.problems.append(Problem(str(path), record.index, record.video, "bad_schema", message))
        template_problem = _template_problem(processor, record)
        if template_problem is not None:
            report.problems.append(Problem(str(path), record.index, record.video, *template_problem))
        try:
            resolved = resolve_video_path(record.video, dataset_root, source_file=path, record=record.index)
        except RecordError as error:  # outside the root (symlinks followed), or not a usable path
            kind = "path_outside_root"
            report.problems.append(Problem(str(path), record.index, record.video, kind, error.reason))
            continue
        key = (resolved, _prompt(record))
        if key in first_of:
            message = f"same video and prompt as record {first_of[key]}"
            report.problems.append(
                Problem(str(path), record.index, record.video, "duplicate_record", message)
            )
        first_of.setdefault(key, record.index)
        pending.append((report, record.index, record.video, resolved))


def validate_split_files(
    paths: list[str | os.PathLike[str]],
    root: str | os.PathLike[str] | None = None,
    min_frames: int | None = None,
    min_duration: float = 0.0,
    progress: bool = True,
    processor: Any = None,
) -> ValidationReport:
    """Check every record of the given split files (or directories holding the six) against `root`
    (default: each file's own folder, where `prepare` writes them).

    `processor` (default: the `tiny` preset's) supplies the chat template, the context length and the
    `VideoLimits` checked; `min_frames` defaults to the frames it reads. A `root` that is not a folder is
    an error (`VideoGemmaDataError`), as are negative thresholds (`ValueError`).
    """
    from tqdm import tqdm

    if processor is None:
        from videogemma.loading import TOKENIZER_PRESET, load_processor

        processor = load_processor(TOKENIZER_PRESET)
    min_frames = processor.num_frames if min_frames is None else min_frames
    if isinstance(min_frames, bool) or not isinstance(min_frames, int) or min_frames < 1:
        raise ValueError(f"min_frames must be a positive whole number, got {min_frames!r}")
    if not min_duration >= 0:
        raise ValueError(f"min_duration must be ≥ 0 seconds, got {min_duration!r}")
    if root is not None and not Path(root).is_dir():
        raise VideoGemmaDataError(f"{root}: the dataset root is not a folder")
    files, missing = split_files_in(paths)
    reports: list[FileReport] = []
    if missing:
        reports.append(FileReport("(split files)", problems=missing))
    pending: list[tuple[FileReport, int, str, Path]] = []  # records whose video still needs checking
    for path in files:
        report = FileReport(str(path))
        reports.append(report)
        errors: list[RecordError] = []
        try:
            # The training data loader's own parser: what it would reject, validation reports.
            records = load_conversation_records(path, errors=errors)
        except RecordError as error:
            report.problems.append(Problem(str(path), None, None, "bad_json", error.reason))
            continue
        report.records = len(records) + len(errors)
        if report.records == 0:
            message = "the split has no records: training and inference refuse it"
            report.problems.append(Problem(str(path), None, None, "empty_split", message))
        for error in errors:
            report.problems.append(Problem(str(path), _record_index(error), None, "bad_schema", error.reason))
        dataset_root = Path(root) if root is not None else path.parent
        _check_records(path, report, records, dataset_root, processor, pending)

    videos: dict[str, VideoCheck] = {}
    unique = sorted({str(resolved) for _, _, _, resolved in pending})
    for video_path in tqdm(unique, desc="validate", unit="video", disable=not progress):
        videos[video_path] = check_video(Path(video_path), min_frames, min_duration, processor.video_limits)
    for report, index, video, resolved in pending:
        check = videos[str(resolved)]
        for kind, message in check.problems:
            report.problems.append(Problem(report.file, index, video, kind, message))
    for report in reports:
        report.problems.sort(key=lambda p: (-1 if p.record is None else p.record, p.kind))
        report.ok_records = report.records - len({p.record for p in report.problems if p.record is not None})
    return ValidationReport(reports, videos)
