"""Opening a video safely: only self-contained media, within bounds, before anything is decoded.

Every file goes through one opening function (`open_video`), which refuses before decoding anything:
- containers that reference other files (HLS playlists, concat lists, DASH manifests, image sequences):
  only self-contained formats are opened (`SELF_CONTAINED_FORMATS`; FFmpeg's `format_whitelist` stops any
  other demuxer before it reads its header, i.e. before it opens a file the playlist names), and text files
  are refused outright;
- anything beyond `VideoLimits`: file size, coded frame size, duration, frame count. Frames larger than
  `max_frame_pixels` are downscaled while they are converted to RGB (`video.py`), so memory stays bounded
  (the 12000² PNG renamed `.mp4` is refused in milliseconds instead of decoding into gigabytes).
"""

from __future__ import annotations

import codecs
import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from videogemma.errors import VideoDecodeError, VideoLimitError

if TYPE_CHECKING:  # PyAV (FFmpeg) loads when a video is opened, not with the command line
    import av

PathLike = str | os.PathLike

# FFmpeg demuxers of self-contained media (each reads only the file it is given). Playlists and lists (hls,
# dash, concat, ...) open the files they name, wherever those are; `image2` reads a numbered sequence of
# files when the name holds a pattern such as %03d. Images in their `*_pipe` form are single files.
SELF_CONTAINED_FORMATS = (
    "mov", "mp4", "matroska", "webm", "avi", "mpegts", "mpeg", "flv", "asf", "ogg", "ivf", "obu", "h264",
    "hevc", "m4v", "mjpeg", "yuv4mpegpipe", "gif", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe",
    "tiff_pipe",
)  # fmt: skip
_SNIFF_BYTES = 4096  # how much of a file is read to tell a text file (playlist, list) from media
_TEXT_KINDS = (
    (b"#EXTM3U", "an HLS playlist"),
    (b"ffconcat", "an ffconcat list"),
    (b"<?xml", "an XML manifest"),
)


@dataclass(frozen=True)
class VideoLimits:
    """Bounds on what a video may cost to read; a file beyond one is refused (`VideoLimitError`), except
    frames above `max_frame_pixels`, which are downscaled (aspect kept) while being converted to RGB.

    The defaults sit far above any real exercise clip (QVED: 640×480, ~5 s, ~1 MB) and above what phones
    and cameras record, so real clips decode exactly as they are; they exist to keep a hostile or broken file
    from taking the machine's memory or hours of decoding. Memory per clip is then at most about
    `frames read × max_frame_pixels × 3` bytes (8 × 26.5 MB for the `tiny` preset) plus one decoded frame.
    """

    # DCI 4K (4096×2160), the largest frame phones and consumer cameras record: one RGB frame is 26.5 MB.
    max_frame_pixels: int = 4096 * 2160
    # 8K UHD (7680×4320), the largest video standard. Bigger frames are refused, not downscaled: the decoder
    # allocates a whole frame before it can be scaled (a 12000² PNG: 0.4-0.9 GB per frame).
    max_source_pixels: int = 7680 * 4320
    max_duration: float = 3600.0  # seconds: a whole workout session; exercise clips last seconds
    max_frames: int = 216_000  # an hour at 60 frames/s
    max_file_bytes: int = 16 * 2**30  # an hour of 4K phone video at ~36 Mbit/s

    def __post_init__(self) -> None:
        for limit in dataclasses.fields(self):
            value = getattr(self, limit.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"VideoLimits.{limit.name} must be a positive number, got {value!r}")
        if self.max_frame_pixels > self.max_source_pixels:
            raise ValueError(
                f"VideoLimits.max_frame_pixels ({self.max_frame_pixels}) cannot exceed max_source_pixels "
                f"({self.max_source_pixels}): frames above the latter are refused, not downscaled"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_value(cls, value: VideoLimits | Mapping[str, Any] | None) -> VideoLimits:
        """Limits from a `VideoLimits`, a mapping of some of its fields (e.g. a saved processor config), or
        None (the defaults). Unknown keys are an error naming them."""
        if value is None:
            return DEFAULT_LIMITS
        if isinstance(value, VideoLimits):
            return value
        unknown = sorted(set(value) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            names = sorted(f.name for f in dataclasses.fields(cls))
            raise ValueError(f"unknown video limit(s) {unknown}; known: {names}")
        return cls(**value)


DEFAULT_LIMITS = VideoLimits()


def open_video(path: PathLike, limits: VideoLimits = DEFAULT_LIMITS) -> av.container.InputContainer:
    """The one way this package opens a video file (a context manager, like `av.open`).

    Refused here, before any frame is decoded: a text file (playlist, file list), a container format that
    is not self-contained, and a file whose metadata exceeds `limits` (file size, frame size, duration,
    frame count). Only the `file` protocol is allowed, and the path is made absolute, so that a name such as
    `concat:a|b` or `http:...` is a file name, never a protocol.
    """
    import av

    check_file(path, limits)
    _refuse_text(path)
    # `max_pixels` makes FFmpeg's decoders refuse a bigger frame before allocating it, both while the
    # stream is probed (which decodes a first frame of an image) and when decoding (set again below).
    options = {
        "format_whitelist": ",".join(SELF_CONTAINED_FORMATS),
        "protocol_whitelist": "file",
        "max_pixels": str(limits.max_source_pixels),
    }
    try:
        container = av.open(os.path.abspath(path), metadata_errors="replace", options=options)
    except av.ArgumentError:
        # What FFmpeg answers when the format it probed is off the whitelist: a playlist or an audio file, but
        # also a corrupt file whose bytes happen to look like some other format (random bytes probe as `lrc`).
        raise VideoDecodeError(
            path,
            "not a readable video file: FFmpeg found no accepted container format in it (mp4/mov, mkv/webm, "
            "avi, mpeg-ts, ...: only self-contained video files; playlists and lists that name other files "
            "are refused)",
        ) from None
    except (av.FFmpegError, OSError) as error:
        raise VideoDecodeError(path, f"not a readable video file: {error}") from None
    try:
        _check_metadata(path, container, limits)
    except BaseException:
        container.close()
        raise
    codec = container.streams.video[0].codec_context
    codec.options = {**codec.options, "max_pixels": str(limits.max_source_pixels)}
    return container


def check_file(path: PathLike, limits: VideoLimits = DEFAULT_LIMITS) -> None:
    if not os.path.exists(path):
        raise VideoDecodeError(path, "file not found")
    if not os.path.isfile(path):
        raise VideoDecodeError(path, "not a regular file")
    size = os.path.getsize(path)
    if size == 0:
        raise VideoDecodeError(path, "empty file (0 bytes)")
    if size > limits.max_file_bytes:
        raise VideoLimitError(
            path,
            f"the file is {size / 2**30:.1f} GiB, above the limit of {limits.max_file_bytes / 2**30:.1f} GiB "
            "(VideoLimits.max_file_bytes)",
        )


def _refuse_text(path: PathLike) -> None:
    """Media containers are binary; a file whose start is plain text is a playlist, a list or not a video."""
    try:
        with open(path, "rb") as file:
            start = file.read(_SNIFF_BYTES)
    except OSError as error:
        raise VideoDecodeError(path, f"cannot read the file: {error}") from None
    kind = next((name for magic, name in _TEXT_KINDS if start.lstrip().startswith(magic)), None)
    if kind is None:
        if start.startswith(b"YUV4MPEG2") or not _is_text(start):  # y4m: a text header, then raw frames
            return
        kind = "a text file"
    raise VideoDecodeError(
        path,
        f"{kind}, not a video: playlists and lists that name other files are refused; give the media file",
    )


def _is_text(data: bytes) -> bool:
    try:  # incremental: a character cut at the end of the sample is not a decoding error
        text = codecs.getincrementaldecoder("utf-8")().decode(data, final=False)
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\t\r\n" for c in text)


def _check_metadata(path: PathLike, container: av.container.InputContainer, limits: VideoLimits) -> None:
    """Refuse what the container says is beyond `limits` (what it cannot say is checked while reading)."""
    import av

    stream = video_stream(path, container)
    check_frame_size(path, stream.codec_context.width, stream.codec_context.height, limits)
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    else:
        duration = container.duration / av.time_base if container.duration is not None else None
    if duration is not None:
        check_duration(path, duration, limits)
    if stream.frames:
        check_frame_count(path, stream.frames, limits)


def check_frame_size(path: PathLike, width: int | None, height: int | None, limits: VideoLimits) -> None:
    if width and height and width * height > limits.max_source_pixels:
        raise VideoLimitError(
            path,
            f"frames are {width}×{height} ({width * height / 1e6:.0f} megapixels), above the limit of "
            f"{limits.max_source_pixels / 1e6:.0f} megapixels (VideoLimits.max_source_pixels): one decoded "
            f"frame alone would take {width * height * 3 / 2**20:.0f} MB or more",
        )


def check_duration(path: PathLike, seconds: float, limits: VideoLimits) -> None:
    if seconds > limits.max_duration:
        raise VideoLimitError(
            path,
            f"the clip lasts {seconds:.0f} s, above the limit of {limits.max_duration:.0f} s "
            "(VideoLimits.max_duration)",
        )


def check_frame_count(path: PathLike, count: int, limits: VideoLimits) -> None:
    if count > limits.max_frames:
        raise VideoLimitError(
            path, f"the clip has more than {limits.max_frames} frames (VideoLimits.max_frames)"
        )


def video_stream(path: PathLike, container: av.container.InputContainer) -> av.VideoStream:
    if not container.streams.video:
        raise VideoDecodeError(path, "the file has no video stream")
    return container.streams.video[0]
