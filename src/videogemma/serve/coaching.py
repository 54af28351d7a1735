"""The coaching stream: `WS /v1/coach/stream` runs the live coach on a client's camera frames.

The client opens the WebSocket and sends, in order:
1. a start message (text, JSON): `{"type": "start", "model", "prompt", "window", "stride", "policy",
   "repeat_after", "interval", "confirm", "max_tokens", "realtime", "format", "width", "height", "api_key"}`,
   every field but `type` optional (`CoachStart`); `api_key` is for browsers, which cannot send the
   `Authorization: Bearer` header other clients send;
2. frames (binary): 8 bytes, the frame's time in seconds on the client's clock (a little-endian IEEE
   double), then the image: a JPEG (`format` "jpeg", the default) or width × height × 3 RGB bytes ("rgb24");
3. `{"type": "end"}` (text) when it has no more frames.

The server answers `{"type": "ready", ...}` (the settings it runs, the frame step the coach samples at and
the limits), then as the coach runs `{"type": "window", ...}` for each window it ran and
`{"type": "feedback", "t", "text", "exercise", "window", "latency_s"}` for each feedback said, and after
`end`, once the due windows have run, `{"type": "summary", ...}` and a normal close (1000). Times are on
the client's clock: `t` is the window's end plus the time the model took (`coach.session`).

The coach is the `videogemma coach` loop (`coach.session.CoachSession`: its windows, emission policy and
emissions) reading a `coach.pushed.PushedFrames` source in a thread of its own, so the event loop only
receives, checks and queues frames. With `realtime` (the default, as for a camera) the model runs on the
newest due window and skips those that fell due while it was busy; with `"realtime": false` every window
runs and the frames wait for the model (the client is slowed down, as a file upload may be).

A refusal is `{"type": "error", "code", "message"}` and a close with a code saying whose fault it is (and
the error's code as the reason): 1008 for a bad key, message or setting and the limits on a stream's fps,
frames and length, 1009 for a frame above `max_frame_bytes`, 1003 for a frame that is not the image it
should be, 1013 when `max_coach_sessions` streams already run, 1011 when the model fails. A bad stream
ends only itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import struct
import threading
import uuid
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from videogemma.coach.commands import DEFAULT_STRIDE_S, DEFAULT_WINDOW_S
from videogemma.coach.policy import make_policy
from videogemma.coach.pushed import FrameError, PushedFrame, PushedFrames
from videogemma.coach.session import DEFAULT_MAX_NEW_TOKENS, CoachSession, CoachSettings, Emission
from videogemma.errors import PromptTooLongError, VideoGemmaDataError
from videogemma.inference.generate import GenerationSettings
from videogemma.serve.batching import ServedModel
from videogemma.serve.limits import ServeLimits
from videogemma.serve.protocol import ApiError

logger = logging.getLogger(__name__)

COACH_PATH = "/v1/coach/stream"
START_TIMEOUT_S = 10.0  # for the start message, after the connection opens
STALL_TIMEOUT_S = 10.0  # without a frame, a stream has stalled (a camera that stopped)
FRAME_TIME = struct.Struct("<d")
# RFC 6455 close codes.
NORMAL, UNSUPPORTED_DATA, POLICY, TOO_BIG, INTERNAL, TRY_AGAIN = 1000, 1003, 1008, 1009, 1011, 1013
_REASON_BYTES = 123  # the longest close reason a control frame holds


class StreamError(Exception):
    """A coaching stream refused or failed: an error message, then a close with `close_code`."""

    def __init__(self, close_code: int, code: str, message: str) -> None:
        super().__init__(message)
        self.close_code, self.code, self.message = close_code, code, message


class CoachStart(BaseModel):
    """The start message; unknown fields are refused (a misspelt setting would otherwise be ignored)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["start"]
    model: str | None = None
    api_key: str | None = None
    prompt: str | None = Field(default=None, min_length=1)
    window: float = Field(default=DEFAULT_WINDOW_S, gt=0, le=60)
    stride: float = Field(default=DEFAULT_STRIDE_S, ge=0.1, le=60)
    policy: Literal["change", "interval"] = "change"
    repeat_after: float = Field(default=10.0, gt=0)
    interval: float = Field(default=5.0, gt=0)
    confirm: int = Field(default=1, ge=1, le=100)
    max_tokens: int | None = Field(default=None, ge=1)
    realtime: bool = True
    format: Literal["jpeg", "rgb24"] = "jpeg"
    width: int | None = Field(default=None, ge=1)
    height: int | None = Field(default=None, ge=1)


class CoachSlots:
    """How many coaching streams run; beyond `limit`, refused. A slot is freed when its coach's thread ends
    (not when the client leaves), so the bound holds for the model's work."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self._lock = threading.Lock()

    def take(self) -> Callable[[], None]:
        with self._lock:
            if self.active >= self.limit:
                raise StreamError(
                    TRY_AGAIN,
                    "max_coach_sessions",
                    f"the server runs {self.active} coaching streams, its limit (max_coach_sessions); "
                    "retry later",
                )
            self.active += 1
        released = threading.Event()

        def release() -> None:
            with self._lock:
                if not released.is_set():
                    released.set()
                    self.active -= 1

        return release


async def coach_stream(
    websocket: WebSocket,
    served_for: Callable[[str | None], ServedModel],
    slots: CoachSlots,
    limits: ServeLimits,
    api_key: str | None,
) -> None:
    """One coaching stream, from its start message to its summary; `served_for(name)` picks the model."""
    await websocket.accept()
    try:
        start = await _start_message(websocket)
        _check_key(websocket, start, api_key)
        try:
            served = served_for(start.model)
        except ApiError as error:
            raise StreamError(POLICY, error.code or "invalid_message", error.message) from None
        settings, policy = coach_settings(start, limits)
        release = slots.take()
        stream = CoachStream(served, settings, policy, start, limits, release)
        try:
            await run_in_threadpool(stream.prepare)
            await websocket.send_json(stream.ready_message())
            stream.start()
            await asyncio.wait_for(_exchange(websocket, stream, start, limits), limits.max_coach_seconds)
        except asyncio.TimeoutError:
            raise StreamError(
                POLICY,
                "max_coach_seconds",
                f"the stream ran {limits.max_coach_seconds:g} s (max_coach_seconds)",
            ) from None
        finally:
            stream.stop()
        if websocket.client_state == WebSocketState.CONNECTED:
            await websocket.close(NORMAL)
    except StreamError as error:
        await _refuse(websocket, error)
    except WebSocketDisconnect:
        pass  # the client left: its coach stops (`stream.stop`)
    except Exception as error:  # this stream fails; the server goes on
        logger.exception("a coaching stream failed")
        await _refuse(
            websocket, StreamError(INTERNAL, "internal_error", f"unexpected {type(error).__name__}")
        )


async def _start_message(websocket: WebSocket) -> CoachStart:
    try:
        text = await asyncio.wait_for(websocket.receive_text(), START_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise StreamError(
            POLICY, "invalid_message", f"no start message within {START_TIMEOUT_S:g} s"
        ) from None
    except KeyError:  # a binary message first: receive_text finds no text
        raise StreamError(
            POLICY, "invalid_message", "the first message must be the JSON start message"
        ) from None
    try:
        return CoachStart.model_validate_json(text)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "start message"
        raise StreamError(POLICY, "invalid_message", f"start message: {where}: {first['msg']}") from None


def _check_key(websocket: WebSocket, start: CoachStart, api_key: str | None) -> None:
    if api_key is None:
        return
    header = websocket.headers.get("authorization", "")
    given = start.api_key if start.api_key is not None else header.removeprefix("Bearer ")
    if not hmac.compare_digest(given.encode(), api_key.encode()):
        raise StreamError(
            POLICY,
            "invalid_api_key",
            "a valid API key is needed: send the header Authorization: Bearer <key>, or api_key in the "
            "start message",
        )


def coach_settings(start: CoachStart, limits: ServeLimits) -> tuple[CoachSettings, Any]:
    """The coach's settings and emission policy from a start message, within the server's limits."""
    max_tokens = start.max_tokens or min(DEFAULT_MAX_NEW_TOKENS, limits.default_max_tokens)
    if max_tokens > limits.max_tokens:
        raise StreamError(
            POLICY,
            "max_tokens",
            f"max_tokens is {max_tokens}, above the server's limit of {limits.max_tokens}",
        )
    if start.format == "rgb24" and (start.width is None or start.height is None):
        raise StreamError(POLICY, "invalid_message", 'start message: format "rgb24" needs width and height')
    settings = CoachSettings(
        window=start.window,
        stride=start.stride,
        prompt=start.prompt,
        generation=GenerationSettings(
            max_new_tokens=max_tokens
        ),  # greedy: each window's answer is the model's
        stall_timeout=STALL_TIMEOUT_S,
    )
    return settings, make_policy(start.policy, start.repeat_after, start.interval, start.confirm)


class CoachStream:
    """One client's coach: the session in its own thread, and the messages it sends back to the event loop.
    It is the session's emission sink (`write`) and window callback (`_window`)."""

    def __init__(
        self,
        served: ServedModel,
        settings: CoachSettings,
        policy: Any,
        start: CoachStart,
        limits: ServeLimits,
        release: Callable[[], None],
    ) -> None:
        self.served, self.settings, self.policy, self.start_message = served, settings, policy, start
        self.limits = limits
        self.release = release
        self.source = PushedFrames(
            f"coaching stream {uuid.uuid4().hex[:8]}",
            limits=served.processor.video_limits,
            read_timeout=STALL_TIMEOUT_S,
            live=start.realtime,
        )
        self.messages: asyncio.Queue[dict[str, Any] | StreamError] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._session: CoachSession | None = None
        self._thread = threading.Thread(target=self._run, name="videogemma-coach", daemon=True)

    def prepare(self) -> None:
        """The session (the prompt encoded and bounded); in a worker thread."""
        processor = self.served.processor
        try:
            session = CoachSession(
                self.served.model,
                processor,
                self.settings,
                self.policy,
                log=self,
                on_window=self._window,
                tokenizer_lock=self.served.tokenizer_lock,
            )
        except PromptTooLongError as error:
            raise StreamError(POLICY, "context_length_exceeded", str(error)) from None
        except VideoGemmaDataError as error:  # the chat template's refusals (a <video> tag in the prompt)
            raise StreamError(POLICY, "invalid_message", f"start message: prompt: {error}") from None
        text_tokens = session.decoder.input_ids.shape[1] - processor.num_visual_tokens
        if text_tokens > self.limits.max_prompt_tokens:
            raise StreamError(
                POLICY,
                "max_prompt_tokens",
                f"the prompt is {text_tokens} tokens besides the video's, above the server's limit of "
                f"{self.limits.max_prompt_tokens} (max_prompt_tokens)",
            )
        self._session = session

    def ready_message(self) -> dict[str, Any]:
        schedule = self._session.schedule
        start, limits = self.start_message, self.limits
        return {
            "type": "ready",
            "model": self.served.name,
            "window": schedule.window,
            "stride": schedule.stride,
            "frames_per_window": schedule.num_frames,
            "frame_step": schedule.step,  # the coach takes a frame every frame_step seconds: send at least that
            "policy": start.policy,
            "realtime": start.realtime,
            "max_tokens": self.settings.generation.max_new_tokens,
            "limits": {
                "max_frame_bytes": limits.max_frame_bytes,
                "max_coach_fps": limits.max_coach_fps,
                "max_coach_frames": limits.max_coach_frames,
                "max_coach_seconds": limits.max_coach_seconds,
            },
        }

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """End the coach (its current window finishes; its slot is freed when its thread ends)."""
        self.source.close()
        if self._thread.ident is None:
            self.release()  # never started

    # ---- the coach's thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            stats = self._session.run(self.source)
            if stats.error:
                self._post(StreamError(POLICY, "stream_error", stats.error))
            else:
                self._post({"type": "summary", **summary(stats)})
        except Exception as error:  # the model failed: this stream ends, the server goes on
            logger.exception("the coach failed on a coaching stream")
            self._post(
                StreamError(INTERNAL, "coach_failed", f"the coach failed: {type(error).__name__}: {error}")
            )
        finally:
            self.release()

    def _post(self, message: dict[str, Any] | StreamError) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: the server is stopping
            self._loop.call_soon_threadsafe(self.messages.put_nowait, message)

    def _clock(self, seconds: float) -> float:
        """A session time as a time on the client's clock."""
        return round(seconds + (self.source.offset or 0.0), 3)

    def write(self, emission: Emission) -> None:
        self._post(
            {
                "type": "feedback",
                "t": self._clock(emission.time),
                "text": emission.text,
                "exercise": emission.exercise,
                "window": [self._clock(emission.window[0]), self._clock(emission.window[1])],
                "latency_s": emission.latency_s,
            }
        )

    def _window(self, result: Any, stats: Any) -> None:
        self._post(
            {
                "type": "window",
                "end": self._clock(result.window.end),
                "text": result.text,
                "said": result.emitted,
                "latency_s": result.latency_s,
                "windows_run": stats.windows_run,
                "windows_skipped": stats.windows_skipped,
            }
        )


def summary(stats: Any) -> dict[str, Any]:
    return {
        "windows_run": stats.windows_run,
        "windows_skipped": stats.windows_skipped,
        "feedbacks": stats.emitted,
        "frames": stats.frames_read,
        "seconds": round(stats.source_seconds, 3),
        "wall_seconds": round(stats.wall_seconds, 3),
        "frames_encoded": stats.frames_encoded,
        "frames_reused": stats.frames_reused,
        "answers_reused": stats.answers_reused,
    }


# ---- the event loop's side: frames in, messages out ---------------------------------------------------------


async def _exchange(
    websocket: WebSocket, stream: CoachStream, start: CoachStart, limits: ServeLimits
) -> None:
    """Receive frames until `end` while sending the coach's messages; returns once the summary is sent."""
    receiver = asyncio.create_task(_receive_frames(websocket, stream.source, start, limits))
    sender = asyncio.create_task(_send_messages(websocket, stream))
    tasks = {receiver, sender}
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # the first failure, if any
        await sender
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _send_messages(websocket: WebSocket, stream: CoachStream) -> None:
    while True:
        message = await stream.messages.get()
        if isinstance(message, StreamError):
            raise message
        await websocket.send_json(message)
        if message["type"] == "summary":
            return


class FrameCheck:
    """The checks of each frame as it arrives: size, time, rate, count, length, image header."""

    def __init__(self, start: CoachStart, limits: ServeLimits, video_limits: Any) -> None:
        self.start, self.limits, self.video_limits = start, limits, video_limits
        self.count = 0
        self.first: float | None = None
        self.previous = -math.inf

    def frame(self, data: bytes) -> PushedFrame:
        limits, number = self.limits, self.count + 1
        if len(data) - FRAME_TIME.size > limits.max_frame_bytes:
            raise StreamError(
                TOO_BIG,
                "max_frame_bytes",
                f"frame {number} is {len(data) - FRAME_TIME.size} bytes, above the limit of "
                f"{limits.max_frame_bytes} (max_frame_bytes)",
            )
        if len(data) <= FRAME_TIME.size:
            raise _bad_frame(number, "a frame is its time (8 bytes, a little-endian double) then the image")
        (time,) = FRAME_TIME.unpack_from(data)
        if not math.isfinite(time) or time < self.previous:
            raise _bad_frame(
                number, f"its time {time!r} is not a number of seconds after the last ({self.previous})"
            )
        self.first = time if self.first is None else self.first
        elapsed = time - self.first
        if number > limits.max_coach_frames:
            raise StreamError(
                POLICY, "max_coach_frames", f"more than {limits.max_coach_frames} frames (max_coach_frames)"
            )
        if elapsed > limits.max_coach_seconds:
            raise StreamError(
                POLICY,
                "max_coach_seconds",
                f"frame {number} is {elapsed:.1f} s after the first (max_coach_seconds)",
            )
        if number > limits.max_coach_fps * (elapsed + 1):  # a second's worth of frames may come at once
            raise StreamError(
                POLICY,
                "max_coach_fps",
                f"{number} frames in {elapsed:.2f} s of their times: above {limits.max_coach_fps:g} per second "
                "(max_coach_fps)",
            )
        image = data[FRAME_TIME.size :]
        try:
            if self.start.format == "rgb24":
                frame = PushedFrame.rgb24(time, image, self.start.width, self.start.height, self.video_limits)
            else:
                frame = PushedFrame.jpeg(time, image, self.video_limits)
        except FrameError as error:
            raise _bad_frame(number, str(error)) from None
        self.count, self.previous = number, time
        return frame


def _bad_frame(number: int, reason: str) -> StreamError:
    return StreamError(UNSUPPORTED_DATA, "invalid_frame", f"frame {number}: {reason}")


async def _receive_frames(
    websocket: WebSocket, source: PushedFrames, start: CoachStart, limits: ServeLimits
) -> None:
    check = FrameCheck(start, limits, source.limits)
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", NORMAL))
        if message.get("bytes") is not None:
            frame = check.frame(message["bytes"])
            await run_in_threadpool(
                source.push, frame
            )  # waits while the coach is behind (realtime: never long)
            continue
        if _is_end(message.get("text")):
            await run_in_threadpool(source.end)
            return
        raise StreamError(
            POLICY, "invalid_message", 'after the start message: frames (binary) or {"type": "end"}'
        )


def _is_end(text: str | None) -> bool:
    try:
        return json.loads(text or "") == {"type": "end"}
    except ValueError:
        return False


async def _refuse(websocket: WebSocket, error: StreamError) -> None:
    """The error as a message, then the close (both skipped if the client has gone)."""
    if websocket.client_state != WebSocketState.CONNECTED:
        return
    with contextlib.suppress(Exception):  # the client may have gone meanwhile
        await websocket.send_json({"type": "error", "code": error.code, "message": error.message})
        reason = f"{error.code}: {error.message}".encode()[:_REASON_BYTES].decode("utf-8", "ignore")
        await websocket.close(error.close_code, reason)
