"""Frames a client pushes, as a coaching source: what `videogemma serve`'s coaching stream feeds the coach.

    source = PushedFrames("the client's camera", limits=processor.video_limits)
    source.push(PushedFrame.jpeg(12.40, data))   # from the thread that receives them (blocks while full)
    source.end()                                 # no more frames: the session finishes its due windows
    stats = CoachSession(...).run(source)        # in another thread, as with a camera

Times are the client's own (seconds on its clock); the session sees them from the first frame on
(`offset` is the first frame's time, to turn the session's times back into the client's). Frames are
kept as sent and decoded only when the coach takes one (its grid frames: a few per second), downscaled to
`VideoLimits.max_frame_pixels`. An image is checked when it is pushed, from its header (format and size,
nothing decoded: a frame above `max_source_pixels` is refused before any allocation); one that fails to
decode later ends the session with `VideoDecodeError` naming the frame. A source that gets no frame for
`read_timeout` seconds has stalled (`VideoDecodeError`), as a camera that stops sending has.
"""

from __future__ import annotations

import io
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import av
import numpy as np
from PIL import Image

from videogemma.coach.source import DEFAULT_READ_TIMEOUT_S
from videogemma.errors import VideoDecodeError
from videogemma.processing.video import frame_to_rgb
from videogemma.processing.video_source import DEFAULT_LIMITS, VideoLimits

FRAME_FORMATS = ("jpeg", "rgb24")
# Frames received but not yet taken by the coach: beyond this, `push` waits (the client is slowed down).
QUEUED_FRAMES = 16
_END = None


class FrameError(ValueError):
    """A pushed frame refused when it arrives (its header says it cannot be read or is too large)."""


@dataclass(frozen=True)
class PushedFrame:
    time: float  # seconds on the client's clock (the session's, once the source has taken it)
    data: bytes  # a JPEG image, or rows of RGB bytes
    width: int
    height: int
    format: str  # "jpeg" or "rgb24"

    @classmethod
    def jpeg(cls, time: float, data: bytes, limits: VideoLimits = DEFAULT_LIMITS) -> PushedFrame:
        """A JPEG image, checked from its header; `FrameError` saying why it is refused."""
        try:
            with Image.open(io.BytesIO(data), formats=["JPEG"]) as image:
                width, height = image.size
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            raise FrameError(f"not a JPEG image ({type(error).__name__}: {error})") from None
        _check_size(width, height, limits)
        return cls(time, data, width, height, "jpeg")

    @classmethod
    def rgb24(
        cls, time: float, data: bytes, width: int, height: int, limits: VideoLimits = DEFAULT_LIMITS
    ) -> PushedFrame:
        """Raw RGB rows (width × height × 3 bytes)."""
        _check_size(width, height, limits)
        if len(data) != width * height * 3:
            raise FrameError(
                f"an rgb24 frame of {width}×{height} is {width * height * 3} bytes, got {len(data)}"
            )
        return cls(time, data, width, height, "rgb24")


def _check_size(width: int, height: int, limits: VideoLimits) -> None:
    if width < 1 or height < 1:
        raise FrameError(f"a frame of {width}×{height} pixels is empty")
    if width * height > limits.max_source_pixels:
        raise FrameError(
            f"a frame of {width}×{height} pixels is above the limit of {limits.max_source_pixels} "
            "(VideoLimits.max_source_pixels)"
        )


class PushedFrames:
    """A coaching source fed by `push` from one thread and read by the session from another. `live` (a
    camera's frames) runs the session in real time, skipping windows while the model is busy; otherwise
    every window runs and `push` waits for the model."""

    def __init__(
        self,
        name: str,
        limits: VideoLimits = DEFAULT_LIMITS,
        read_timeout: float = DEFAULT_READ_TIMEOUT_S,
        queued: int = QUEUED_FRAMES,
        live: bool = True,
    ) -> None:
        self.name = name
        self.live = live
        self.limits = limits
        self.read_timeout = read_timeout
        self.offset: float | None = None  # the first frame's time on the client's clock
        self.pushed = 0
        self._queue: queue.Queue[PushedFrame | None] = queue.Queue(maxsize=queued)
        self._closed = threading.Event()

    def push(self, frame: PushedFrame) -> None:
        """Queue a frame (waiting while `queued` frames wait for the coach); ignored once closed."""
        if self.offset is None:
            self.offset = frame.time
        shifted = PushedFrame(
            round(frame.time - self.offset, 6), frame.data, frame.width, frame.height, frame.format
        )
        while not self._closed.is_set():
            try:
                self._queue.put(shifted, timeout=0.25)
                self.pushed += 1
                return
            except queue.Full:
                continue

    def end(self) -> None:
        """No more frames: the session runs the windows they made due, then finishes."""
        while not self._closed.is_set():
            try:
                self._queue.put(_END, timeout=0.25)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """Stop now: frames still queued are dropped, and the session ends after its current window."""
        self._closed.set()
        with self._queue.mutex:
            self._queue.queue.clear()
            self._queue.not_full.notify_all()
        self._queue.put_nowait(_END)

    def abandon(self) -> None:
        self.close()

    def frames(self) -> Iterator[PushedFrame]:
        count = 0
        while True:
            try:
                item = self._queue.get(timeout=self.read_timeout)
            except queue.Empty:
                raise VideoDecodeError(
                    self.name,
                    f"no frame for {self.read_timeout:g} s: the client stopped sending (after {count} frames)",
                ) from None
            if item is _END or self._closed.is_set():
                return
            count += 1
            yield item

    def to_rgb(self, item: PushedFrame) -> np.ndarray:
        """uint8 (H, W, 3), within `max_frame_pixels`; `VideoDecodeError` naming the frame if it cannot be
        decoded."""
        if item.format == "rgb24":
            rgb = np.frombuffer(item.data, dtype=np.uint8).reshape(item.height, item.width, 3).copy()
        else:
            try:
                with Image.open(io.BytesIO(item.data), formats=["JPEG"]) as image:
                    rgb = np.array(image.convert("RGB"))
            except (OSError, ValueError) as error:
                raise VideoDecodeError(
                    self.name,
                    f"the frame at {item.time + (self.offset or 0):.3f} s cannot be decoded: {error}",
                ) from None
        if rgb.shape[0] * rgb.shape[1] <= self.limits.max_frame_pixels:
            return rgb
        return frame_to_rgb(
            av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24"), self.limits
        )
