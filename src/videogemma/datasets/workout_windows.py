"""Training data for the live coach's window model, cut from long workouts (`datasets/workouts.py`).

The coach (`videogemma coach`) runs the model every `stride` seconds on the last `window` seconds of video;
the first window ends at `window`. Here the same windows are cut from each workout as mp4 clips (PyAV), and
each becomes a conversation record (DATA.md's format, what `videogemma train` reads) whose answer is the
feedback *due* in that window: the ground-truth feedback whose timestamp lies in the window's last
`stride` seconds, i.e. since the previous window (the earliest one, should two fall there; the first
window answers for everything said before it ends). A window
where nothing is due answers `NO_FEEDBACK_ANSWER` ("No new feedback."), which the coach never says
aloud; `empty_fraction` keeps only that share of those windows (seeded), since most windows are silent.

```
OUT/windows/<workout stem>/<window number>.mp4
OUT/workout_windows_{train,val,test}.json   records split by workout (seeded), never a workout in two splits
```
A record: `{"video": "windows/0000/00012.mp4", "conversations": [human: prompt, gpt: answer],
"split": "train", "workout": "./long_range_videos/0000.mp4", "window": [start, end], "due": [times]}`.

A window's clip holds the frames whose timestamp lies in (end - window, end], at the workout's frame rate,
upright. The workout's frames are read once, in order, holding one window of frames in memory.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np

from videogemma.constants import DEFAULT_PROMPT, NO_FEEDBACK_ANSWER
from videogemma.datasets.qved.io import write_json, write_mp4
from videogemma.datasets.workouts import Workout, load_workouts
from videogemma.errors import RecordError, VideoDecodeError, VideoGemmaDataError
from videogemma.processing.video import frame_to_rgb, upright
from videogemma.processing.video_source import DEFAULT_LIMITS, VideoLimits, open_video

WINDOWS_DIR = "windows"
SPLITS = ("train", "val", "test")
SPLIT_FILE_PATTERN = "workout_windows_{}.json"
# A frame counts as inside a window when its timestamp is at most this far past the window's end
# (timestamps written as rounded decimals).
_TIME_EPSILON = 1e-6


def window_end(number: int, window: float, stride: float) -> float:
    """When window `number` (from 0) ends: the coach's schedule, `window + number · stride` seconds."""
    return round(window + number * stride, 6)


def window_ends(duration: float, window: float, stride: float) -> list[float]:
    """The ends of every window of a video of `duration` seconds."""
    if not (window > 0 and stride > 0):
        raise ValueError(f"window and stride must be positive seconds, got {window} and {stride}")
    count = math.floor((duration - window) / stride + _TIME_EPSILON) + 1
    return [window_end(k, window, stride) for k in range(max(count, 0))]


def due_feedbacks(workout: Workout, end: float, stride: float, first: bool = False) -> list[float]:
    """Times of the feedbacks due in the window ending at `end`: said in (end - stride, end], or anywhere
    up to `end` for the `first` window (nothing earlier is heard before it)."""
    since = -math.inf if first else end - stride
    return [f.time for f in workout.feedbacks if since < f.time <= end + _TIME_EPSILON]


@dataclass
class WindowsSummary:
    windows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    with_feedback: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    workouts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    dropped_empty: int = 0
    crowded: int = 0  # windows where more than one feedback was due (the earliest is the answer)
    files: dict[str, Path] = field(default_factory=dict)


def split_workouts(workouts: list[Workout], ratios: tuple[float, float, float], seed: int) -> dict[str, str]:
    """Workout name → split, shuffled by `seed` after sorting (the same in any process)."""
    if len(ratios) != 3 or min(ratios) < 0 or not math.isclose(sum(ratios), 1.0, abs_tol=1e-6):
        raise ValueError(f"split ratios must be three non-negative numbers summing to 1, got {ratios}")
    names = sorted(w.name for w in workouts)
    order = np.random.default_rng(seed).permutation(len(names))
    train = round(ratios[0] * len(names))
    val = round(ratios[1] * len(names))
    assignment = {}
    for rank, position in enumerate(order):
        assignment[names[position]] = "train" if rank < train else "val" if rank < train + val else "test"
    return assignment


def cut_workout_windows(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    window: float = 3.0,
    stride: float = 1.0,
    prompt: str = DEFAULT_PROMPT,
    ratios: tuple[float, float, float] = (0.6, 0.2, 0.2),
    seed: int = 42,
    empty_fraction: float = 1.0,
    limits: VideoLimits = DEFAULT_LIMITS,
) -> WindowsSummary:
    """Cut every workout of `root` into window clips under `out_dir` and write the three split files."""
    if not 0.0 <= empty_fraction <= 1.0:
        raise ValueError(f"empty_fraction must lie in [0, 1], got {empty_fraction}")
    out_dir = Path(out_dir)
    workouts = load_workouts(root)
    if not workouts:
        raise VideoGemmaDataError(f"{root}: no workouts to cut")
    splits = split_workouts(workouts, ratios, seed)
    summary = WindowsSummary()
    records: dict[str, list[dict[str, Any]]] = {split: [] for split in SPLITS}
    for workout in workouts:
        split = splits[workout.name]
        summary.workouts[split] += 1
        keep = np.random.default_rng(np.random.SeedSequence([seed, workouts.index(workout)]))
        for record in _workout_records(workout, out_dir, window, stride, prompt, limits, summary):
            if record["due"] or keep.random() < empty_fraction:
                record["split"] = split
                records[split].append(record)
                summary.windows[split] += 1
                summary.with_feedback[split] += bool(record["due"])
            else:
                summary.dropped_empty += 1
    for split in SPLITS:
        path = out_dir / SPLIT_FILE_PATTERN.format(split)
        write_json(path, records[split])
        summary.files[split] = path
    return summary


def _workout_records(
    workout: Workout,
    out_dir: Path,
    window: float,
    stride: float,
    prompt: str,
    limits: VideoLimits,
    summary: WindowsSummary,
) -> list[dict[str, Any]]:
    """One record per window of the workout, its clip written (or kept, when it exists)."""
    ends = window_ends(workout.duration, window, stride)
    fps = _frame_rate(workout)
    records = []
    for number, (end, frames) in enumerate(_window_frames(workout, ends, window, limits)):
        relative = f"{WINDOWS_DIR}/{workout.name}/{number:05d}.mp4"
        if not (out_dir / relative).is_file():
            write_mp4(out_dir / relative, frames, fps)
        due = due_feedbacks(workout, end, stride, first=number == 0)
        summary.crowded += len(due) > 1
        answer = next(f.text for f in workout.feedbacks if f.time == due[0]) if due else NO_FEEDBACK_ANSWER
        records.append(
            {
                "video": relative,
                "conversations": [{"from": "human", "value": prompt}, {"from": "gpt", "value": answer}],
                "workout": workout.video_name,
                "window": [round(end - window, 6), end],
                "due": due,
            }
        )
    return records


def _window_frames(
    workout: Workout, ends: list[float], window: float, limits: VideoLimits
) -> Iterator[tuple[float, np.ndarray]]:
    """(end, frames) of each window in order, decoding the workout once; frame k's time is the record's
    k-th timestamp (a video with more or fewer frames than timestamps is an error naming the record)."""
    times = workout.frame_times
    held: deque[tuple[float, np.ndarray]] = deque()
    pending = iter(ends)
    end = next(pending, None)
    count = 0
    for frame, stream in _decoded_frames(workout.video, limits):
        if count >= len(times):
            raise RecordError(
                workout.source_file,
                workout.label,
                f"{workout.video} has more frames than its {len(times)} timestamps",
            )
        time = float(times[count])
        count += 1
        while end is not None and time > end + _TIME_EPSILON:
            yield end, _clip(held, end, window)
            end = next(pending, None)
        if end is None:
            return
        # Only frames that a window still to come can hold are kept.
        while held and held[0][0] <= end - window + _TIME_EPSILON:
            held.popleft()
        held.append((time, upright(frame_to_rgb(frame, limits), frame, stream)))
    if count != len(times):
        raise RecordError(
            workout.source_file,
            workout.label,
            f"{workout.video} has {count} frames but {len(times)} timestamps",
        )
    while end is not None:
        yield end, _clip(held, end, window)
        end = next(pending, None)


def _clip(held: deque, end: float, window: float) -> np.ndarray:
    frames = [rgb for time, rgb in held if end - window + _TIME_EPSILON < time <= end + _TIME_EPSILON]
    if not frames:
        raise VideoGemmaDataError(f"no frame lies in the window ending at {end} s")
    return np.stack(frames)


def _frame_rate(workout: Workout) -> float:
    steps = np.diff(workout.frame_times)
    steps = steps[steps > 0]
    return float(1.0 / np.median(steps)) if steps.size else 1.0


def _decoded_frames(path: Path, limits: VideoLimits) -> Iterator[tuple[av.VideoFrame, av.VideoStream]]:
    """Every frame of the video in presentation order, with its stream; a decoder failure is a
    `VideoDecodeError` naming the file."""
    with open_video(path, limits) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            yield from ((frame, stream) for frame in container.decode(stream))
        except (av.FFmpegError, OSError) as error:
            raise VideoDecodeError(path, f"decoding failed: {error}") from None
