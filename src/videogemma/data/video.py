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
"""

from __future__ import annotations

import bisect
import itertools
import math
import os
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from videogemma.data.errors import VideoDecodeError

PathLike = str | os.PathLike

# How the frames of a clip are chosen (`FrameSampling`, the config's `frame_sampling`).
FRAME_SAMPLINGS = ("segment_centers", "fps")


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
    path: PathLike, num_frames: int, *, sampling: FrameSampling = SEGMENT_CENTERS
) -> np.ndarray:
    """`num_frames` uniformly spaced real frames of the clip: uint8 (num_frames, H, W, 3) RGB, upright."""
    return decode_frames(path, num_frames, sampling=sampling).frames


def decode_frames(
    path: PathLike, num_frames: int, *, sampling: FrameSampling = SEGMENT_CENTERS
) -> DecodedFrames:
    """`read_video_frames` plus the index and timestamp of every frame returned."""
    if num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    _check_file(path)

    timeline = _packet_timeline(path)
    if timeline is not None:
        indices = timeline.indices(num_frames, sampling)
        try:
            frames = _decode_indices(path, indices, timeline)
            return _assemble(frames, indices, [timeline.seconds(k) for k in indices])
        except _TimelineMismatch:
            pass  # the packets did not describe the decoded frames; learn the real timeline below

    timeline, count = _decoded_timeline(path)
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
        frames = _decode_indices(path, indices, None)
    except _TimelineMismatch as mismatch:
        raise VideoDecodeError(path, f"decoding is not repeatable ({mismatch})") from None
    return _assemble(frames, indices, timestamps)


def probe_video(path: PathLike, count_frames: bool = False) -> VideoInfo:
    """Metadata of a video, checking that its first frame decodes.

    `count_frames=True` decodes the whole clip to count its frames exactly (container counts can be
    missing or wrong); otherwise `num_frames` is the container's count, or the number of packets.
    """
    _check_file(path)
    with _open(path) as container:
        stream = _video_stream(path, container)
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
            raise VideoDecodeError(path, f"corrupt video data: {error}") from None
        if first is None:
            raise VideoDecodeError(path, "the video stream has no decodable frames")
        rotation = _rotation(first, stream)
        width, height = first.width, first.height
    if rotation in (90, 270):
        width, height = height, width
    if count_frames:
        timeline, num_frames = _decoded_timeline(path)
        if timeline is not None:
            duration = timeline.duration
    elif num_frames is None:
        timeline = _packet_timeline(path)
        num_frames = len(timeline.pts) if timeline is not None else None
    return VideoInfo(str(path), num_frames, fps, duration, width, height, rotation, codec, pix_fmt)


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


def _check_file(path: PathLike) -> None:
    if not os.path.exists(path):
        raise VideoDecodeError(path, "file not found")
    if not os.path.isfile(path):
        raise VideoDecodeError(path, "not a regular file")
    if os.path.getsize(path) == 0:
        raise VideoDecodeError(path, "empty file (0 bytes)")


def _open(path: PathLike) -> av.container.InputContainer:
    try:
        return av.open(str(path), metadata_errors="replace")
    except (av.FFmpegError, OSError) as error:
        raise VideoDecodeError(path, f"not a readable video file: {error}") from None


def _video_stream(path: PathLike, container: av.container.InputContainer) -> av.VideoStream:
    if not container.streams.video:
        raise VideoDecodeError(path, "the file has no video stream")
    return container.streams.video[0]


def _packet_timeline(path: PathLike) -> _Timeline | None:
    """The timeline from the packets alone (no decoding).

    None when the packets do not carry what is needed (timestamps, distinct ones); the caller then learns
    the timeline by decoding.
    """
    with _open(path) as container:
        stream = _video_stream(path, container)
        packets: list[tuple[int, bool]] = []
        ends: list[int] = []
        try:
            for packet in container.demux(stream):
                if packet.size == 0 or packet.is_discard:  # flush packets, edit-list trimmed frames
                    continue
                if packet.pts is None:
                    return None
                packets.append((packet.pts, packet.is_keyframe))
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


def _decoded_timeline(path: PathLike) -> tuple[_Timeline | None, int]:
    """Decode every frame once: (the timeline, or None when the frames lack increasing timestamps; the count)."""
    pts: list[int | None] = []
    last_duration = 0
    with _open(path) as container:
        stream = _video_stream(path, container)
        time_base = stream.time_base
        try:
            for frame in container.decode(stream):
                pts.append(frame.pts)
                last_duration = frame.duration or 0
        except (av.FFmpegError, OSError) as error:
            raise VideoDecodeError(path, f"corrupt video data after {len(pts)} frames: {error}") from None
    if not pts:
        raise VideoDecodeError(path, "the video stream has no decodable frames")
    known = [p for p in pts if p is not None]
    if time_base is None or len(known) < len(pts) or any(a >= b for a, b in itertools.pairwise(known)):
        return None, len(pts)
    end = known[-1] + (last_duration or _typical_step(known))
    return _Timeline(known, end, Fraction(time_base)), len(pts)


def _typical_step(pts: list[int]) -> int:
    steps = [b - a for a, b in itertools.pairwise(pts)]
    return int(np.median(steps)) if steps else 1


def _decode_indices(path: PathLike, indices: list[int], timeline: _Timeline | None) -> dict[int, np.ndarray]:
    """RGB arrays of the wanted frames, by index, decoding no further than the last one.

    With a timeline (from the packets), decoded frames are known by their timestamps and decoding jumps
    to the keyframe before a wanted frame when that skips frames; a frame the timeline does not expect, or
    a wanted one that never comes, is a `_TimelineMismatch`. Without one, frames are counted from the start.
    """
    to_rgb = _RgbConverter()
    with _open(path) as container:
        stream = _video_stream(path, container)
        try:
            if timeline is None:
                frames = _decode_counting(container, stream, indices, to_rgb)
            else:
                frames = _decode_by_timestamp(container, stream, indices, timeline, to_rgb)
        except (av.FFmpegError, OSError) as error:
            raise VideoDecodeError(path, f"corrupt video data: {error}") from None
    if not frames:
        raise VideoDecodeError(path, "the video stream has no decodable frames")
    missing = sorted(set(indices) - set(frames))
    if missing:
        raise _TimelineMismatch(f"frame {missing[0]} was wanted but not decoded")
    return frames


def _decode_counting(container, stream, indices: list[int], to_rgb: _RgbConverter) -> dict[int, np.ndarray]:
    wanted, last = set(indices), max(indices)
    frames: dict[int, np.ndarray] = {}
    for index, frame in enumerate(container.decode(stream)):
        if index in wanted:
            frames[index] = to_rgb(frame, stream)
        if index == last:
            break
    return frames


def _decode_by_timestamp(
    container, stream, indices: list[int], timeline: _Timeline, to_rgb: _RgbConverter
) -> dict[int, np.ndarray]:
    index_of = {pts: index for index, pts in enumerate(timeline.pts)}
    wanted = set(indices)
    frames: dict[int, np.ndarray] = {}
    decoded = None  # the running decoder (a generator of frames)
    previous = -1  # index of the last frame decoded
    start = 0  # first trustworthy frame of the current run (frames before a keyframe may not decode right)
    for target in sorted(wanted):
        if target in frames:
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
            if index >= start and index in wanted:
                frames[index] = to_rgb(frame, stream)
            if index >= target:
                break
        else:
            break  # the stream ended early: the caller sees what is missing
    return frames


class _RgbConverter:
    """Decoded frame → upright uint8 RGB array, all at the size of the first one (should the stream change
    resolution midway)."""

    def __init__(self) -> None:
        self.size: tuple[int, int] | None = None

    def __call__(self, frame: av.VideoFrame, stream: av.VideoStream) -> np.ndarray:
        self.size = self.size or (frame.width, frame.height)
        if (frame.width, frame.height) != self.size:
            frame = frame.reformat(width=self.size[0], height=self.size[1])
        return np.rot90(frame.to_ndarray(format="rgb24"), k=_rotation(frame, stream) // 90)


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


def _assemble(
    frames: dict[int, np.ndarray], indices: list[int], timestamps: list[float | None]
) -> DecodedFrames:
    stacked = np.stack([frames[k] for k in indices])  # copies: contiguous even after rot90
    return DecodedFrames(frames=stacked, indices=list(indices), timestamps=timestamps)
