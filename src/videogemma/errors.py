"""The errors bad input raises: each names the file or record at fault and says what is wrong with it.

All derive from `VideoGemmaDataError` (a `ValueError`), so a caller can catch every data problem in
one place, and a dataset's "skip" policy knows which failures are the sample's fault (skip it) and
which are the program's (let them propagate).
"""

from __future__ import annotations

from os import PathLike
from typing import Any


class VideoGemmaError(ValueError):
    """Base class of the errors the package raises for bad input: data, configs, models, arguments. The command
    line reports each as one line (exit status 2); its message names the file or record and what is wrong."""


class VideoGemmaDataError(VideoGemmaError):
    """Base class of every error caused by bad input data (a file, a record, a prompt)."""


class VideoDecodeError(VideoGemmaDataError):
    """A video file that cannot be read: missing, empty, corrupt, without a video stream or frames."""

    def __init__(self, path: str | PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot decode video {self.path}: {reason}")


class RecordError(VideoGemmaDataError):
    """A malformed record of a dataset file (bad JSON, missing field, wrong type).

    `record` is the record's index in the file (an int, shown as "record 3") or a ready label such as
    "line 12" or "record 3 (squats/00000340.mp4)"; None for a problem with the file as a whole.
    """

    def __init__(self, source_file: str | PathLike[str], record: int | str | None, reason: str) -> None:
        self.source_file = str(source_file)
        self.record = record
        self.reason = reason
        if record is None:
            where = self.source_file
        elif isinstance(record, int):
            where = f"{self.source_file}, record {record}"
        else:
            where = f"{self.source_file}, {record}"
        super().__init__(f"{where}: {reason}")


class PathOutsideRootError(RecordError):
    """A record whose media path escapes the dataset root: an absolute path elsewhere, `..`, or a symlink
    (of the file or of a folder on its way) that points outside. Nothing is read, written or deleted there.

    `resolved` is where the path really leads (symlinks followed), when that differs from what was written.
    """

    def __init__(
        self,
        source_file: str | PathLike[str],
        record: int | str | None,
        path: str | PathLike[str],
        root: str | PathLike[str],
        resolved: str | PathLike[str] | None = None,
    ) -> None:
        self.path = str(path)
        self.root = str(root)
        self.resolved = None if resolved is None else str(resolved)
        leads = f" (it leads to {self.resolved})" if self.resolved and self.resolved != self.path else ""
        super().__init__(
            source_file,
            record,
            f"video path {self.path!r} lies outside the dataset root {self.root}{leads}; "
            "only files under the root are used",
        )


class VideoLimitError(VideoDecodeError):
    """A video beyond a configured bound (file size, frame size, duration, frame count): refused before it
    is decoded into memory. The message names the limit and the `VideoLimits` field that sets it."""


class PromptTooLongError(VideoGemmaDataError):
    """A sample whose prompt (visual block included) cannot fit in the sequence limit."""

    def __init__(self, record: Any, length: int, limit: int) -> None:
        self.record = record
        self.length = length
        self.limit = limit
        super().__init__(
            f"sample {record}: prompt is {length} tokens (visual block included) but the limit is {limit}; "
            "shorten the text or raise max_sequence_length"
        )


class ModelLoadError(VideoGemmaError):
    """A model source that cannot be loaded: the message names the path (or preset) and what is missing."""
