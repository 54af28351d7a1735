"""What the commands print besides their results: warnings as one plain line each."""

from __future__ import annotations

import contextlib
import logging
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


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' progress bars (one on every weight load and save) and its log lines off while inside; the
    settings the caller had are restored after."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


# Lines other libraries log that ask nothing of the user: DeepSpeed's accelerator guess (accelerate imports it
# to unwrap a model on every save; on a CPU machine it says it fell back to the CPU).
_NOISE = {"DeepSpeed": ("Setting accelerator to CPU", "Setting ds_accelerator to")}


class _DropNoise:
    def __init__(self, starts: tuple[str, ...]) -> None:
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


def quiet_third_party_logs() -> None:
    """Drop the third-party lines in `_NOISE` (a filter on their logger, kept through their own set-up) and
    absl's INFO lines (ROUGE's tokenizer notes under a training run's INFO logging). Idempotent."""
    for name, starts in _NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(_DropNoise(starts))
    logging.getLogger("absl").setLevel(logging.WARNING)
