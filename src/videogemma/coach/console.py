"""The live console view: each feedback said, one line on stdout; a status line on stderr.

    [  12.4s] squats            knees caving in; push the knees out over the toes

    t 12.0s | squats | knees caving in; push the knee… | 4.1 win/s | 4.3× real time | behind 0.0s | skipped 0

On a terminal the status line is rewritten in place after every window; otherwise (a log file, a pipe) it is
printed every `every` windows, so logs stay short.
"""

from __future__ import annotations

import sys
from typing import TextIO

from videogemma.coach.policy import is_silence
from videogemma.coach.session import SessionStats, WindowResult, exercise_of
from videogemma.constants import EXERCISE_SEPARATOR

_FEEDBACK_WIDTH = 40


def split_answer(text: str) -> tuple[str, str]:
    """(exercise, feedback) of an answer `<exercise> - <feedback>`; ("", text) when it names none."""
    exercise = exercise_of(text)
    return (exercise, text.split(EXERCISE_SEPARATOR, 1)[1].strip()) if exercise else ("", text.strip())


def status_line(result: WindowResult, stats: SessionStats) -> str:
    exercise, feedback = split_answer(result.text)
    if is_silence(result.text):
        feedback = "(nothing new)"
    if len(feedback) > _FEEDBACK_WIDTH:
        feedback = feedback[: _FEEDBACK_WIDTH - 1] + "…"
    return (
        f"t {result.window.end:6.1f}s | {exercise or '-'} | {feedback} | {stats.windows_per_second:.1f} win/s | "
        f"{stats.realtime_factor:.1f}× real time | behind {stats.behind_s:.1f}s | skipped {stats.windows_skipped}"
    )


class Console:
    def __init__(self, out: TextIO | None = None, status: TextIO | None = None, every: int = 10) -> None:
        self.out = out or sys.stdout
        self.status = status or sys.stderr
        self.live = bool(getattr(self.status, "isatty", lambda: False)())
        self.every = every
        self._width = 0

    def window(self, result: WindowResult, stats: SessionStats) -> None:
        if result.emitted:
            exercise, feedback = split_answer(result.text)
            self._clear()
            print(f"[{result.time:7.1f}s] {exercise:<18} {feedback}", file=self.out, flush=True)
        line = status_line(result, stats)
        if self.live:
            self._clear()
            self.status.write(line)
            self.status.flush()
            self._width = len(line)
        elif stats.windows_run % self.every == 0:
            print(line, file=self.status, flush=True)

    def _clear(self) -> None:
        if self.live and self._width:
            self.status.write("\r" + " " * self._width + "\r")
            self._width = 0

    def finish(self, stats: SessionStats, log_path: str | None) -> None:
        self._clear()
        ended = "interrupted (Ctrl-C)" if stats.interrupted else "error" if stats.error else "finished"
        lines = [
            f"coach {ended}: {stats.windows_run} windows over {stats.source_seconds:.1f} s of video in "
            f"{stats.wall_seconds:.1f} s ({stats.windows_per_second:.2f} windows/s, {stats.realtime_factor:.1f}× "
            f"real time), {stats.windows_skipped} skipped for falling behind real time "
            f"(at most {stats.max_behind_s:.1f} s behind)",
            f"{stats.emitted} feedbacks said" + (f", written to {log_path}" if log_path else ""),
            f"CLIP frame encodings: {stats.frames_encoded} run, {stats.frames_reused} reused from earlier windows",
        ]
        print("\n".join(lines), file=self.status, flush=True)
