"""The OpenAI chat-completions wire format: the request body, the answers, the chunks and the error shape.

A request is `{"model", "messages": [{"role", "content": str | [parts]}], "stream", "max_tokens",
"temperature", "top_p", "seed", "stream_options": {"include_usage"}}`; a video is a content part
`{"type": "video_url", "video_url": {"url": ...}}` (vLLM's convention). Fields this server does not use
(`frequency_penalty`, `user`, ...) are accepted and ignored, as the OpenAI API's clients send them; fields whose
meaning it cannot honour (`n` > 1, `tools`) are refused. Every error is
`{"error": {"message", "type", "param", "code"}}` with the HTTP status saying whose fault it is.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from videogemma.inference.messages import TextPart, VideoPart

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"
SSE_DONE = "data: [DONE]\n\n"


class ApiError(Exception):
    """A request refused (4xx) or failed (5xx), answered in the OpenAI error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = INVALID_REQUEST,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str
    # Parts are checked by `message_parts`, which names the part and says what is served.
    content: str | list[dict[str, Any]]


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)  # the newer name of max_tokens
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=1, description="one answer per request")


def message_parts(request: ChatCompletionRequest) -> list[tuple[str, list[TextPart | VideoPart]]]:
    """(role, parts) of each message; a video part's `video` is its URL (resolved later). Refuses a part type
    this model does not read, naming it."""
    messages = []
    for m, message in enumerate(request.messages):
        if isinstance(message.content, str):
            messages.append((message.role, [TextPart(message.content)]))
            continue
        parts: list[TextPart | VideoPart] = []
        for p, part in enumerate(message.content):
            where = f"messages[{m}].content[{p}]"
            kind = part.get("type")
            if kind == "text" and isinstance(part.get("text"), str):
                parts.append(TextPart(part["text"]))
            elif kind == "video_url":
                parts.append(VideoPart(_video_url(part.get("video_url"), where)))
            elif kind == "text":
                raise ApiError(400, f"{where}.text: a text part needs a string `text`", param=f"{where}.text")
            else:
                raise ApiError(
                    400,
                    f"{where}: content parts of type {kind!r} are not served; this model reads 'text' and "
                    "'video_url' parts (one video)",
                    param=f"{where}.type",
                    code="unsupported_content_type",
                )
        messages.append((message.role, parts))
    return messages


def _video_url(value: Any, where: str) -> str:
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str) or not url:
        raise ApiError(
            400,
            f'{where}.video_url: expected {{"url": "data:video/mp4;base64,..." or "file://..."}}',
            param=f"{where}.video_url",
        )
    return url


# ---- answers -----------------------------------------------------------------------------------------------


class Completion:
    """The identity of one answer (id, time, model) shared by its JSON body or its chunks."""

    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model

    def body(self, text: str, finish_reason: str, usage: dict[str, int]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish_reason,
                }
            ],
            "usage": usage,
        }

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return self._event({"choices": [choice]})

    def usage_chunk(self, usage: dict[str, int]) -> str:
        return self._event({"choices": [], "usage": usage})

    def _event(self, fields: dict[str, Any]) -> str:
        head = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
        }
        return f"data: {json.dumps({**head, **fields}, ensure_ascii=False)}\n\n"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def error_event(error: ApiError) -> str:
    """An error met after a stream's first bytes went out (its status can no longer change)."""
    return f"data: {json.dumps(error.body(), ensure_ascii=False)}\n\n"
