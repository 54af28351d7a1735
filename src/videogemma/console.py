"""What the commands print besides their results: warnings as one plain line each."""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def plain_warnings(program: str) -> Iterator[None]:
    """Show warnings as one `PROGRAM: warning: message` line on stderr (not Python's file:line form)."""

    def show(message: Warning | str, *_: Any, **__: Any) -> None:
        print(f"{program}: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield
