"""Reading frames out of a video file with PyAV: uniformly spaced, real, upright, RGB.

`read_video_frames(path, num_frames)` returns `num_frames` frames spread evenly over the whole clip: the
frame shown at the centre of each of `num_frames` equal time segments (ARCHITECTURE §1). A clip shorter
than `num_frames` frames repeats frames; it is never padded with black ones.

`FrameSampling("fps", rate)` picks frames as the original Mobile-VideoGPT did instead: the frames on screen at
0, 1/rate, 2/rate, … seconds (frame 0 included, up to the last frame), then `np.linspace(0, last, n)` over
those, endpoints included, with n at most `num_frames`; fewer than `num_frames` of them repeat (real frames,
in time order, never black ones).

How the frames are found, cheapest first:
1. Demux the packets (no decoding) to learn every frame's presentation time, the keyframes and the clip's
   end, pick the frames by time (this handles variable frame rate), then decode only what the wanted frames
   need: jump to the keyframe before a wanted frame when that skips frames (long clips), stop after the
   last wanted frame, and convert just the wanted ones to RGB.
2. If the decoder disagrees with the packets (dropped frames, missing or reordered timestamps), decode the
   whole clip once to learn the real timeline, then pick again and decode a second time. Without usable
   timestamps at all, frames are picked by counting (centre of equal segments of the frame count).

Frames are rotated upright from the display matrix (or the legacy `rotate` tag). Any pixel format and size
the decoder produces is converted to RGB. Every failure is a `VideoDecodeError` naming the file.

Every file is opened through `video_source.open_video` (self-contained formats only, within `VideoLimits`).
A clip with fewer frames than are read is logged as a warning naming the file (its frames repeat).
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from videogemma.constants import FRAME_SAMPLINGS
from videogemma.errors import VideoDecodeError, VideoLimitError
from videogemma.processing.video_source import (
    DEFAULT_LIMITS,
    VideoLimits,
    check_duration,
    check_file,
    check_frame_count,
    check_frame_size,
    open_video,
    video_stream,
)

PathLike = str | os.PathLike

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoInfo:
    """What a video file says about itself (container metadata plus its first decoded frame)."""

    path: str
    num_frames: int | None  # from the container (or counted, see `probe_video`); None when unknown
    fps: float | None  # average frame rate
    duration: float | None  # seconds
    width: int  # of the upright frame, i.e. after rotation
    height: int
    rotation: int  # degrees counter-clockwise applied to stored frames to show them upright (0/90/180/270)
    codec: str
    pix_fmt: str | None


@dataclass(frozen=True)
class DecodedFrames:
    """The frames `read_video_frames` returns, with where in the clip they came from."""

    frames: np.ndarray  # uint8 (num_frames, H, W, 3) RGB, upright
    indices: list[int]  # position of each frame in presentation order (0 = first frame shown)
    timestamps: list[float | None]  # presentation time of each frame in seconds (None without timestamps)


@dataclass(frozen=True)
class FrameSampling:
    """Which frames of a clip are read: `segment_centers` (ours, ARCHITECTURE §1) or `fps` (the original's,
    at `fps` frames per second, see the module docstring)."""

    method: str = "segment_centers"
    fps: float = 1.0

    def __post_init__(self) -> None:
        if self.method not in FRAME_SAMPLINGS:
            raise ValueError(f"frame sampling {self.method!r} is not one of {FRAME_SAMPLINGS}")
        if not (isinstance(self.fps, int | float) and math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(
                f"the frame sampling rate must be a positive number of frames/s, got {self.fps!r}"
            )


SEGMENT_CENTERS = FrameSampling()


def fps_sample_positions(num_samples: int, num_frames: int) -> list[int]:
    """Which of `num_samples` frames taken at the sampling rate are read: the original's
    `np.linspace(0, num_samples - 1, n, dtype=int)` with n = min(num_samples, num_frames) (first and last
    included), each repeated in time order when n < num_frames (e.g. 3 samples, 8 frames: 0 0 0 1 1 1 2 2).
    """
    if num_samples <= 0 or num_frames <= 0:
        raise ValueError(f"need positive counts, got num_samples={num_samples}, num_frames={num_frames}")
    picked = np.linspace(0, num_samples - 1, num=min(num_samples, num_frames), dtype=int).tolist()
    return [picked[(i * len(picked)) // num_frames] for i in range(num_frames)]


def sample_frame_indices(num_available: int, num_frames: int) -> list[int]:
    """Indices of the frames at the centres of `num_frames` equal segments of `num_available` frames.

    With fewer frames than requested, indices repeat (e.g. 3 frames, 8 wanted: 0 0 0 1 1 2 2 2).
    """
    if num_available <= 0 or num_frames <= 0:
        raise ValueError(f"need positive counts, got num_available={num_available}, num_frames={num_frames}")
    return [((2 * i + 1) * num_available) // (2 * num_frames) for i in range(num_frames)]


def read_video_frames(
    path: PathLike,
    num_frames: int,
    *,
    sampling: FrameSampling = SEGMENT_CENTERS,
    limits: VideoLimits = DEFAULT_LIMITS,
) -> np.ndarray:
    """`num_frames` real frames of the clip, chosen by `sampling`: uint8 (num_frames, H, W, 3) RGB, upright."""
    return decode_frames(path, num_frames, sampling=sampling, limits=limits).frames


def decode_frames(
    path: PathLike,
    num_frames: int,
    *,
    sampling: FrameSampling = SEGMENT_CENTERS,
    limits: VideoLimits = DEFAULT_LIMITS,
) -> DecodedFrames:
    """`read_video_frames` plus the index and timestamp of every frame returned."""
    if num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    check_file(path, limits)

    timeline = _packet_timeline(path, limits)
    if timeline is not None:
        indices = timeline.indices(num_frames, sampling)
        try:
            decoded = _decode_indices(path, indices, timeline, limits)
            return _finish(path, decoded, indices, [timeline.seconds(k) for k in indices], len(timeline.pts))
        except _TimelineMismatch:
            pass  # the packets did not describe the decoded frames; learn the real timeline below

    timeline, count = _decoded_timeline(path, limits)
    if timeline is not None:
        indices = timeline.indices(num_frames, sampling)
        timestamps: list[float | None] = [timeline.seconds(k) for k in indices]
    elif sampling.method == "fps":
        raise VideoDecodeError(
            path, "its frames carry no usable timestamps, which frame sampling 'fps' needs"
        )
    else:
        indices = sample_frame_indices(count, num_frames)
        timestamps = [None] * num_frames
    try:
        decoded = _decode_indices(path, indices, None, limits)
    except _TimelineMismatch as mismatch:
        raise VideoDecodeError(path, f"decoding is not repeatable ({mismatch})") from None
    return _finish(path, decoded, indices, timestamps, count)


def probe_video(
    path: PathLike, count_frames: bool = False, *, limits: VideoLimits = DEFAULT_LIMITS
) -> VideoInfo:
    """Metadata of a video, checking that its first frame decodes.

    `count_frames=True` decodes the whole clip to count its frames exactly (container counts can be
    missing or wrong); otherwise `num_frames` is the container's count, or the number of packets.
    Width and height are the file's own (before any downscaling to `limits.max_frame_pixels`).
    """
    check_file(path, limits)
    with open_video(path, limits) as container:
        stream = video_stream(path, container)
        fps = float(stream.average_rate) if stream.average_rate else None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = None
        num_frames = stream.frames or None
        codec = stream.codec_context.name
        pix_fmt = stream.codec_context.pix_fmt
        try:
            first = next(container.decode(stream), None)
        except (av.FFmpegError, OSError) as error:
            raise _decode_failure(path, stream, error, limits) from None
        if first is None:
            raise VideoDecodeError(path, "the video stream has no decodable frames")
        check_frame_size(path, first.width, first.height, limits)
        rotation = _rotation(first, stream)
        width, height = first.width, first.height
    if rotation in (90, 270):
        width, height = height, width
    if count_frames:
        timeline, num_frames = _decoded_timeline(path, limits)
        if timeline is not None:
            duration = timeline.duration
    elif num_frames is None:
        timeline = _packet_timeline(path, limits)
        num_frames = len(timeline.pts) if timeline is not None else None
    return VideoInfo(str(path), num_frames, fps, duration, width, height, rotation, codec, pix_fmt)


def iter_video_frames(path: PathLike, limits: VideoLimits = DEFAULT_LIMITS) -> Iterator[av.VideoFrame]:
    """Every frame of the clip in order, decoded with threads, each checked against `limits` as it comes
    (frame count, duration, frame size); for tools that read whole clips (e.g. `data clean`)."""
    with open_video(path, limits) as container:
        stream = video_stream(path, container)
        stream.thread_type = "AUTO"
        span = _SpanCheck(path, stream.time_base, limits)
        count = 0
        try:
            for frame in container.decode(stream):
                check_frame_size(path, frame.width, frame.height, limits)
                count += 1
                span.add(count, frame.pts)
                yield frame
        except (av.FFmpegError, OSError) as error:
            raise _decode_failure(path, stream, error, limits, f" after {count} frames") from None


def frame_to_rgb(frame: av.VideoFrame, limits: VideoLimits = DEFAULT_LIMITS) -> np.ndarray:
    """uint8 (H, W, 3) RGB of a decoded frame as stored (not rotated), downscaled to `max_frame_pixels`."""
    width, height = _fit(frame.width, frame.height, limits.max_frame_pixels)
    if (width, height) == (frame.width, frame.height):
        return frame.to_ndarray(format="rgb24")
    return frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA")


def upright(rgb: np.ndarray, frame: av.VideoFrame, stream: av.VideoStream) -> np.ndarray:
    """`rgb` (a `frame_to_rgb` of `frame`) turned upright, as the frame's display matrix (or the stream's
    legacy `rotate` tag) says; for tools that read frames one by one (the live coach, workout windows)."""
    return np.rot90(rgb, k=_rotation(frame, stream) // 90)


# ---- internals ----------------------------------------------------------------------------------------------


class _TimelineMismatch(Exception):
    """The decoder produced other frames than the timeline planned with."""


@dataclass(frozen=True)
class _Timeline:
    """When each frame is shown: strictly increasing presentation timestamps, and the end of the last frame
    (all in `time_base` units)."""

    pts: list[int]
    end: int
    time_base: Fraction
    keyframes: tuple[int, ...] = ()  # indices of the frames decoding can start from (known from packets)

    def indices(self, num_frames: int, sampling: FrameSampling = SEGMENT_CENTERS) -> list[int]:
        """For each sampling time, the frame on screen then (the last one starting at or before it).

        Segment centres, or times 1/fps apart from the first frame (see `fps_sample_positions`). Exact
        rational arithmetic, so that on a constant-rate clip segment centres equal `sample_frame_indices`.
        """
        start, span = self.pts[0], self.end - self.pts[0]
        if sampling.method == "fps":
            step = 1 / (Fraction(sampling.fps) * self.time_base)  # time_base units between samples
            times = [start + k * step for k in range(int((self.pts[-1] - start) / step) + 1)]
            times = [times[i] for i in fps_sample_positions(len(times), num_frames)]
        else:
            times = [start + Fraction((2 * i + 1) * span, 2 * num_frames) for i in range(num_frames)]
        return [max(0, bisect.bisect_right(self.pts, time) - 1) for time in times]

    def seconds(self, index: int) -> float:
        return float(self.pts[index] * self.time_base)

    @property
    def duration(self) -> float:
        return float((self.end - self.pts[0]) * self.time_base)

    def keyframe_before(self, index: int) -> int:
        """The last keyframe at or before frame `index` (0 when none is known)."""
        position = bisect.bisect_right(self.keyframes, index)
        return self.keyframes[position - 1] if position else 0


def _decode_failure(
    path: PathLike, stream: av.VideoStream, error: Exception, limits: VideoLimits, after: str = ""
) -> VideoDecodeError:
    """The error for a decoder failure: the size limit when that is what (most likely) refused the frame."""
    if isinstance(error, av.ArgumentError) and not (
        stream.codec_context.width and stream.codec_context.height
    ):
        # The frame size was never learned: probing could not decode a frame either, which `max_pixels`
        # causes for a frame above the limit (an image's size is only known by decoding it).
        return VideoLimitError(
            path,
            f"its frames do not decode within the limit of {limits.max_source_pixels / 1e6:.0f} megapixels "
            "(VideoLimits.max_source_pixels): a frame larger than that (a huge image?), or corrupt data",
        )
    return VideoDecodeError(path, f"corrupt video data{after}: {error}")


def _packet_timeline(path: PathLike, limits: VideoLimits) -> _Timeline | None:
    """The timeline from the packets alone (no decoding).

    None when the packets do not carry what is needed (timestamps, distinct ones); the caller then learns
    the timeline by decoding. More packets or a longer span than `limits` allow is refused as it is seen.
    """
    with open_video(path, limits) as container:
        stream = video_stream(path, container)
        packets: list[tuple[int, bool]] = []
        ends: list[int] = []
        span = _SpanCheck(path, stream.time_base, limits)
        try:
            for packet in container.demux(stream):
                if packet.size == 0 or packet.is_discard:  # flush packets, edit-list trimmed frames
                    continue
                if packet.pts is None:
                    return None
                packets.append((packet.pts, packet.is_keyframe))
                span.add(len(packets), packet.pts)
                if packet.duration:
                    ends.append(packet.pts + packet.duration)
        except (av.FFmpegError, OSError) as error:
            raise VideoDecodeError(path, f"corrupt container: {error}") from None
        time_base = stream.time_base
    packets.sort()
    pts = [p for p, _ in packets]
    if not pts or time_base is None or len(set(pts)) != len(pts):
        return None
    end = max(ends) if ends else pts[-1] + _typical_step(pts)
    keyframes = tuple(index for index, (_, is_keyframe) in enumerate(packets) if is_keyframe)
    return _Timeline(pts, max(end, pts[-1] + 1), Fraction(time_base), keyframes)


def _decoded_timeline(path: PathLike, limits: VideoLimits) -> tuple[_Timeline | None, int]:
    """Decode every frame once: (the timeline, or None when the frames lack increasing timestamps; the count)."""
    pts: list[int | None] = []
    last_duration = 0
    with open_video(path, limits) as container:
        stream = video_stream(path, container)
        time_base = stream.time_base
        span = _SpanCheck(path, time_base, limits)
        try:
            for frame in container.decode(stream):
                check_frame_size(path, frame.width, frame.height, limits)
                pts.append(frame.pts)
                span.add(len(pts), frame.pts)
                last_duration = frame.duration or 0
        except (av.FFmpegError, OSError) as error:
            raise _decode_failure(path, stream, error, limits, f" after {len(pts)} frames") from None
    if not pts:
        raise VideoDecodeError(path, "the video stream has no decodable frames")
    known = [p for p in pts if p is not None]
    if time_base is None or len(known) < len(pts) or any(a >= b for a, b in itertools.pairwise(known)):
        return None, len(pts)
    end = known[-1] + (last_duration or _typical_step(known))
    return _Timeline(known, end, Fraction(time_base)), len(pts)


class _SpanCheck:
    """Counts frames (or packets) as they are read and refuses the clip as soon as it exceeds the frame
    count or duration limit: the container's metadata can be missing or lie."""

    def __init__(self, path: PathLike, time_base: Fraction | None, limits: VideoLimits) -> None:
        self.path, self.time_base, self.limits = path, time_base, limits
        self.first: int | None = None

    def add(self, count: int, pts: int | None) -> None:
        check_frame_count(self.path, count, self.limits)
        if pts is None or self.time_base is None:
            return
        self.first = pts if self.first is None else min(self.first, pts)
        check_duration(self.path, float((pts - self.first) * self.time_base), self.limits)


def _typical_step(pts: list[int]) -> int:
    steps = [b - a for a, b in itertools.pairwise(pts)]
    return int(np.median(steps)) if steps else 1


def _decode_indices(
    path: PathLike, indices: list[int], timeline: _Timeline | None, limits: VideoLimits
) -> np.ndarray:
    """The wanted frames as one uint8 (len(indices), H, W, 3) RGB array, decoding no further than the last.

    With a timeline (from the packets), decoded frames are known by their timestamps and decoding jumps
    to the keyframe before a wanted frame when that skips frames; a frame the timeline does not expect, or
    a wanted one that never comes, is a `_TimelineMismatch`. Without one, frames are counted from the start.
    """
    sink = _FrameSink(path, indices, limits)
    with open_video(path, limits) as container:
        stream = video_stream(path, container)
        try:
            if timeline is None:
                _decode_counting(container, stream, sink)
            else:
                _decode_by_timestamp(container, stream, timeline, sink)
        except (av.FFmpegError, OSError) as error:
            raise _decode_failure(path, stream, error, limits) from None
    if sink.output is None:
        raise VideoDecodeError(path, "the video stream has no decodable frames")
    missing = sorted(set(indices) - sink.filled)
    if missing:
        raise _TimelineMismatch(f"frame {missing[0]} was wanted but not decoded")
    return sink.output


def _decode_counting(container, stream, sink: _FrameSink) -> None:
    last = max(sink.rows)
    for index, frame in enumerate(container.decode(stream)):
        if index in sink.rows:
            sink.put(index, frame, stream)
        if index == last:
            break


def _decode_by_timestamp(container, stream, timeline: _Timeline, sink: _FrameSink) -> None:
    index_of = {pts: index for index, pts in enumerate(timeline.pts)}
    decoded = None  # the running decoder (a generator of frames)
    previous = -1  # index of the last frame decoded
    start = 0  # first trustworthy frame of the current run (frames before a keyframe may not decode right)
    for target in sorted(sink.rows):
        if target in sink.filled:
            continue
        keyframe = timeline.keyframe_before(target)
        if decoded is None or keyframe > previous + 1:
            if keyframe > 0:
                container.seek(timeline.pts[keyframe], stream=stream, backward=True, any_frame=False)
            decoded, previous, start = container.decode(stream), None, keyframe
        for frame in decoded:
            index = index_of.get(frame.pts)
            if index is None or (previous is not None and index != previous + 1):
                raise _TimelineMismatch(f"decoded a frame at pts {frame.pts} after frame {previous}")
            previous = index
            if index >= start and index in sink.rows:
                sink.put(index, frame, stream)
            if index >= target:
                break
        else:
            break  # the stream ended early: the caller sees what is missing


class _FrameSink:
    """Decoded frames → upright uint8 RGB, written straight into the output array (a frame wanted at several
    positions is copied into each), so memory holds the result and one frame, never a second full copy.

    All frames come out at the size of the first (should the stream change resolution midway), downscaled
    (aspect kept) to fit `limits.max_frame_pixels` while converting; frames above `max_source_pixels` are
    refused.
    """

    def __init__(self, path: PathLike, indices: list[int], limits: VideoLimits) -> None:
        self.path, self.limits = path, limits
        self.rows: dict[int, list[int]] = {}  # frame index → output rows
        for row, index in enumerate(indices):
            self.rows.setdefault(index, []).append(row)
        self.count = len(indices)
        self.filled: set[int] = set()
        self.size: tuple[int, int] | None = None  # (width, height) frames are converted to
        self.output: np.ndarray | None = None

    def put(self, index: int, frame: av.VideoFrame, stream: av.VideoStream) -> None:
        check_frame_size(self.path, frame.width, frame.height, self.limits)
        self.size = self.size or _fit(frame.width, frame.height, self.limits.max_frame_pixels)
        if (frame.width, frame.height) == self.size:
            rgb = frame.to_ndarray(format="rgb24")
        else:
            rgb = frame.to_ndarray(
                format="rgb24", width=self.size[0], height=self.size[1], interpolation="AREA"
            )
        upright = np.rot90(rgb, k=_rotation(frame, stream) // 90)
        if self.output is None:
            self.output = np.empty((self.count, *upright.shape), dtype=np.uint8)
        elif upright.shape != self.output.shape[1:]:
            raise VideoDecodeError(self.path, f"frame {index} is turned differently from the first frame")
        for row in self.rows[index]:
            self.output[row] = upright
        self.filled.add(index)


def _fit(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """The largest size of the same aspect within `max_pixels` (the size itself when it fits)."""
    if width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))


def _rotation(frame: av.VideoFrame, stream: av.VideoStream) -> int:
    """Counter-clockwise degrees that show the frame upright, snapped to a multiple of 90."""
    degrees = frame.rotation  # from the display matrix (FFmpeg's av_display_rotation_get)
    if not degrees or not math.isfinite(degrees):
        # Legacy tag from old muxers: clockwise degrees.
        tags = {key.lower(): value for key, value in stream.metadata.items()}
        try:
            degrees = -float(tags.get("rotate", 0))
        except ValueError:
            degrees = 0
    return round(degrees / 90) % 4 * 90


_warned_short: set[str] = set()  # clips already warned about in this process (training reads them each epoch)


def _finish(
    path: PathLike, frames: np.ndarray, indices: list[int], timestamps: list[float | None], available: int
) -> DecodedFrames:
    if available < len(indices) and str(path) not in _warned_short:
        _warned_short.add(str(path))
        logger.warning(
            "%s: the clip has only %d frame%s but %d are read, so frames repeat (a still image or a very "
            "short clip?)", path, available, "" if available == 1 else "s", len(indices),
        )  # fmt: skip
    return DecodedFrames(frames=frames, indices=list(indices), timestamps=timestamps)
