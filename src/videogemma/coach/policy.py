"""What the coach says: every window gives an answer; an emission policy decides which are spoken.

- `ChangePolicy` (the default, `--policy change`): an answer is said when it differs from the last one said
  (the exercise or the feedback changed); the same answer again only once `repeat_after` seconds have
  passed since it was last said (a correction that still applies is repeated, not every window). With
  `confirm` N > 1 an answer is said only once N windows in a row have given it, which keeps a model that
  wavers between two answers from saying both in turn, at the cost of (N - 1) strides of delay.
- `IntervalPolicy` (`--policy interval`): whatever the model answers, every `interval` seconds (how the
  AI Coach challenge's baseline prompts a model every 5 s); a comparison point for the change policy.

Both stay silent on an empty answer and on `NO_FEEDBACK_ANSWER` (what a window model trained by
`data workout-windows` answers when nothing is due). Answers are compared case- and space-insensitively,
ignoring final punctuation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from videogemma.constants import NO_FEEDBACK_ANSWER

POLICIES = ("change", "interval")
_EPSILON = 1e-6


def normalise(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(" .!")


def is_silence(text: str) -> bool:
    key = normalise(text)
    return not key or key == normalise(NO_FEEDBACK_ANSWER)


@dataclass
class ChangePolicy:
    repeat_after: float = 10.0  # seconds; float("inf") never repeats
    confirm: int = 1  # windows in a row that must give an answer before it is said (1: at once)
    _last: str | None = field(default=None, init=False)
    _last_time: float = field(default=-float("inf"), init=False)
    _candidate: str | None = field(default=None, init=False)
    _streak: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if not self.repeat_after > 0:
            raise ValueError(f"repeat_after must be positive seconds, got {self.repeat_after}")
        if self.confirm < 1:
            raise ValueError(f"confirm must be at least 1 window, got {self.confirm}")

    def decide(self, time: float, text: str) -> bool:
        """Whether the answer given at `time` (seconds) is said."""
        key = normalise(text)
        self._streak = self._streak + 1 if key == self._candidate else 1
        self._candidate = key
        if is_silence(text) or self._streak < self.confirm:
            return False
        if key == self._last and time - self._last_time < self.repeat_after - _EPSILON:
            return False
        self._last, self._last_time = key, time
        return True


@dataclass
class IntervalPolicy:
    interval: float = 5.0  # seconds
    _last_time: float = field(default=-float("inf"), init=False)

    def __post_init__(self) -> None:
        if not self.interval > 0:
            raise ValueError(f"interval must be positive seconds, got {self.interval}")

    def decide(self, time: float, text: str) -> bool:
        if is_silence(text) or time - self._last_time < self.interval - _EPSILON:
            return False
        self._last_time = time
        return True


def make_policy(
    name: str, repeat_after: float = 10.0, interval: float = 5.0, confirm: int = 1
) -> ChangePolicy | IntervalPolicy:
    if name == "change":
        return ChangePolicy(repeat_after, confirm)
    if name == "interval":
        return IntervalPolicy(interval)
    raise ValueError(f"unknown emission policy {name!r}; choose one of {POLICIES}")
