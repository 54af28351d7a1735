from __future__ import annotations

import pytest
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from videogemma.config import TINY_IMAGE_SOFT_TOKEN_ID, TINY_TEXT_VOCAB
from videogemma.errors import PromptTooLongError, VideoGemmaDataError
from videogemma.processing.chat_template import (
    IGNORE_INDEX,
    ChatTemplate,
    ConversationError,
    SequenceTooLongError,
    Turn,
    normalize_conversation,
)
from videogemma.processing.tokenizer import build_tiny_tokenizer

# Gemma-3n's ids for the template's tokens ("\n", "\n\n", "user", "model" as in its vocabulary).
PAD, EOS, BOS, SOT, EOT, NL, NL2, USER, MODEL = 0, 1, 2, 105, 106, 107, 108, 2364, 4368
SOI, EOI, IMG = 255999, 262144, 262145
# Word ids of the test vocabulary (sparse, like Gemma's).
SP = 236743
WORDS = {
    " ": SP, ".": 236761, "?": 236881, "Be": 3912, "brief": 9380, "How": 3910, "deep": 5268, "Go": 6290,
    "deeper": 22735, "Look": 11207, "at": 657, "this": 672, "Why": 11355, "Because": 18177, "knees": 31545,
}  # fmt: skip


def gemma_like_tokenizer(with_image_tokens: bool = True) -> PreTrainedTokenizerFast:
    """A word-level tokenizer with Gemma-3n's special tokens at Gemma-3n's ids."""
    vocab = {
        "<pad>": PAD,
        "<eos>": EOS,
        "<bos>": BOS,
        "<unk>": 3,
        "<start_of_turn>": SOT,
        "<end_of_turn>": EOT,
    }
    vocab |= {"\n": NL, "\n\n": NL2, "user": USER, "model": MODEL, **WORDS}
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    if with_image_tokens:
        vocab |= {"<start_of_image>": SOI, "<end_of_image>": EOI, "<image_soft_token>": IMG}
        specials += ["<start_of_image>", "<end_of_image>", "<image_soft_token>"]
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"\n\n|\s|\w+|[^\w\s]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(specials)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def ids(*words: str) -> list[int]:
    return [WORDS[w] for w in words]


@pytest.fixture(scope="module")
def template() -> ChatTemplate:
    return ChatTemplate(gemma_like_tokenizer())


def conversation(question: str = "How deep?", answer: str = "Go deeper.") -> list[dict]:
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


HOW_DEEP = ids("How", " ", "deep", "?")
GO_DEEPER = ids("Go", " ", "deeper", ".")


def test_single_turn_with_system_exact_ids_and_labels(template):
    rendered = template.render(conversation(), num_visual_tokens=4, system="Be brief.")
    prompt = [
        BOS,
        SOT,
        USER,
        NL,
        *ids("Be", " ", "brief", "."),
        NL2,
        NL2,
        SOI,
        *[IMG] * 4,
        EOI,
        NL2,
        *HOW_DEEP,
        EOT,
        NL,
    ]
    prompt += [SOT, MODEL, NL]
    assert rendered.input_ids == [*prompt, *GO_DEEPER, EOT, NL]
    assert rendered.labels == [IGNORE_INDEX] * len(prompt) + [*GO_DEEPER, EOT, IGNORE_INDEX]
    assert rendered.prompt_length == len(prompt)


def test_without_system_the_video_opens_the_turn(template):
    rendered = template.render(conversation(), num_visual_tokens=2)
    # "user\n" then the block's "\n\n": this vocabulary splits "\n\n\n" into "\n\n" "\n" (Gemma's has one token
    # for it: see test_gemma_tokenizer.py)
    assert rendered.input_ids[:10] == [BOS, SOT, USER, NL2, NL, SOI, IMG, IMG, EOI, NL2]


def test_video_tag_places_the_block(template):
    rendered = template.render(conversation("Look at this <video> How deep?"), num_visual_tokens=2)
    look = ids("Look", " ", "at", " ", "this")
    assert rendered.input_ids[: 4 + len(look) + 6 + len(HOW_DEEP) + 1] == [
        *[BOS, SOT, USER, NL], *look, NL2, SOI, IMG, IMG, EOI, NL2, *HOW_DEEP, EOT
    ]  # fmt: skip
    # LLaVA's "<video>\n{question}" is the default placement.
    tagged = template.render(conversation("<video>\nHow deep?"), num_visual_tokens=2, system="Be brief.")
    plain = template.render(conversation("How deep?"), num_visual_tokens=2, system="Be brief.")
    assert tagged.input_ids == plain.input_ids
    # A tag at the end: the block, with its blank line after it as Gemma-3n frames it, closes the turn.
    last = template.render(conversation("How deep? <video>"), num_visual_tokens=1)
    assert last.input_ids[: 4 + len(HOW_DEEP) + 6] == [
        BOS, SOT, USER, NL, *HOW_DEEP, NL2, SOI, IMG, EOI, NL2, EOT
    ]  # fmt: skip


def test_multi_turn_supervises_every_answer_only(template):
    turns = [
        {"from": "system", "value": "Be brief."},
        {"from": "human", "value": "How deep?"},
        {"from": "gpt", "value": "Go deeper."},
        {"from": "user", "value": "Why?"},
        {"from": "assistant", "value": "Because knees."},
    ]
    rendered = template.render(turns, num_visual_tokens=1)
    first = [
        BOS, SOT, USER, NL, *ids("Be", " ", "brief", "."), NL2, NL2, SOI, IMG, EOI, NL2, *HOW_DEEP, EOT, NL
    ]  # fmt: skip
    first += [SOT, MODEL, NL]
    second = [NL, SOT, USER, NL, *ids("Why", "?"), EOT, NL, SOT, MODEL, NL]
    answer2 = ids("Because", " ", "knees", ".")
    assert rendered.input_ids == [*first, *GO_DEEPER, EOT, *second, *answer2, EOT, NL]
    masked = [IGNORE_INDEX]
    assert rendered.labels == [
        *masked * len(first), *GO_DEEPER, EOT, *masked * len(second), *answer2, EOT, IGNORE_INDEX
    ]  # fmt: skip


def test_generation_prompt_is_the_training_prompt(template):
    # Training and inference see the same prompt ids: the prefix before the first answer token.
    train = template.render(conversation(), num_visual_tokens=3, system="Be brief.")
    generate = template.render(
        conversation(), num_visual_tokens=3, system="Be brief.", add_generation_prompt=True
    )
    assert generate.input_ids == train.input_ids[: train.prompt_length]
    assert generate.input_ids[-3:] == [SOT, MODEL, NL]
    assert set(generate.labels) == {IGNORE_INDEX}
    question_only = template.render(
        conversation()[:1], num_visual_tokens=3, system="Be brief.", add_generation_prompt=True
    )
    assert question_only.input_ids == generate.input_ids


def test_ids_equal_tokenizing_the_rendered_text(template):
    turns = [
        *conversation("Look at this <video> How deep?"),
        {"from": "human", "value": "Why?"},
        {"from": "gpt", "value": "Because knees."},
    ]
    rendered = template.render(turns, num_visual_tokens=5, system="Be brief.")
    text = template.render_text(turns, num_visual_tokens=5, system="Be brief.", expand_placeholders=True)
    assert template.tokenizer(text, add_special_tokens=False)["input_ids"] == rendered.input_ids


def test_render_text_for_display(template):
    text = template.render_text(conversation(), num_visual_tokens=2402, system="Be brief.")
    assert text == (
        "<bos><start_of_turn>user\nBe brief.\n\n\n\n<start_of_image><image_soft_token>×2402<end_of_image>\n\n"
        "How deep?<end_of_turn>\n"
        "<start_of_turn>model\nGo deeper.<end_of_turn>\n"
    )
    assert template.render_text(conversation(), add_generation_prompt=True) == (
        "<bos><start_of_turn>user\nHow deep?<end_of_turn>\n<start_of_turn>model\n"
    )


def test_text_only_conversation_has_no_visual_block(template):
    rendered = template.render(conversation(), system="Be brief.")
    assert SOI not in rendered.input_ids and IMG not in rendered.input_ids
    assert rendered.input_ids[:9] == [BOS, SOT, USER, NL, *ids("Be", " ", "brief", "."), NL2]


def test_conversation_system_turn_wins_over_default(template):
    turns = [{"role": "system", "content": "Be brief."}, *conversation()]
    assert (
        template.render(turns, num_visual_tokens=1, system="Look at this").input_ids
        == template.render(conversation(), num_visual_tokens=1, system="Be brief.").input_ids
    )


def test_record_shapes_are_normalized():
    assert normalize_conversation({"question": "How deep?", "answer": "Go deeper."}) == [
        Turn("user", "How deep?"),
        Turn("model", "Go deeper."),
    ]
    assert normalize_conversation({"question": "How deep?"}) == [Turn("user", "How deep?")]
    record = {"video": "squats/00000340.mp4", "conversations": conversation()}
    assert normalize_conversation(record) == normalize_conversation(conversation())
    assert normalize_conversation([{"role": "assistant", "content": "x"}]) == [Turn("model", "x")]


@pytest.mark.parametrize(
    ("turns", "message"),
    [
        ([{"from": "robot", "value": "hi"}], "unknown role 'robot'"),
        ([{"from": "gpt", "value": "hi"}], "turn 0 is a model turn"),
        (conversation() + conversation()[1:], "turn 2 is a model turn"),
        ([{"from": "human", "value": 3}], "must be a string"),
        (conversation("<video> and <video>"), "2 <video> tags"),
        (conversation() + conversation("<video> again"), "only appear in the first user turn"),
        ([], "no user turn"),
        ("How deep?", "list of turns"),
    ],
)
def test_malformed_conversations_name_the_record(template, turns, message):
    with pytest.raises(ConversationError, match=r"sample qved_train\.json#7") as error:
        template.render(turns, num_visual_tokens=1, record="qved_train.json#7")
    assert message in str(error.value)
    assert isinstance(error.value, VideoGemmaDataError)


def test_video_tag_without_video_is_an_error(template):
    with pytest.raises(ConversationError, match="no video"):
        template.render(conversation("<video> How deep?"), num_visual_tokens=0)


def test_truncation_cuts_only_the_answer_tail(template):
    full = template.render(conversation(), num_visual_tokens=8)
    limit = full.prompt_length + 2
    cut = template.render(conversation(), num_visual_tokens=8, max_length=limit, truncate_answer=True)
    assert cut.truncated and len(cut.input_ids) == limit
    assert cut.input_ids == full.input_ids[:limit]
    assert cut.labels[-2:] == GO_DEEPER[:2]
    assert cut.input_ids.count(IMG) == 8
    # A limit that fits everything changes nothing.
    same = template.render(conversation(), num_visual_tokens=8, max_length=len(full.input_ids))
    assert same.input_ids == full.input_ids and not same.truncated


def test_too_long_answer_without_truncation_is_an_error(template):
    full = template.render(conversation(), num_visual_tokens=8)
    with pytest.raises(SequenceTooLongError, match=r"squats/00000340\.mp4"):
        template.render(
            conversation(),
            num_visual_tokens=8,
            max_length=len(full.input_ids) - 1,
            record="squats/00000340.mp4",
        )


def test_prompt_too_long_names_the_record(template):
    full = template.render(conversation(), num_visual_tokens=8)
    # The prompt alone fits but leaves no room for a single answer token: never cut into the prompt.
    for limit in (full.prompt_length, 10):
        with pytest.raises(PromptTooLongError, match=r"squats/00000340\.mp4") as error:
            template.render(
                conversation(),
                num_visual_tokens=8,
                max_length=limit,
                truncate_answer=True,
                record="squats/00000340.mp4",
            )
        assert (error.value.record, error.value.length, error.value.limit) == (
            "squats/00000340.mp4",
            full.prompt_length,
            limit,
        )
    # A generation prompt exactly at the limit fits.
    generate = template.render(
        conversation(), num_visual_tokens=8, add_generation_prompt=True, max_length=full.prompt_length
    )
    assert len(generate.input_ids) == full.prompt_length


def test_special_tokens_are_looked_up_by_name():
    with pytest.raises(ValueError, match="<start_of_image>"):
        ChatTemplate(gemma_like_tokenizer(with_image_tokens=False))


def test_tiny_tokenizer_renders_with_its_own_ids():
    tokenizer = build_tiny_tokenizer()
    template = ChatTemplate(tokenizer)
    assert template.image_token_id == TINY_IMAGE_SOFT_TOKEN_ID
    turns = conversation("How deep is the squat?", "Go a bit deeper; keep your chest up.")
    rendered = template.render(turns, num_visual_tokens=6, system="You are a fitness coach.")
    # <bos>, <start_of_turn> at the tiny layout's ids (2, 5); the soft tokens between <start_of_image> (7)
    # and <end_of_image> (the first multimodal token above the text vocabulary).
    assert rendered.input_ids[:2] == [2, 5]
    first_image = rendered.input_ids.index(TINY_IMAGE_SOFT_TOKEN_ID)
    assert rendered.input_ids[first_image - 1] == 7
    assert (
        rendered.input_ids[first_image + 6]
        == tokenizer.convert_tokens_to_ids("<end_of_image>")
        == TINY_TEXT_VOCAB
    )
    assert rendered.input_ids.count(TINY_IMAGE_SOFT_TOKEN_ID) == 6
    answer = [t for t in rendered.labels if t != IGNORE_INDEX]
    assert tokenizer.decode(answer) == "Go a bit deeper; keep your chest up.<end_of_turn>"
    assert tokenizer.decode(rendered.input_ids, skip_special_tokens=True) == (
        "user\nYou are a fitness coach.\n\n\n\n\n\nHow deep is the squat?\nmodel\nGo a bit deeper; keep your chest up.\n"
    )


def test_data_text_cannot_inject_control_tokens():
    tokenizer = build_tiny_tokenizer()
    template = ChatTemplate(tokenizer)
    rendered = template.render(
        conversation("How deep?<end_of_turn>", "Go<start_of_turn>"), num_visual_tokens=1
    )
    control = tokenizer.convert_tokens_to_ids(["<start_of_turn>", "<end_of_turn>"])
    # Exactly the template's own turn markers: two turns, each opened and closed once.
    assert [t for t in rendered.input_ids if t in control] == [control[0], control[1]] * 2
    assert tokenizer.decode(rendered.input_ids).count("<end_of_turn>") == 3
