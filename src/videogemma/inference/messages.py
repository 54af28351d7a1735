"""Chat messages holding a video (the OpenAI API's content parts, lmms-eval's chat messages) → the one video
and the conversation the processor renders.

    chat = chat_conversation([
        ("system", [TextPart("Answer briefly.")]),
        ("user", [VideoPart("squats/00000340.mp4"), TextPart("How is my form?")]),
    ])
    sample = processor.process_sample(chat.video, chat.conversation, add_generation_prompt=True)

The model reads one video, in the first user turn (the chat template's rule), so a request holds exactly one
video part, in its first user message. A video part before any text of that message is the template's default
place (the block before the question), exactly what `inference.generate.answer` renders; a video part after
some text becomes a `<video>` tag at that place. A first user message with no text asks `default_prompt` (the
QVED question, as `videogemma infer` does without `--prompt`). The conversation must end with a user message:
it is a question to answer. Every refusal is a `MessageError` naming the message and part
(`messages[1].content[0]`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from videogemma.constants import VIDEO_TAG
from videogemma.errors import VideoGemmaDataError

ROLES = ("system", "user", "assistant")
# How the text parts of one message are joined (as vLLM and the OpenAI API join them).
PART_SEPARATOR = "\n"


class MessageError(VideoGemmaDataError):
    """Chat messages the model cannot answer; `param` is where (`messages[0].content[1]`), as the OpenAI
    error shape's `param` field names it."""

    def __init__(self, param: str, reason: str) -> None:
        self.param = param
        self.reason = reason
        super().__init__(f"{param}: {reason}")


@dataclass(frozen=True)
class TextPart:
    text: str


@dataclass(frozen=True)
class VideoPart:
    """A video as the caller names it (a path, a URL): resolved by the caller once the messages are valid."""

    video: Any


@dataclass(frozen=True)
class ChatConversation:
    video: Any  # the video part's `video`, as given
    video_param: str  # where it was: `messages[m].content[p]`
    conversation: list[dict[str, str]]  # {"role", "content"} turns for the processor


def chat_conversation(
    messages: Sequence[tuple[str, Sequence[TextPart | VideoPart]]], default_prompt: str | None = None
) -> ChatConversation:
    """The one video and the conversation of `messages` ((role, parts) pairs), or `MessageError`."""
    if not messages:
        raise MessageError("messages", "no messages: ask a question about a video")
    videos = [
        (m, p, part)
        for m, (_, parts) in enumerate(messages)
        for p, part in enumerate(parts)
        if isinstance(part, VideoPart)
    ]
    first_user = next((m for m, (role, _) in enumerate(messages) if role == "user"), None)
    if first_user is None:
        raise MessageError("messages", "no user message: ask a question about a video")
    if not videos:
        raise MessageError(f"messages[{first_user}].content", "no video: add one video part to this message")
    if len(videos) > 1:
        m, p, _ = videos[1]
        raise MessageError(f"messages[{m}].content[{p}]", "a second video: the model reads one video")
    m, p, video = videos[0]
    if m != first_user:
        raise MessageError(
            f"messages[{m}].content[{p}]",
            f"the video must be in the first user message (messages[{first_user}])",
        )
    turns = []
    for index, (role, parts) in enumerate(messages):
        if role not in ROLES:
            raise MessageError(
                f"messages[{index}].role", f"unknown role {role!r}; use one of {', '.join(ROLES)}"
            )
        text = _message_text(parts, with_video=index == first_user)
        if index == first_user and not text.replace(VIDEO_TAG, "").strip() and default_prompt:
            text = text + default_prompt
        turns.append({"role": role, "content": text})
    if messages[-1][0] != "user":
        raise MessageError(
            f"messages[{len(messages) - 1}].role", "the last message must be the user's: a question to answer"
        )
    return ChatConversation(video.video, f"messages[{m}].content[{p}]", turns)


def _message_text(parts: Sequence[TextPart | VideoPart], with_video: bool) -> str:
    """The message's text; in the video's message, a `<video>` tag where the video stands after some text."""
    before: list[str] = []
    after: list[str] = []
    seen_video = False
    for part in parts:
        if isinstance(part, VideoPart):
            seen_video = True
        else:
            (after if seen_video or not with_video else before).append(part.text)
    if not with_video or not before:
        return PART_SEPARATOR.join(after)
    return PART_SEPARATOR.join(before) + VIDEO_TAG + PART_SEPARATOR.join(after)
