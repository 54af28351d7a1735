"""Confinement: every path a dataset file names must really lie under the dataset root.

"Really" means after following symlinks, of the file and of every folder on the way: the check compares
`os.path.realpath` of the path with that of the root, so `../x.mp4`, `/elsewhere/x.mp4` and a link inside
the root that points outside are all refused with `PathOutsideRootError`, naming the file and record that
gave the path, before anything opens, writes or deletes it. Absolute paths that lead under the root are fine.

    path = resolve_in_root("squats/00000340.mp4", root, source_file="qved_train.json", record=3)
    key = relative_in_root("dataset/../squats/00000340.mp4", root, source_file=manifest, record="entry ...")
"""

from __future__ import annotations

import os
from pathlib import Path

from videogemma.errors import PathOutsideRootError, RecordError

PathLike = str | os.PathLike


def real_root(root: PathLike) -> Path:
    """The dataset root with every symlink resolved (what paths are compared against)."""
    return Path(os.path.realpath(root))


def resolve_in_root(
    path: PathLike, root: PathLike, *, source_file: PathLike, record: int | str | None
) -> Path:
    """The real path of `path` (relative to `root`, or absolute), or `PathOutsideRootError` if it is not
    under the root's real path. A path that does not exist is resolved as far as it exists."""
    text = str(path)
    if not text.strip() or "\0" in text:
        raise RecordError(source_file, record, f"invalid video path {text!r}")
    base = real_root(root)
    resolved = Path(os.path.realpath(base / text))  # an absolute `path` replaces the root here
    if resolved != base and base not in resolved.parents:
        lexical = os.path.normpath(os.path.join(os.path.abspath(root), text))
        leads = resolved if lexical != str(resolved) else None  # say where a symlink leads
        raise PathOutsideRootError(source_file, record, text, root, leads)
    return resolved


def relative_in_root(
    path: PathLike, root: PathLike, *, source_file: PathLike, record: int | str | None
) -> str:
    """`path` as a POSIX path relative to `root`, once `resolve_in_root` accepts it.

    The name stays the one written (`..` collapsed), so that a link inside the root keeps its own name;
    an absolute path is made relative to the root (its real path when the lexical one does not contain it).
    """
    resolved = resolve_in_root(path, root, source_file=source_file, record=record)
    lexical_root = os.path.normpath(os.path.abspath(root))
    relative = os.path.relpath(os.path.normpath(os.path.join(lexical_root, str(path))), lexical_root)
    outside = relative == os.pardir or relative.startswith(os.pardir + os.sep)
    if outside or os.path.realpath(os.path.join(lexical_root, relative)) != str(resolved):
        # `..` after a linked folder, or an absolute path through a linked root: name the real file.
        relative = os.path.relpath(resolved, real_root(root))  # under the root: checked above
    return Path(relative).as_posix()
