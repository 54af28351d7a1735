"""The HTTP server: an OpenAI-compatible chat-completions API for videos, `/health`, and the page at `/`.

    app = create_app({"tiny": ServedModel("tiny", *videogemma.load("tiny"))}, ServeLimits(), media_root=None)
    uvicorn.run(app, host="127.0.0.1", port=8000)

A request goes: API key (when set) and body size (before the body is read: `AccessGuard`) → the JSON body
(`protocol.ChatCompletionRequest`) → a place among the requests in flight (`max_queue`, else 503 with
Retry-After) → the messages and their one video checked, the prompt tokenized and bounded, the video resolved
(`media.MediaResolver`) and decoded in a worker thread (at most `decode_workers` at once) → the batching thread
(`batching.Batcher`) → the answer as one JSON body or as server-sent events. Each refusal is a 4xx in the
OpenAI error shape; a video that cannot be read is the request's 400, never the server's end.
The coaching stream (`WS /v1/coach/stream`, `coaching.py`) runs the live coach on a client's frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import hmac
import html
import logging
import threading
from collections.abc import AsyncIterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from videogemma.constants import CLIP_PIXEL_VALUES, DEFAULT_PROMPT, VIDEOMAMBA_PIXEL_VALUES
from videogemma.errors import PromptTooLongError, VideoDecodeError, VideoGemmaDataError, VideoLimitError
from videogemma.inference.generate import Answer, GenerationSettings
from videogemma.inference.messages import MessageError, chat_conversation
from videogemma.serve.batching import Batcher, Job, ServedModel
from videogemma.serve.coaching import COACH_PATH, CoachSlots, coach_stream
from videogemma.serve.limits import VIDEO_LIMIT_FLAGS, ServeLimits
from videogemma.serve.media import MediaResolver
from videogemma.serve.protocol import (
    INVALID_REQUEST,
    SERVER_ERROR,
    SSE_DONE,
    ApiError,
    ChatCompletionRequest,
    Completion,
    error_body,
    error_event,
    message_parts,
    usage,
)

logger = logging.getLogger(__name__)

# Reachable without the API key: the health check, and the page (static files; it asks for the key).
OPEN_PATHS = ("/health", "/", "/static/app.js")
RETRY_AFTER_S = "1"


def create_app(
    models: Mapping[str, ServedModel],
    limits: ServeLimits,
    *,
    media_root: str | Path | None = None,
    api_key: str | None = None,
) -> FastAPI:
    """The application serving `models` (by name; the first is the default) within `limits`."""
    if not models:
        raise ValueError("create_app needs at least one model")
    state = ServerState(
        {name: _limited(served, limits) for name, served in models.items()}, limits, media_root
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state.batcher.start()
        try:
            yield
        finally:
            state.batcher.stop()
            state.media.close()

    app = FastAPI(title="VideoGemma", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.serve = state
    app.add_middleware(AccessGuard, api_key=api_key, max_body_bytes=limits.max_body_bytes)
    _add_error_handlers(app)
    _add_routes(app, state, auth_required=api_key is not None)

    @app.websocket(COACH_PATH)
    async def coaching(websocket: WebSocket) -> None:
        await coach_stream(websocket, state.model, state.coaching, limits, api_key)

    return app


def _limited(served: ServedModel, limits: ServeLimits) -> ServedModel:
    """`served` with a copy of its processor whose video limits are tightened by the server's."""
    processor = copy.copy(served.processor)
    processor.video_limits = limits.video_limits(processor.video_limits)
    return dataclasses.replace(served, processor=processor)


class Admission:
    """How many requests are in flight (from their body's arrival to their answer); beyond the limit, 503."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self._lock = threading.Lock()

    def enter(self) -> Ticket:
        with self._lock:
            if self.active >= self.limit:
                raise ApiError(
                    503,
                    f"the server is busy: {self.active} requests in flight, its limit (max_queue); retry shortly",
                    type=SERVER_ERROR,
                    code="max_queue",
                    headers={"Retry-After": RETRY_AFTER_S},
                )
            self.active += 1
        return Ticket(self)

    def leave(self) -> None:
        with self._lock:
            self.active -= 1


class Ticket:
    """One request's place in flight; released once, by whoever finishes the request."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self._released = False
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self._admission.leave()


class ServerState:
    def __init__(self, models: Mapping[str, ServedModel], limits: ServeLimits, media_root: Any) -> None:
        self.models = dict(models)
        self.default_model = next(iter(self.models))
        self.limits = limits
        self.media = MediaResolver(media_root, limits.max_video_bytes)
        self.admission = Admission(limits.max_queue)
        self.coaching = CoachSlots(limits.max_coach_sessions)
        self.decoding = threading.Semaphore(limits.decode_workers)
        self.batcher = Batcher(
            self.models,
            limits.max_batch_size,
            limits.batch_wait_ms / 1000,
            in_flight=lambda: self.admission.active,
        )

    def model(self, name: str | None) -> ServedModel:
        served = self.models.get(self.default_model if name is None else name)
        if served is None:
            raise ApiError(
                404,
                f"the model {name!r} is not served here; served: {', '.join(self.models)}",
                param="model",
                code="model_not_found",
            )
        return served


# ---- access: API key and body size, before the body is read ------------------------------------------------


class AccessGuard:
    """ASGI middleware: the Bearer key on every path but `OPEN_PATHS`, and at most `max_body_bytes` of body
    (counted as it arrives, whatever Content-Length says), both refused before the application reads it."""

    def __init__(self, app: Any, api_key: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        if self.api_key is not None and scope["path"] not in OPEN_PATHS:
            given = headers.get("authorization", "")
            expected = f"Bearer {self.api_key}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                message = "a valid API key is needed: send the header Authorization: Bearer <key>"
                error = ApiError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
                return await _send_error(error, scope, receive, send)
        body = await self._read_body(headers, receive)
        if body is None:
            error = ApiError(
                413,
                f"the request body is larger than {self.max_body_bytes} bytes (one video of max_video_bytes, "
                "as base64, and the messages)",
                code="max_video_bytes",
            )
            return await _send_error(error, scope, receive, send)
        await self.app(scope, _replay(body, receive), send)

    async def _read_body(self, headers: dict[str, str], receive: Any) -> bytes | None:
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _replay(body: bytes, receive: Any) -> Any:
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # later: the client's disconnect

    return replay


async def _send_error(error: ApiError, scope: dict, receive: Any, send: Any) -> None:
    response = JSONResponse(error.body(), status_code=error.status, headers=error.headers)
    await response(scope, receive, send)


# ---- errors in the OpenAI shape -------------------------------------------------------------------------------


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {"loc": (), "msg": "invalid request", "type": ""}
        if first.get("type") == "json_invalid":
            body = error_body(
                f"the request body is not valid JSON: {first['msg']}", INVALID_REQUEST, None, "invalid_json"
            )
            return JSONResponse(body, status_code=400)
        param = _dotted([part for part in first["loc"] if part != "body"])
        message = f"{param or 'body'}: {first['msg']}"
        return JSONResponse(
            error_body(message, INVALID_REQUEST, param or None, "invalid_value"), status_code=400
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        message = f"{request.method} {request.url.path}: {error.detail}"
        code = "not_found" if error.status_code == 404 else None
        return JSONResponse(error_body(message, INVALID_REQUEST, None, code), status_code=error.status_code)

    @app.exception_handler(Exception)
    async def server_error(_: Request, error: Exception) -> JSONResponse:
        logger.exception("unexpected error while answering a request")
        message = f"unexpected {type(error).__name__}: {error}"
        return JSONResponse(error_body(message, SERVER_ERROR, None, "internal_error"), status_code=500)


def _dotted(location: list[Any]) -> str:
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


# ---- routes ----------------------------------------------------------------------------------------------------


def _add_routes(app: FastAPI, state: ServerState, auth_required: bool) -> None:
    page = _page(auth_required)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/static/app.js", include_in_schema=False)
    async def script() -> Response:
        text = resources.files("videogemma.serve").joinpath("static/app.js").read_text(encoding="utf-8")
        return Response(text, media_type="text/javascript")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        stats = state.batcher.stats
        return {
            "status": "ok",
            "models": len(state.models),
            "auth_required": auth_required,
            "media_root": state.media.media_root is not None,
            "in_flight": state.admission.active,
            "coaching_streams": state.coaching.active,
            "batching": {
                "enabled": state.limits.max_batch_size > 1,
                "batches": stats.batches,
                "requests": stats.requests,
                "largest_batch": stats.largest,
            },
            "limits": state.limits.describe(),
        }

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": 0, "owned_by": "videogemma"}
                for name in state.models
            ],
        }

    @app.post("/v1/chat/completions")
    async def chat_completions(request: ChatCompletionRequest) -> Response:
        return await _complete(state, request)


def _page(auth_required: bool) -> str:
    text = resources.files("videogemma.serve").joinpath("static/index.html").read_text(encoding="utf-8")
    return text.replace("__DEFAULT_PROMPT__", html.escape(DEFAULT_PROMPT)).replace(
        "__AUTH_REQUIRED__", "true" if auth_required else "false"
    )


# ---- one chat completion ------------------------------------------------------------------------------------------


async def _complete(state: ServerState, request: ChatCompletionRequest) -> Response:
    served = state.model(request.model)
    settings = generation_settings(request, state.limits)
    ticket = state.admission.enter()
    try:
        inputs = await run_in_threadpool(prepare_inputs, state, served, request)
        sink = EventSink(asyncio.get_running_loop(), request.stream, on_done=ticket.release)
        state.batcher.submit(Job(served.name, inputs, settings, sink))
    except BaseException:
        ticket.release()
        raise
    completion = Completion(served.name)
    prompt_tokens = len(inputs["input_ids"])
    if request.stream:
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        events = _stream(sink, completion, prompt_tokens, include_usage)
        return StreamingResponse(
            events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )
    answer, reason = await sink.result()
    return JSONResponse(completion.body(answer.text, reason, usage(prompt_tokens, answer.generated_tokens)))


def generation_settings(request: ChatCompletionRequest, limits: ServeLimits) -> GenerationSettings:
    """Greedy unless `temperature` > 0 (then sampling with `top_p`, no top-k cut, as the OpenAI API samples)."""
    max_tokens = request.max_completion_tokens or request.max_tokens or limits.default_max_tokens
    if max_tokens > limits.max_tokens:
        raise ApiError(
            400,
            f"max_tokens is {max_tokens}, above the server's limit of {limits.max_tokens} (max_tokens)",
            param="max_tokens",
            code="max_tokens",
        )
    if not request.temperature:
        return GenerationSettings(max_new_tokens=max_tokens)
    return GenerationSettings(
        max_new_tokens=max_tokens,
        do_sample=True,
        temperature=request.temperature,
        top_p=request.top_p or 1.0,
        top_k=0,
        seed=request.seed,
    )


def prepare_inputs(state: ServerState, served: ServedModel, request: ChatCompletionRequest) -> dict[str, Any]:
    """One unpadded sample for the batcher: messages checked, prompt tokenized and bounded before the video is
    resolved, then the video decoded (runs in a worker thread)."""
    processor = served.processor
    try:
        chat = chat_conversation(message_parts(request), default_prompt=processor.default_prompt)
        with served.tokenizer_lock:
            sample = processor.encode_conversation(
                chat.conversation, add_generation_prompt=True, record="request"
            )
    except MessageError as error:
        raise ApiError(400, str(error), param=error.param, code="invalid_messages") from None
    except PromptTooLongError as error:
        raise ApiError(400, str(error), param="messages", code="context_length_exceeded") from None
    except VideoGemmaDataError as error:  # the chat template's refusals (roles out of order, <video> tags)
        raise ApiError(400, str(error), param="messages", code="invalid_messages") from None
    text_tokens = len(sample["input_ids"]) - processor.num_visual_tokens
    if text_tokens > state.limits.max_prompt_tokens:
        raise ApiError(
            400,
            f"the prompt is {text_tokens} tokens besides the video's, above the server's limit of "
            f"{state.limits.max_prompt_tokens} (max_prompt_tokens)",
            param="messages",
            code="max_prompt_tokens",
        )
    param = chat.video_param
    with state.media.open(chat.video, param) as (path, label), state.decoding:
        try:
            sample[CLIP_PIXEL_VALUES], sample[VIDEOMAMBA_PIXEL_VALUES] = processor.preprocess_video(path)
        except VideoDecodeError as error:
            raise _video_error(error, param, label, path) from None
    return sample


def _video_error(error: VideoDecodeError, param: str, label: str, path: Path) -> ApiError:
    """The processor's refusal, naming the video as the client named it (never the server's own path to it)
    and the server limit it met."""
    reason = error.reason.replace(str(path), label)
    code = "invalid_video"
    if isinstance(error, VideoLimitError):
        code = "video_limit"
        for field, flag in VIDEO_LIMIT_FLAGS.items():
            if f"VideoLimits.{field}" in reason:
                code = flag
                reason = reason.replace(f"VideoLimits.{field}", flag)
    return ApiError(400, f"{param}: {label}: {reason}", param=param, code=code)


class EventSink:
    """A job's results, passed from the batching thread to the request's event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, streaming: bool, on_done: Any) -> None:
        self.streaming = streaming
        self._loop = loop
        self._queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self._on_done = on_done

    def _post(self, item: tuple[Any, ...]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: the server is stopping
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def delta(self, text: str) -> None:
        self._post(("delta", text))

    def finish(self, answer: Answer, finish_reason: str) -> None:
        self._on_done()
        self._post(("done", answer, finish_reason))

    def fail(self, error: BaseException) -> None:
        self._on_done()
        self._post(("error", error))

    async def events(self) -> AsyncIterator[tuple[Any, ...]]:
        while True:
            event = await self._queue.get()
            yield event
            if event[0] != "delta":
                return

    async def result(self) -> tuple[Answer, str]:
        async for event in self.events():
            if event[0] == "done":
                return _checked(event[1]), event[2]
            if event[0] == "error":
                raise _generation_failure(event[1])
        raise AssertionError("the events end with a result")


def _checked(answer: Answer) -> Answer:
    if answer.error is not None:  # an empty or non-finite answer is no answer
        raise ApiError(500, answer.error, type=SERVER_ERROR, code="generation_failed")
    return answer


def _generation_failure(error: BaseException) -> ApiError:
    message = f"generation failed: {type(error).__name__}: {error}"
    return ApiError(500, message, type=SERVER_ERROR, code="generation_failed")


async def _stream(
    sink: EventSink, completion: Completion, prompt_tokens: int, include_usage: bool
) -> AsyncIterator[str]:
    """The answer as OpenAI chunks: the role, text pieces, the rest of the answer with the finish reason."""
    yield completion.chunk({"role": "assistant", "content": ""})
    sent = ""
    async for event in sink.events():
        if event[0] == "delta":
            sent += event[1]
            yield completion.chunk({"content": event[1]})
            continue
        try:
            answer, reason = await _final(event)
        except ApiError as error:
            yield error_event(error)
            break
        if answer.text.startswith(sent) and len(answer.text) > len(sent):
            yield completion.chunk({"content": answer.text[len(sent) :]})
        yield completion.chunk({}, finish_reason=reason)
        if include_usage:
            yield completion.usage_chunk(usage(prompt_tokens, answer.generated_tokens))
    yield SSE_DONE


async def _final(event: tuple[Any, ...]) -> tuple[Answer, str]:
    if event[0] == "error":
        raise _generation_failure(event[1])
    return _checked(event[1]), event[2]
