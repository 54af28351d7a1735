"""Conversation records (DATA.md): a JSON list or JSON Lines file of `{"video", "conversations"}` records,
each checked against the schema, its video resolved under the dataset root.

    records = load_conversation_records("qved_train.json")  # schema-checked; RecordError otherwise
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from videogemma.datasets.paths import resolve_in_root
from videogemma.errors import RecordError
from videogemma.processing.chat_template import ConversationError, Turn, normalize_conversation


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
