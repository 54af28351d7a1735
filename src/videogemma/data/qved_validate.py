"""Check conversation split files before training on them: every record, every video, every problem.

For each record of each file: the schema (DATA.md's conversation formats), that its video path stays
inside the dataset root, that the file exists, is not empty, decodes from start to end, and has enough
frames and duration for the model's sampler. Nothing stops at the first problem: the report lists each
one with its file, record index and video, and `ok` is False if there was any.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from videogemma.data.errors import VideoDecodeError
from videogemma.data.qved_prepare import SPLIT_FILE_NAMES

ROLES = {"human", "user", "gpt", "assistant", "model", "system"}
ASSISTANT_ROLES = {"gpt", "assistant", "model"}


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
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.as_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")


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


def read_records(path: Path) -> list[Any]:
    """The records of a JSON list or JSON Lines file; raises ValueError/OSError on an unreadable file."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl" or (text.lstrip()[:1] == "{" and "\n{" in text.strip()):
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    data = json.loads(text)
    if not isinstance(data, list):
        raise ValueError(f"expected a JSON list of records, got {type(data).__name__}")
    return data


def schema_problems(record: Any) -> list[str]:
    """What is wrong with a record's shape (DATA.md: `conversations` or flat `question`/`answer`)."""
    if not isinstance(record, dict):
        return [f"a record must be an object, got {type(record).__name__}"]
    problems = []
    if not isinstance(record.get("video"), str) or not record["video"].strip():
        problems.append("missing or empty 'video' (a path relative to the dataset root)")
    if "conversations" in record:
        turns = record["conversations"]
        if not isinstance(turns, list) or not turns:
            return [*problems, "'conversations' must be a non-empty list of turns"]
        for index, turn in enumerate(turns):
            if not isinstance(turn, dict) or turn.get("from") not in ROLES:
                problems.append(f"turn {index}: 'from' must be one of {sorted(ROLES)}")
            elif not isinstance(turn.get("value"), str):
                problems.append(f"turn {index}: 'value' must be a string")
        if not any(isinstance(t, dict) and t.get("from") in ASSISTANT_ROLES for t in turns):
            problems.append("no answer turn (from gpt/assistant/model)")
    elif "question" in record or "answer" in record:
        for key in ("question", "answer"):
            if not isinstance(record.get(key), str):
                problems.append(f"'{key}' must be a string")
    else:
        problems.append("needs 'conversations' (a list of turns) or 'question' and 'answer'")
    return problems


def resolve_video(root: Path, video: str) -> Path | None:
    """The video's path under `root`, or None when the path escapes the root."""
    relative = PurePosixPath(video.replace("\\", "/"))
    if relative.is_absolute() or ".." in relative.parts:
        return None
    return root / relative


def check_video(path: Path, min_frames: int, min_duration: float) -> VideoCheck:
    """Probe a video (decoding every frame) and list what makes it unusable."""
    from videogemma.data.video import probe_video

    check = VideoCheck()
    if not path.exists():
        check.problems.append(("missing_video", f"{path} does not exist"))
        return check
    if path.is_file() and path.stat().st_size == 0:
        check.problems.append(("empty_video", f"{path} is empty (0 bytes)"))
        return check
    try:
        info = probe_video(path, count_frames=True)
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


def validate_split_files(
    paths: list[str | os.PathLike[str]],
    root: str | os.PathLike[str] | None = None,
    min_frames: int = 8,
    min_duration: float = 0.0,
    progress: bool = True,
) -> ValidationReport:
    """Check every record of the given split files (or directories holding the six) against `root`
    (default: each file's own folder, where `prepare` writes them)."""
    from tqdm import tqdm

    files, missing = split_files_in(paths)
    reports: list[FileReport] = []
    if missing:
        reports.append(FileReport("(split files)", problems=missing))
    pending: list[tuple[FileReport, int, str, Path]] = []  # records whose video still needs checking
    for path in files:
        report = FileReport(str(path))
        reports.append(report)
        try:
            records = read_records(path)
        except (OSError, ValueError) as error:
            report.problems.append(Problem(str(path), None, None, "bad_json", str(error)))
            continue
        report.records = len(records)
        dataset_root = Path(root) if root is not None else path.parent
        for index, record in enumerate(records):
            video = record.get("video") if isinstance(record, dict) else None
            video = video if isinstance(video, str) else None
            problems = schema_problems(record)
            for message in problems:
                report.problems.append(Problem(str(path), index, video, "bad_schema", message))
            if video is None or not video.strip():
                continue
            resolved = resolve_video(dataset_root, video)
            if resolved is None:
                message = f"{video!r} lies outside the dataset root {dataset_root}"
                report.problems.append(Problem(str(path), index, video, "path_outside_root", message))
                continue
            pending.append((report, index, video, resolved))

    videos: dict[str, VideoCheck] = {}
    unique = sorted({str(resolved) for _, _, _, resolved in pending})
    for video_path in tqdm(unique, desc="validate", unit="video", disable=not progress):
        videos[video_path] = check_video(Path(video_path), min_frames, min_duration)
    for report, index, video, resolved in pending:
        check = videos[str(resolved)]
        for kind, message in check.problems:
            report.problems.append(Problem(report.file, index, video, kind, message))
    for report in reports:
        report.problems.sort(key=lambda p: (-1 if p.record is None else p.record, p.kind))
        report.ok_records = report.records - len({p.record for p in report.problems if p.record is not None})
    return ValidationReport(reports, videos)
