"""The coach's windows: frames taken on a fixed time grid, and which of them each window reads.

The model reads `num_frames` frames per window of `window` seconds, so frames are taken every
`step = window / num_frames` seconds, on a grid fixed to the source's clock: grid point k at `k · step`
takes the frame on screen then (the last one shown at or before it, as `processing.video`'s `fps`
sampling does). Window j ends at `window + j · stride` (`datasets.workout_windows.window_end`, the same
schedule the window model's training data is cut on) and reads the `num_frames` grid frames up to its end.
Because the grid does not move with the window, consecutive windows share frames (all but
`stride / step` of them), which is what lets each frame's CLIP features be computed once (`encoder.py`).

A window is *due* once a frame at or after its end has arrived (which also settles its last grid frame);
at the end of a source, windows ending after its last frame are not run. Only the frames a window still to come can read are kept (`FrameStore`), so memory is bounded
whatever the session's length.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from videogemma.coach.source import TimedFrame
from videogemma.datasets.workout_windows import window_end
from videogemma.processing.transforms import clip_transform, videomamba_transform

_EPSILON = 1e-6  # seconds: grid and window times are sums of decimals
# Frame arrivals remembered (for latencies): over 4 s of 60 frames/s; a window runs within a stride of
# falling due or is skipped.
_ARRIVALS_KEPT = 256


@dataclass(frozen=True)
class Sample:
    """A grid frame, preprocessed for both encoders."""

    index: int  # grid index: the frame on screen at index · step
    time: float  # seconds, index · step
    clip_pixels: torch.Tensor  # (3, Sc, Sc)
    videomamba_pixels: torch.Tensor  # (3, Sv, Sv)


@dataclass(frozen=True)
class Window:
    number: int  # j: the window ending at window + j · stride
    start: float
    end: float
    samples: tuple[Sample, ...]  # num_frames of them, in time order

    @property
    def first_index(self) -> int:
        return self.samples[0].index


class FrameGrid:
    """Turns the stream of decoded frames into the grid frames, in order (module docstring)."""

    def __init__(self, step: float) -> None:
        if not step > 0:
            raise ValueError(f"the grid step must be positive, got {step}")
        self.step = step
        self.next_index = 0
        self._previous: TimedFrame | None = None

    def push(self, item: TimedFrame) -> list[tuple[int, TimedFrame]]:
        """The grid points this frame settles: (grid index, the frame on screen at that point)."""
        settled = []
        while self.next_index * self.step <= item.time + _EPSILON:
            on_screen = self._previous
            if on_screen is None or self.next_index * self.step >= item.time - _EPSILON:
                on_screen = item
            settled.append((self.next_index, on_screen))
            self.next_index += 1
        self._previous = item
        return settled


class WindowSchedule:
    """Window j's end and the grid indices it reads."""

    def __init__(self, window: float, stride: float, num_frames: int) -> None:
        if not (window > 0 and stride > 0) or num_frames < 1:
            raise ValueError(
                f"need window > 0, stride > 0, num_frames ≥ 1; got {window}, {stride}, {num_frames}"
            )
        self.window, self.stride, self.num_frames = window, stride, num_frames
        self.step = window / num_frames

    def end(self, number: int) -> float:
        return window_end(number, self.window, self.stride)

    def last_index(self, number: int) -> int:
        """The grid index of window `number`'s last frame (the last grid point at or before its end)."""
        return math.floor(self.end(number) / self.step + _EPSILON)

    def indices(self, number: int) -> range:
        last = self.last_index(number)
        return range(last - self.num_frames + 1, last + 1)

    def latest_due(self, reached: float) -> int | None:
        """The newest window due once the source has reached `reached` seconds (None: none yet)."""
        if reached < self.window - _EPSILON:
            return None
        return math.floor((reached - self.window) / self.stride + _EPSILON)


class FrameStore:
    """The grid frames a window still to come may read, shared between the reading thread and the model's
    (a lock guards it); frames older than `keep` grid steps behind the newest are dropped."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._samples: dict[int, Sample] = {}
        self._lock = threading.Lock()
        self.newest = -1
        self.reached = -math.inf  # source time of the newest frame taken (windows ending by then are due)
        # (source time, time.monotonic()) of recent frames: when each window fell due, for its latency.
        self._arrivals: deque[tuple[float, float]] = deque(maxlen=_ARRIVALS_KEPT)

    def mark_reached(self, time: float, wall: float) -> None:
        """The source has delivered its frame at `time` (seconds), at `wall` (time.monotonic())."""
        with self._lock:
            self._arrivals.append((time, wall))
            self.reached = time

    def due_since(self, end: float) -> float:
        """When (time.monotonic()) the window ending at `end` fell due: the arrival of the first frame at or
        after its end (the oldest remembered, should that one be forgotten)."""
        with self._lock:
            return next(
                (wall for time, wall in self._arrivals if time >= end - _EPSILON), self._arrivals[0][1]
            )

    def add(self, sample: Sample) -> None:
        with self._lock:
            self._samples[sample.index] = sample
            self.newest = max(self.newest, sample.index)
            for index in [i for i in self._samples if i <= self.newest - self.keep]:
                del self._samples[index]

    def window(self, schedule: WindowSchedule, number: int) -> Window:
        with self._lock:
            samples = tuple(self._samples[index] for index in schedule.indices(number))
        end = schedule.end(number)
        return Window(number, round(end - schedule.window, 6), end, samples)

    def newest_window(self, schedule: WindowSchedule) -> Window | None:
        """The newest due window, chosen and read in one step: a reader running ahead (frames pushed faster
        than real time) could otherwise drop a chosen window's first frames before it is read."""
        with self._lock:
            number = schedule.latest_due(self.reached)
            if number is None:
                return None
            samples = tuple(self._samples[index] for index in schedule.indices(number))
        end = schedule.end(number)
        return Window(number, round(end - schedule.window, 6), end, samples)


def preprocess_frame(processor: object, rgb: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """One frame's inputs to CLIP and to VideoMamba, with the processor's sizes and statistics."""
    frame = torch.from_numpy(np.ascontiguousarray(rgb))[None]
    clip = clip_transform(frame, processor.clip_image_size, processor.clip_mean, processor.clip_std)
    videomamba = videomamba_transform(
        frame, processor.videomamba_image_size, processor.videomamba_mean, processor.videomamba_std
    )
    return clip[0], videomamba[0]
