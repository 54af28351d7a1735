"""Where the coach's frames come from: a video file, a V4L2 camera (`/dev/video0`) or a stream URL.

    with VideoSource("workout.mp4") as source:
        for item in source.frames():          # SourceFrame(time, frame, stream), as decoded
            rgb = source.to_rgb(item)          # only for the frames the coach keeps

- A file goes through the package's one video-opening function (`processing.video_source.open_video`: no
  playlists or lists, `VideoLimits` checked before decoding).
- A camera is opened with PyAV's `v4l2` input (`av.open(device, format="v4l2")`).
- A URL must use a streaming protocol (`STREAM_SCHEMES`); PyAV gives up on it when no data comes for
  `read_timeout` seconds (a stalled stream is an error, not a hang).

Times are seconds from the source's first frame, from the frames' presentation timestamps (frame count /
frame rate where a frame has none), never going backwards. A source that cannot be opened, or fails while
it is read (a camera unplugged, a stream cut), raises `VideoDecodeError` naming it; frames are converted
to RGB only on request, downscaled to `VideoLimits.max_frame_pixels` and turned upright.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import av
import numpy as np

from videogemma.errors import VideoDecodeError
from videogemma.processing.video import frame_to_rgb, upright
from videogemma.processing.video_source import DEFAULT_LIMITS, VideoLimits, open_video

# Protocols of live streams; anything else with "://" is refused (file lists, concat, data: URLs...).
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp")
DEVICE_PREFIX = "/dev/video"
DEFAULT_READ_TIMEOUT_S = 10.0
# Opening reads ahead to learn the stream (FFmpeg probes up to 5 s of it); an interrupt then would leave the
# connection failing every read after, so opening gets more time than a read.
MIN_OPEN_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class SourceFrame:
    time: float  # seconds from the source's first frame
    frame: av.VideoFrame
    stream: av.VideoStream


class TimedFrame(Protocol):
    """What the coach's windows need of a frame: its time (seconds from the source's first frame)."""

    @property
    def time(self) -> float: ...


class FrameSource(Protocol):
    """What the coaching loop reads: a `VideoSource`, or frames a client pushes (`coach.pushed`)."""

    name: str

    @property
    def live(self) -> bool: ...
    def frames(self) -> Iterator[Any]: ...  # TimedFrame items, in time order
    def to_rgb(self, item: Any) -> np.ndarray: ...
    def abandon(self) -> None: ...


def source_kind(source: str) -> str:
    """'device', 'url' or 'file'."""
    if source.startswith(DEVICE_PREFIX):
        return "device"
    if "://" in source:
        return "url"
    return "file"


class VideoSource:
    """One opened source; a context manager. `live` sources (cameras, streams) deliver in real time."""

    def __init__(
        self,
        source: str | os.PathLike,
        limits: VideoLimits = DEFAULT_LIMITS,
        read_timeout: float = DEFAULT_READ_TIMEOUT_S,
    ) -> None:
        self.name = str(source)
        self.kind = source_kind(self.name)
        self.limits = limits
        self.read_timeout = read_timeout
        self._container: Any = None

    @property
    def live(self) -> bool:
        return self.kind != "file"

    def __enter__(self) -> VideoSource:
        self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def check(self) -> None:
        """Refuse a source that cannot work, without taking it: a file is opened and closed again; a camera
        device must exist; a URL must use a stream protocol (a live source is opened once, when it is read,
        since a stream may accept a single connection)."""
        if self.kind == "file":
            with self:
                return
        if self.kind == "device" and not os.path.exists(self.name):
            raise VideoDecodeError(self.name, "no such camera device")
        if self.kind == "url":
            self._check_scheme()

    def _check_scheme(self) -> None:
        scheme = self.name.split("://", 1)[0].lower()
        if scheme not in STREAM_SCHEMES:
            raise VideoDecodeError(
                self.name,
                f"{scheme}:// is not a stream protocol the coach reads ({', '.join(STREAM_SCHEMES)})",
            )

    def open(self) -> None:
        if self.kind == "file":
            self._container = open_video(self.name, self.limits)  # raises VideoDecodeError naming it
        elif self.kind == "device":
            self._container = self._open_live(format="v4l2", what="camera")
        else:
            self._check_scheme()
            self._container = self._open_live(format=None, what="stream")
        if not self._container.streams.video:
            self.close()
            raise VideoDecodeError(self.name, "no video stream")

    def _open_live(self, format: str | None, what: str) -> Any:
        try:
            return av.open(
                self.name,
                format=format,
                timeout=(max(MIN_OPEN_TIMEOUT_S, self.read_timeout), self.read_timeout),
                metadata_errors="replace",
            )
        except (av.FFmpegError, OSError) as error:
            raise VideoDecodeError(self.name, f"cannot open the {what}: {error}") from None

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def abandon(self) -> None:
        """Forget the container without closing it (a thread is still blocked reading it; the process's
        exit reclaims it)."""
        self._container = None

    def frames(self) -> Iterator[SourceFrame]:
        """The frames in presentation order with their times; `VideoDecodeError` if reading fails."""
        if self._container is None:
            raise RuntimeError("open the source first")
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate) if stream.average_rate else None
        first = None
        previous = 0.0
        count = 0
        try:
            for frame in self._container.decode(stream):
                if frame.pts is not None and stream.time_base is not None:
                    seconds = float(frame.pts * stream.time_base)
                else:
                    seconds = count / rate if rate else float(count)
                first = seconds if first is None else first
                previous = max(seconds - first, previous)  # a timestamp going backwards holds the clock
                count += 1
                yield SourceFrame(previous, frame, stream)
        except av.ExitError:  # PyAV's read timeout: nothing came for `read_timeout` seconds
            raise VideoDecodeError(
                self.name,
                f"no frame for {self.read_timeout:g} s: the source stalled or "
                f"disappeared (after {count} frames)",
            ) from None
        except (av.FFmpegError, OSError) as error:
            raise VideoDecodeError(self.name, f"reading stopped after {count} frames: {error}") from None

    def to_rgb(self, item: SourceFrame) -> np.ndarray:
        """uint8 (H, W, 3), upright, within `max_frame_pixels`."""
        return upright(frame_to_rgb(item.frame, self.limits), item.frame, item.stream)
