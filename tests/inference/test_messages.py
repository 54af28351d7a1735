"""Chat messages with one video → the processor's conversation (`inference.messages`)."""

from __future__ import annotations

import pytest

from videogemma.constants import DEFAULT_PROMPT, VIDEO_TAG
from videogemma.inference.messages import MessageError, TextPart, VideoPart, chat_conversation


def test_a_video_before_the_question_renders_as_answer_renders_it(tiny_model, real_clip):
    _, processor = tiny_model
    chat = chat_conversation([("user", [VideoPart(real_clip), TextPart("How is my form?")])])
    assert chat.video == real_clip and chat.video_param == "messages[0].content[0]"
    assert chat.conversation == [{"role": "user", "content": "How is my form?"}]
    sample = processor.process_sample(chat.video, chat.conversation, add_generation_prompt=True)
    reference = processor(videos=[real_clip], text=["How is my form?"])
    assert sample["input_ids"].tolist() == reference["input_ids"][0].tolist()


def test_text_before_the_video_places_it_with_a_tag_and_a_system_text_comes_first():
    chat = chat_conversation(
        [
            ("system", [TextPart("Be brief.")]),
            ("user", [TextPart("Look at this:"), VideoPart("v.mp4"), TextPart("Is my back straight?")]),
            ("assistant", [TextPart("Mostly.")]),
            ("user", [TextPart("And my knees?")]),
        ]
    )
    assert chat.video_param == "messages[1].content[1]"
    assert [turn["content"] for turn in chat.conversation] == [
        "Be brief.",
        f"Look at this:{VIDEO_TAG}Is my back straight?",
        "Mostly.",
        "And my knees?",
    ]


def test_a_video_alone_asks_the_default_prompt():
    chat = chat_conversation([("user", [VideoPart("v.mp4")])], default_prompt=DEFAULT_PROMPT)
    assert chat.conversation == [{"role": "user", "content": DEFAULT_PROMPT}]


@pytest.mark.parametrize(
    ("messages", "param", "reason"),
    [
        ([], "messages", "no messages"),
        ([("system", [TextPart("x")])], "messages", "no user message"),
        ([("user", [TextPart("x")])], "messages[0].content", "no video"),
        ([("user", [VideoPart("a"), VideoPart("b")])], "messages[0].content[1]", "a second video"),
        ([("user", [TextPart("x")]), ("assistant", [TextPart("y")]), ("user", [VideoPart("a")])],
         "messages[2].content[0]", "first user message"),
        ([("user", [VideoPart("a")]), ("assistant", [TextPart("y")])], "messages[1].role", "the last message"),
        ([("user", [VideoPart("a")]), ("robot", [TextPart("y")])], "messages[1].role", "unknown role"),
    ],
)  # fmt: skip
def test_messages_the_model_cannot_take_are_refused_naming_where(messages, param, reason):
    with pytest.raises(MessageError, match=reason) as caught:
        chat_conversation(messages)
    assert caught.value.param == param and str(caught.value).startswith(param)
