"""Timing of generation: when the first token came and how fast the rest followed.

`GenerationTimer` is a transformers streamer: `generate` hands it the prompt once, then every new token (or
batch of tokens, one per row) as soon as it exists, so the time of its second call is the time to the
first token (video encoding and prefill included) and the calls after it time the decode steps.
"""

from __future__ import annotations

import time
from typing import Any

from transformers.generation.streamers import BaseStreamer


class GenerationTimer(BaseStreamer):
    """Records the wall-clock time of every step of one `generate` call (prompt first, then each token)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.step_times: list[float] = []
        self.end_time: float | None = None

    def put(self, value: Any) -> None:
        self.step_times.append(time.perf_counter())

    def end(self) -> None:
        self.end_time = time.perf_counter()

    @property
    def time_to_first_token(self) -> float | None:
        """Seconds from the timer's creation to the first generated token (`None` if none came)."""
        # step_times[0] is the prompt, pushed before any computation.
        return self.step_times[1] - self.start if len(self.step_times) > 1 else None
