"""Writing files so that a reader never sees half of one: write a temporary file beside the target,
flush it to disk, then rename it over the target (a rename within one folder is atomic on POSIX).

    with atomic_write(path) as file:          # text (or mode="wb")
        file.write(text)
    with atomic_path(path) as temporary:      # for writers that take a file name (openpyxl, matplotlib)
        workbook.save(temporary)

A failure or a kill before the rename leaves the old file as it was (and at most a `.<name>.*.tmp` file).
Every tool that writes a result, a dataset file or a report writes it this way.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path`; once the block ends without error, it replaces `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The suffix is kept so that writers choosing a format by extension (openpyxl, matplotlib) still do.
    descriptor, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(descriptor)
    temporary = Path(name)
    try:
        yield temporary
        _fsync(temporary)
        os.chmod(temporary, _mode_for(path))  # mkstemp makes it private; a result file is not
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8", newline: str | None = None
) -> Iterator[IO[Any]]:
    """An open temporary file that replaces `path` when the block ends without error."""
    if "b" in mode:
        encoding = None
    with atomic_path(path) as temporary, open(temporary, mode, encoding=encoding, newline=newline) as file:
        yield file


def _fsync(path: Path) -> None:
    with open(path, "rb") as file:
        os.fsync(file.fileno())


def fsync_folder(folder: Path) -> None:
    # The rename itself is durable only once the folder is synced; some filesystems refuse that (ignore).
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _mode_for(path: Path) -> int:
    """The permissions of the file being replaced, or rw-r--r-- for a new one (reading the umask would
    change it for a moment, for every thread)."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o644
