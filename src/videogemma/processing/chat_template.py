"""The one Gemma-3n chat template, shared by training, inference and evaluation.

A conversation renders as (Gemma has no system role, so a system text opens the first user turn):

    <bos><start_of_turn>user
    [{system}\\n\\n]\\n\\n<start_of_image>{<image_soft_token> × N}<end_of_image>\\n\\n{question}<end_of_turn>
    <start_of_turn>model
    {answer}<end_of_turn>
    ...further turns...

The video block is framed exactly as Gemma-3n's processor frames an image,
`\\n\\n<start_of_image>{soft tokens}<end_of_image>\\n\\n`, in the place Gemma-3n-it's chat template puts the
image: where `<video>` stands in the first user turn (text before it ends right before the block), or
before its text; a system text and its `\\n\\n` come first. Only the answers are supervised (each model
turn's text and its `<end_of_turn>`); every other label is -100.

Ids are built segment by segment: text pieces are tokenized on their own (never parsing control tokens
out of data text), and the special and placeholder ids are spliced in by id, looked up by name in the
tokenizer. So the same code serves Gemma-3n's 262k tokenizer and the `tiny` preset's own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from videogemma.constants import (
    BOS,
    END_OF_IMAGE,
    END_OF_TURN,
    IGNORE_INDEX,
    IMAGE_SOFT_TOKEN,
    START_OF_IMAGE,
    START_OF_TURN,
    VIDEO_TAG,
)
from videogemma.errors import PromptTooLongError, VideoGemmaDataError

# What Gemma-3n's processor puts on each side of an image's soft tokens.
IMAGE_MARGIN = "\n\n"

# Conversation files say human/gpt (LLaVA) or user/assistant (OpenAI); Gemma says user/model.
ROLE_NAMES = {
    "human": "user",
    "user": "user",
    "gpt": "model",
    "assistant": "model",
    "model": "model",
    "system": "system",
}


class ConversationError(VideoGemmaDataError):
    """A conversation the template cannot render: unknown role, turns out of order, misplaced `<video>`."""

    def __init__(self, record: Any, reason: str) -> None:
        self.record = record
        self.reason = reason
        super().__init__(f"sample {record}: {reason}")


class SequenceTooLongError(VideoGemmaDataError):
    """Prompt and answer exceed the limit, and answer truncation is off (the prompt alone would fit)."""

    def __init__(self, record: Any, length: int, limit: int) -> None:
        self.record = record
        self.length = length
        self.limit = limit
        super().__init__(
            f"sample {record}: prompt and answer are {length} tokens but the limit is {limit}; "
            "enable answer truncation, shorten the answer or raise max_sequence_length"
        )


@dataclass(frozen=True)
class Turn:
    role: str  # "system" | "user" | "model"
    text: str


@dataclass(frozen=True)
class Segment:
    """A piece of the rendered sequence: text to tokenize, or a special token (repeated) spliced by id."""

    text: str
    special: bool = False
    supervised: bool = False
    repeat: int = 1


@dataclass
class RenderedConversation:
    input_ids: list[int]
    labels: list[int]
    prompt_length: int  # tokens before the first supervised one (all of them when there is no answer)
    truncated: bool = False


def normalize_conversation(conversation: Any, record: Any = None) -> list[Turn]:
    """Turns of a conversation in any of DATA.md's shapes, with Gemma's role names.

    Accepts a list of turns (`{"from", "value"}`, `{"role", "content"}` or `Turn`), or a record holding
    one: `{"conversations": [...]}` or the flat `{"question": ..., "answer": ...}` (answer optional).
    """
    if isinstance(conversation, Mapping):
        if "conversations" in conversation:
            conversation = conversation["conversations"]
        elif "question" in conversation:
            turns = [Turn("user", _as_text(conversation["question"], record, "question"))]
            if conversation.get("answer") is not None:
                turns.append(Turn("model", _as_text(conversation["answer"], record, "answer")))
            return turns
        else:
            raise ConversationError(record, "the record has neither 'conversations' nor 'question'")
    if isinstance(conversation, str) or not isinstance(conversation, Sequence):
        raise ConversationError(
            record, f"a conversation is a list of turns, got {type(conversation).__name__}"
        )
    turns = []
    for index, turn in enumerate(conversation):
        if isinstance(turn, Turn):
            turns.append(turn)
            continue
        if not isinstance(turn, Mapping):
            raise ConversationError(record, f"turn {index} is a {type(turn).__name__}, not a mapping")
        role = turn.get("from", turn.get("role"))
        text = turn.get("value", turn.get("content"))
        if role not in ROLE_NAMES:
            raise ConversationError(record, f"turn {index} has unknown role {role!r}")
        turns.append(Turn(ROLE_NAMES[role], _as_text(text, record, f"turn {index}")))
    return turns


# Keys a Hugging Face chat message's video part may name its video by.
VIDEO_PART_KEYS = ("video", "path", "url")


def split_video_parts(conversation: Any, record: Any = None) -> tuple[Any, list[Any]]:
    """A conversation in Hugging Face's message form, whose `content` may be a list of parts
    (`{"type": "text", "text": ...}`, `{"type": "video", "video": PATH_OR_FRAMES}`), as turns with text contents
    (each video part becomes the `<video>` tag where it stood) and the videos in order."""
    if isinstance(conversation, (Mapping, str)) or not isinstance(conversation, Sequence):
        return conversation, []  # a record, or not a conversation (normalize_conversation says so)
    turns: list[Any] = []
    videos: list[Any] = []
    for index, turn in enumerate(conversation):
        if not isinstance(turn, Mapping) or isinstance(turn.get("content", turn.get("value")), str):
            turns.append(turn)
            continue
        parts = turn.get("content")
        if not isinstance(parts, Sequence):
            raise ConversationError(record, f"turn {index}: content must be text or a list of parts")
        pieces = []
        for part in parts:
            kind = part.get("type") if isinstance(part, Mapping) else None
            if kind == "text":
                pieces.append(_as_text(part.get("text"), record, f"turn {index}'s text part"))
            elif kind == "video":
                source = next((part[key] for key in VIDEO_PART_KEYS if part.get(key) is not None), None)
                if source is None:
                    raise ConversationError(
                        record, f"turn {index}: a video part names no video ({', '.join(VIDEO_PART_KEYS)})"
                    )
                videos.append(source)
                pieces.append(VIDEO_TAG)
            else:
                raise ConversationError(record, f"turn {index}: unsupported content part {kind!r}")
        turns.append({"role": turn.get("role", turn.get("from")), "content": "".join(pieces)})
    return turns, videos


def _as_text(value: Any, record: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ConversationError(record, f"{what} must be a string, got {type(value).__name__}")
    return value


class ChatTemplate:
    """Renders conversations for one tokenizer; special ids are looked up once, by name."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, image_token: str = IMAGE_SOFT_TOKEN) -> None:
        self.tokenizer = tokenizer
        self.image_token = image_token
        names = (BOS, START_OF_TURN, END_OF_TURN, START_OF_IMAGE, END_OF_IMAGE, image_token)
        self.token_ids = {name: _token_id(tokenizer, name) for name in names}

    @property
    def image_token_id(self) -> int:
        return self.token_ids[self.image_token]

    def segments(
        self,
        conversation: Any,
        *,
        num_visual_tokens: int = 0,
        system: str | None = None,
        add_generation_prompt: bool = False,
        record: Any = None,
    ) -> list[Segment]:
        """The conversation as template segments (what `render` tokenizes and `render_text` prints).

        `system` applies when the conversation has no system turn of its own. With `add_generation_prompt`,
        a final model turn (the reference answer) is left out and the sequence ends in `<start_of_turn>model\\n`.
        """
        turns = normalize_conversation(conversation, record)
        if turns and turns[0].role == "system":
            system, turns = turns[0].text, turns[1:]
        if add_generation_prompt and turns and turns[-1].role == "model":
            turns = turns[:-1]
        _check_order(turns, record)

        segments = [Segment(BOS, special=True)]
        for index, turn in enumerate(turns):
            segments.append(Segment(START_OF_TURN, special=True))
            if turn.role == "user":
                if index == 0:
                    segments += self._first_user_turn(turn.text, system, num_visual_tokens, record)
                else:
                    if VIDEO_TAG in turn.text:
                        raise ConversationError(record, f"{VIDEO_TAG} may only appear in the first user turn")
                    segments.append(Segment("user\n" + turn.text))
                segments.append(Segment(END_OF_TURN, special=True))
            else:
                segments.append(Segment("model\n"))
                if turn.text:
                    segments.append(Segment(turn.text, supervised=True))
                segments.append(Segment(END_OF_TURN, special=True, supervised=True))
            segments.append(Segment("\n"))
        if add_generation_prompt:
            segments += [Segment(START_OF_TURN, special=True), Segment("model\n")]
        return segments

    def _first_user_turn(
        self, text: str, system: str | None, num_visual_tokens: int, record: Any
    ) -> list[Segment]:
        # [system\n\n] [text before <video>] \n\n<start_of_image>…<end_of_image>\n\n [text after <video>]
        if text.count(VIDEO_TAG) > 1:
            raise ConversationError(
                record, f"the first user turn has {text.count(VIDEO_TAG)} {VIDEO_TAG} tags"
            )
        before, tag, after = text.partition(VIDEO_TAG)
        if not tag:
            before, after = "", text
        if not num_visual_tokens:
            if tag:
                raise ConversationError(record, f"the first user turn has a {VIDEO_TAG} tag but no video")
            return [Segment("user\n" + "\n\n".join(piece for piece in (system, after) if piece))]
        head = (system + "\n\n" if system else "") + before.rstrip()
        return [
            Segment("user\n" + head + IMAGE_MARGIN),
            Segment(START_OF_IMAGE, special=True),
            Segment(self.image_token, special=True, repeat=num_visual_tokens),
            Segment(END_OF_IMAGE, special=True),
            Segment(IMAGE_MARGIN + after.lstrip()),
        ]

    def render(
        self,
        conversation: Any,
        *,
        num_visual_tokens: int = 0,
        system: str | None = None,
        add_generation_prompt: bool = False,
        max_length: int | None = None,
        truncate_answer: bool = False,
        record: Any = None,
    ) -> RenderedConversation:
        """Token ids and labels of a conversation, with `num_visual_tokens` placeholders (0: no video).

        Over `max_length`: the tail is cut (answers only, never the prompt or the visual block) when
        `truncate_answer`, else `SequenceTooLongError`; a prompt that cannot fit with at least one answer
        token raises `PromptTooLongError`. Both name `record`.
        """
        segments = self.segments(
            conversation,
            num_visual_tokens=num_visual_tokens,
            system=system,
            add_generation_prompt=add_generation_prompt,
            record=record,
        )
        input_ids: list[int] = []
        labels: list[int] = []
        for segment in segments:
            if segment.special:
                ids = [self.token_ids[segment.text]] * segment.repeat
            else:
                # split_special_tokens: data text saying "<end_of_turn>" stays text, not a control token.
                ids = self.tokenizer(segment.text, add_special_tokens=False, split_special_tokens=True)[
                    "input_ids"
                ]
            input_ids += ids
            labels += ids if segment.supervised else [IGNORE_INDEX] * len(ids)
        prompt_length = next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), len(labels))
        rendered = RenderedConversation(input_ids, labels, prompt_length)
        if max_length is None or len(input_ids) <= max_length:
            return rendered
        needed = prompt_length + (1 if prompt_length < len(input_ids) else 0)
        if needed > max_length:
            raise PromptTooLongError(record, prompt_length, max_length)
        if not truncate_answer:
            raise SequenceTooLongError(record, len(input_ids), max_length)
        return RenderedConversation(
            input_ids[:max_length], labels[:max_length], prompt_length, truncated=True
        )

    def render_text(
        self,
        conversation: Any,
        *,
        num_visual_tokens: int = 0,
        system: str | None = None,
        add_generation_prompt: bool = False,
        expand_placeholders: bool = False,
        record: Any = None,
    ) -> str:
        """The rendered conversation as text, for display; the placeholder run shows as `<image_soft_token>×N`
        unless `expand_placeholders`."""
        segments = self.segments(
            conversation,
            num_visual_tokens=num_visual_tokens,
            system=system,
            add_generation_prompt=add_generation_prompt,
            record=record,
        )
        parts = []
        for segment in segments:
            if segment.repeat > 1 and not expand_placeholders:
                parts.append(f"{segment.text}×{segment.repeat}")
            else:
                parts.append(segment.text * segment.repeat)
        return "".join(parts)


def _token_id(tokenizer: PreTrainedTokenizerBase, name: str) -> int:
    token_id = tokenizer.convert_tokens_to_ids(name)
    if token_id is None or (token_id == tokenizer.unk_token_id and name != tokenizer.unk_token):
        raise ValueError(
            f"the tokenizer {tokenizer.name_or_path or type(tokenizer).__name__} has no {name} token; "
            "the chat template needs Gemma-3n's special tokens"
        )
    return token_id


def _check_order(turns: list[Turn], record: Any) -> None:
    if not turns:
        raise ConversationError(record, "the conversation has no user turn")
    for index, turn in enumerate(turns):
        expected = "user" if index % 2 == 0 else "model"
        if turn.role != expected:
            raise ConversationError(
                record,
                f"turn {index} is a {turn.role} turn where a {expected} turn belongs (user/model alternate)",
            )
