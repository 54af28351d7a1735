"""Long workouts with timestamped feedback (QEVD-FIT-COACH's layout): one loader for a downloaded
QEVD-FIT-COACH folder and for the synthetic workouts of `videogemma data synth-workouts`.

```
ROOT/
  feedbacks_long_range.json            one record per workout (below)
  long_range_videos/0000.mp4           the workout
  long_range_videos/0000_timestamps.npy   one timestamp per frame
```

A record:
```json
{"long_range_video_file": "./long_range_videos/0000.mp4",
 "video_timestamps": "./long_range_videos/0000_timestamps.npy",
 "feedbacks": ["", "", "First up are squats!", "First up are squats!", "", ...],   one string per frame
 "feedback_timestamps": [1.2, ...],                                               one per feedback span
 "is_transition": [true, ...]}                                                    one per feedback span
```

Facts taken from QEVD's own loader (not its code):
- A *span* is a run of consecutive frames carrying the same non-empty feedback; a change of text starts a
  new span. Spans, `feedback_timestamps` and `is_transition` must have the same length.
- Transition feedbacks (`"First up are squats!"`, `"Moving on to pushups!"`, and a last one ending the
  session) separate the exercises; the exercise name is the transition text without those words and the `!`.
- Single-exercise episodes: from the first frame of a transition span to halfway through the next
  transition span, holding the feedback spans between the two (the transitions themselves are not scored);
  an episode without any such feedback is left out. A full workout keeps every span, transitions included.
- QEVD's recordings store integer nanoseconds in the `.npy`; QEVD converts them to seconds as
  `ns / 1e9 + 28800`, the base its `feedback_timestamps` use. A floating-point `.npy` holds seconds (what
  QEVD's helper writes for other videos: frame index / fps, and what the synthetic workouts write).
- The real data spells one exercise `armcrosschest`; QEVD's loader reads it as `deltoid stretch`, so does
  this one.

Everything here is in seconds from the workout's first frame (`Workout.frame_times[0] == 0`), the clock
the live coach's predictions use. Bad input (a path outside the root, a missing or non-numeric `.npy`,
per-frame feedbacks that do not match the frame count, timestamps that go backwards, span counts that do
not match) raises a `RecordError` naming the file and the record.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from videogemma.datasets.paths import resolve_in_root
from videogemma.errors import RecordError

FEEDBACKS_LONG_RANGE_NAME = "feedbacks_long_range.json"
LONG_RANGE_VIDEOS_DIR = "long_range_videos"
TIMESTAMPS_SUFFIX = "_timestamps.npy"
# QEVD's conversion of its recordings' nanosecond clock to the seconds `feedback_timestamps` are given in.
QEVD_CLOCK_OFFSET_S = 28800.0
TRANSITION_PREFIXES = ("First up are ", "Moving on to ")
TEXT_FIXES = {"armcrosschest": "deltoid stretch"}
# How far outside the video's time range a feedback timestamp may lie before the units are called wrong
# (a feedback said while the last frames play, a clock rounded to the second).
_TIMESTAMP_SLACK_S = 2.0
EPISODE_MODES = ("single_exercise", "full_workout")


@dataclass(frozen=True)
class Feedback:
    """One feedback span: what was said, when (seconds from the first frame), and on which frames."""

    text: str
    time: float
    is_transition: bool
    first_frame: int
    last_frame: int


@dataclass(frozen=True)
class Workout:
    """One checked record of `feedbacks_long_range.json`."""

    source_file: str
    index: int
    video_name: str  # `long_range_video_file` as written
    video: Path  # its real path under the root
    frame_times: np.ndarray  # float64 seconds from the first frame, one per frame, non-decreasing
    feedbacks: tuple[Feedback, ...]

    @property
    def name(self) -> str:
        """The video's stem (`0000`), which predictions are matched by."""
        return PurePosixPath(self.video_name.replace("\\", "/")).stem

    @property
    def label(self) -> str:
        return f"record {self.index} ({self.video_name})"

    @property
    def duration(self) -> float:
        return float(self.frame_times[-1]) if len(self.frame_times) else 0.0

    @property
    def exercises(self) -> list[str]:
        """The exercises in order: every transition but the last (which ends the session)."""
        return [exercise_from_transition(f.text) for f in self.feedbacks if f.is_transition][:-1]


@dataclass(frozen=True)
class Episode:
    """What is scored at once: one exercise of a workout (`single_exercise`) or the whole workout."""

    workout: Workout
    index: int
    exercise: str | None  # None for a full workout
    start: float  # seconds from the workout's first frame
    end: float
    feedbacks: tuple[Feedback, ...]
    full: bool = False

    @property
    def name(self) -> str:
        return self.workout.name if self.full else f"{self.workout.name}#{self.index}"

    def contains(self, time: float) -> bool:
        """Whether a prediction at `time` belongs here: QEVD's episode video is the frames after `start` up
        to and including `end`; a full workout holds everything."""
        return self.full or self.start < time <= self.end


def exercise_from_transition(text: str) -> str:
    """`First up are squats!` → `squats`."""
    for prefix in TRANSITION_PREFIXES:
        text = text.replace(prefix, "")
    return text.replace("!", "").strip()


def feedback_spans(feedbacks: Sequence[str]) -> list[tuple[str, int, int]]:
    """(text, first frame, last frame) of every run of frames with the same non-empty feedback."""
    spans: list[tuple[str, int, int]] = []
    start = None
    for index, text in enumerate([*feedbacks, ""]):  # a sentinel closes a span running to the last frame
        if start is not None and text != feedbacks[start]:
            spans.append((feedbacks[start], start, index - 1))
            start = None
        if text and start is None:
            start = index
    return spans


def load_workouts(path: str | os.PathLike) -> list[Workout]:
    """Every workout of a dataset root (holding `feedbacks_long_range.json`) or of that file itself."""
    from videogemma.datasets.qved.io import read_json

    path = Path(path)
    file = path / FEEDBACKS_LONG_RANGE_NAME if path.is_dir() else path
    if not file.is_file():
        raise RecordError(
            file, None, "file not found (a QEVD-FIT-COACH folder holds feedbacks_long_range.json)"
        )
    records = read_json(file)
    if not isinstance(records, list):
        raise RecordError(
            file, None, f"expected a JSON list of workout records, got {type(records).__name__}"
        )
    workouts = [parse_workout(record, file.parent, file, index) for index, record in enumerate(records)]
    names = [w.name for w in workouts]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise RecordError(
            file, None, f"two records name a video {duplicate!r}; predictions are matched by it"
        )
    return workouts


def parse_workout(record: Any, root: Path, source_file: Path, index: int) -> Workout:
    """Check one record and read its timestamps (`RecordError` naming the record otherwise)."""
    where = f"record {index}"
    if not isinstance(record, dict):
        raise RecordError(source_file, where, f"expected a JSON object, got {type(record).__name__}")
    video_name = _string_field(record, "long_range_video_file", source_file, where)
    where = f"record {index} ({video_name})"
    timestamps_name = _string_field(record, "video_timestamps", source_file, where)
    frame_texts = _list_field(record, "feedbacks", str, source_file, where)
    feedback_times = _list_field(record, "feedback_timestamps", (int, float), source_file, where)
    transitions = _list_field(record, "is_transition", bool, source_file, where)

    video = resolve_in_root(video_name, root, source_file=source_file, record=where)
    clock = read_timestamps(
        resolve_in_root(timestamps_name, root, source_file=source_file, record=where), source_file, where
    )
    if len(frame_texts) != len(clock):
        raise RecordError(
            source_file,
            where,
            f"{len(frame_texts)} per-frame feedbacks for {len(clock)} frame "
            f"timestamps in {timestamps_name}; there must be one feedback string per frame",
        )
    frame_texts = [_fix_text(text) for text in frame_texts]
    spans = feedback_spans(frame_texts)
    if not len(spans) == len(feedback_times) == len(transitions):
        raise RecordError(
            source_file,
            where,
            f"the per-frame feedbacks form {len(spans)} spans but there are "
            f"{len(feedback_times)} feedback_timestamps and {len(transitions)} is_transition "
            "flags; each needs one per span",
        )
    times = _relative_feedback_times(feedback_times, clock, source_file, where)
    feedbacks = tuple(
        Feedback(text, float(time), bool(flag), first, last)
        for (text, first, last), time, flag in zip(spans, times, transitions)
    )
    return Workout(str(source_file), index, video_name, video, clock - clock[0], feedbacks)


def _relative_feedback_times(
    feedback_times: list[float], clock: np.ndarray, source_file: Path, where: str
) -> np.ndarray:
    """The feedback timestamps in seconds from the first frame, checked to go forwards and to lie within
    the video (a unit mismatch between the .npy and the JSON shows as times far outside it)."""
    times = np.asarray(feedback_times, dtype=np.float64)
    backwards = np.flatnonzero(np.diff(times) < 0)
    if backwards.size:
        k = int(backwards[0])
        raise RecordError(
            source_file,
            where,
            f"feedback_timestamps go backwards: span {k + 1} at {times[k + 1]} after span {k} at {times[k]}",
        )
    origin = float(clock[0])
    times -= origin
    duration = float(clock[-1]) - origin
    outside = np.flatnonzero((times < -_TIMESTAMP_SLACK_S) | (times > duration + _TIMESTAMP_SLACK_S))
    if outside.size:
        k = int(outside[0])
        raise RecordError(
            source_file,
            where,
            f"feedback_timestamps[{k}] = {feedback_times[k]} lies "
            f"{times[k]:+.1f} s from the video's first frame, outside its {duration:.1f} s: "
            "the .npy and the feedback timestamps are in different units",
        )
    return times


def read_timestamps(path: Path, source_file: str | os.PathLike, where: str) -> np.ndarray:
    """A `.npy` of per-frame timestamps as float64 seconds (integers: QEVD's nanosecond clock, converted as
    QEVD converts it), checked to be 1-D, finite, non-empty and never going backwards."""
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise RecordError(source_file, where, f"video_timestamps file {path} not found") from None
    except (ValueError, OSError, EOFError) as error:
        raise RecordError(source_file, where, f"{path} is not a readable .npy array ({error})") from None
    if array.ndim != 1 or array.size == 0 or not np.issubdtype(array.dtype, np.number):
        raise RecordError(
            source_file,
            where,
            f"{path} must hold a non-empty 1-D array of numbers, got {array.dtype} {array.shape}",
        )
    if np.issubdtype(array.dtype, np.integer):
        seconds = array.astype(np.float64) / 1e9 + QEVD_CLOCK_OFFSET_S
    else:
        seconds = array.astype(np.float64)
    if not np.isfinite(seconds).all():
        raise RecordError(source_file, where, f"{path} holds non-finite timestamps")
    backwards = np.flatnonzero(np.diff(seconds) < 0)
    if backwards.size:
        k = int(backwards[0])
        raise RecordError(
            source_file,
            where,
            f"{path}: the frame timestamps go backwards at frame {k + 1} "
            f"({seconds[k + 1]:.3f} s after {seconds[k]:.3f} s)",
        )
    return seconds


def episodes(workout: Workout, mode: str = "single_exercise") -> list[Episode]:
    """The workout cut into single-exercise episodes at its transitions (QEVD's rule, module docstring), or
    kept whole (`full_workout`)."""
    if mode not in EPISODE_MODES:
        raise ValueError(f"episode mode {mode!r} is not one of {EPISODE_MODES}")
    if mode == "full_workout":
        return [Episode(workout, 0, None, 0.0, workout.duration, workout.feedbacks, full=True)]
    transitions = [k for k, feedback in enumerate(workout.feedbacks) if feedback.is_transition]
    found = []
    for current, following in itertools.pairwise(transitions):
        inside = workout.feedbacks[current + 1 : following]
        if not inside:
            continue
        start_frame = workout.feedbacks[current].first_frame
        nxt = workout.feedbacks[following]
        end_frame = nxt.first_frame + (nxt.last_frame - nxt.first_frame) // 2
        found.append(
            Episode(
                workout,
                len(found),
                exercise_from_transition(workout.feedbacks[current].text),
                float(workout.frame_times[start_frame]),
                float(workout.frame_times[end_frame]),
                inside,
            )
        )
    return found


def _fix_text(text: str) -> str:
    for wrong, right in TEXT_FIXES.items():
        text = text.replace(wrong, right)
    return text


def _string_field(record: dict, key: str, source_file: Path, where: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value.strip():
        raise RecordError(source_file, where, f"{key!r} must be a non-empty string, got {value!r:.60}")
    return value


def _list_field(record: dict, key: str, kind: type | tuple, source_file: Path, where: str) -> list:
    value = record.get(key)
    if not isinstance(value, list):
        raise RecordError(source_file, where, f"{key!r} must be a list, got {type(value).__name__}")
    for position, item in enumerate(value):
        wrong_bool = kind is not bool and isinstance(item, bool)
        if (
            wrong_bool
            or not isinstance(item, kind)
            or (kind is not str and isinstance(item, float) and not math.isfinite(item))
        ):
            raise RecordError(
                source_file, where, f"{key}[{position}] = {item!r:.40} is not a {_kind_name(kind)}"
            )
    return value


def _kind_name(kind: type | tuple) -> str:
    return (
        {str: "string", bool: "true/false flag"}.get(kind, "number")
        if not isinstance(kind, tuple)
        else "number"
    )
