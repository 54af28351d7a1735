"""What one request, and the server as a whole, may cost: every bound in one dataclass.

Each field is a `videogemma serve` flag of the same name (`--max-video-bytes`), the `code` of the error a
request (or coaching stream) beyond it gets, and its entry in `GET /health` (with the HTTP status or the
WebSocket close code it answers), so a client can tell which limit it met. Video bounds tighten the model's own `VideoLimits` (saved with its processor), never
loosen them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from videogemma.processing.video_source import VideoLimits

MIB = 2**20


@dataclass(frozen=True)
class ServeLimits:
    max_video_bytes: int = field(
        default=64 * MIB,
        metadata={"help": "largest video, uploaded (decoded size) or under --media-root, in bytes"},
    )
    max_video_seconds: float = field(default=600.0, metadata={"help": "longest video, in seconds"})
    max_video_frames: int = field(default=36_000, metadata={"help": "most frames a video file may hold"})
    max_prompt_tokens: int = field(
        default=2048,
        metadata={"help": "most prompt tokens besides the video's (the model's context also bounds it)"},
    )
    max_tokens: int = field(default=512, metadata={"help": "largest max_tokens a request may ask"})
    default_max_tokens: int = field(default=128, metadata={"help": "answer length when a request sets none"})
    max_queue: int = field(
        default=32,
        metadata={"help": "requests handled at once (decoding, waiting, generating); one more gets 503"},
    )
    max_batch_size: int = field(
        default=8, metadata={"help": "requests generated together in one batch (1: no batching)"}
    )
    batch_wait_ms: float = field(
        default=10.0, metadata={"help": "how long a batch waits for more requests after its first, in ms"}
    )
    decode_workers: int = field(
        default=2, metadata={"help": "videos decoded at once (others wait their turn)"}
    )
    max_coach_sessions: int = field(
        default=2, metadata={"help": "coaching streams run at once (/v1/coach/stream); one more is refused"}
    )
    max_frame_bytes: int = field(
        default=2 * MIB,
        metadata={"help": "largest frame a coaching stream may send (a JPEG or RGB), in bytes"},
    )
    max_coach_fps: float = field(
        default=30.0, metadata={"help": "most frames per second of a coaching stream (by the frames' times)"}
    )
    max_coach_frames: int = field(default=108_000, metadata={"help": "most frames of one coaching stream"})
    max_coach_seconds: float = field(
        default=3600.0,
        metadata={"help": "longest coaching stream, in seconds (by its frames' times and by the clock)"},
    )

    def __post_init__(self) -> None:
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            positive = value >= 0 if spec.name == "batch_wait_ms" else value > 0
            if isinstance(value, bool) or not positive:
                raise ValueError(f"--{spec.name.replace('_', '-')} must be a positive number, got {value!r}")
        if self.default_max_tokens > self.max_tokens:
            raise ValueError(
                f"--default-max-tokens ({self.default_max_tokens}) cannot exceed --max-tokens ({self.max_tokens})"
            )

    @property
    def max_body_bytes(self) -> int:
        """A request body may hold one video as base64 (4 bytes per 3) and the messages' text."""
        return self.max_video_bytes * 4 // 3 + 4 + MIB

    def video_limits(self, model_limits: VideoLimits) -> VideoLimits:
        """The model's video limits, tightened by this server's."""
        return dataclasses.replace(
            model_limits,
            max_duration=min(model_limits.max_duration, self.max_video_seconds),
            max_frames=min(model_limits.max_frames, self.max_video_frames),
            max_file_bytes=min(model_limits.max_file_bytes, self.max_video_bytes),
        )

    def describe(self) -> dict[str, dict[str, Any]]:
        """Each limit's value, what it bounds and the status a request beyond it gets (for `/health`)."""
        described = {}
        for spec in dataclasses.fields(self):
            entry: dict[str, Any] = {"value": getattr(self, spec.name), "bounds": spec.metadata["help"]}
            if spec.name in LIMIT_STATUS:
                entry["status"] = LIMIT_STATUS[spec.name]
            if spec.name in LIMIT_CLOSE_CODE:
                entry["close_code"] = LIMIT_CLOSE_CODE[spec.name]
            described[spec.name] = entry
        return described


# The HTTP status of a request beyond each limit (the others are settings, never a refusal).
LIMIT_STATUS = {
    "max_video_bytes": 413,
    "max_video_seconds": 400,
    "max_video_frames": 400,
    "max_prompt_tokens": 400,
    "max_tokens": 400,
    "max_queue": 503,
}
# The WebSocket close code of a coaching stream beyond each limit (RFC 6455: 1009 message too big, 1013 try
# again later, 1008 policy violation); `max_tokens` and `max_prompt_tokens` bound a stream's start as well.
LIMIT_CLOSE_CODE = {
    "max_coach_sessions": 1013,
    "max_frame_bytes": 1009,
    "max_coach_fps": 1008,
    "max_coach_frames": 1008,
    "max_coach_seconds": 1008,
    "max_tokens": 1008,
    "max_prompt_tokens": 1008,
}
# `VideoLimits` fields, as the processor's errors name them, and the server limit that sets each.
VIDEO_LIMIT_FLAGS = {
    "max_duration": "max_video_seconds",
    "max_frames": "max_video_frames",
    "max_file_bytes": "max_video_bytes",
}
