from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from videogemma.config import (
    TINY_IMAGE_SOFT_TOKEN_ID,
    TINY_MULTIMODAL_TOKENS,
    TINY_SPECIAL_TOKENS,
    TINY_TEXT_VOCAB,
    TINY_VOCAB,
    VideoGemmaConfig,
)
from videogemma.processing.tokenizer import build_tiny_tokenizer


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return build_tiny_tokenizer()


def test_layout_matches_config(tokenizer):
    assert tokenizer.convert_ids_to_tokens(list(range(len(TINY_SPECIAL_TOKENS)))) == list(TINY_SPECIAL_TOKENS)
    multimodal_ids = tokenizer.convert_tokens_to_ids(list(TINY_MULTIMODAL_TOKENS))
    assert multimodal_ids == list(range(TINY_TEXT_VOCAB, TINY_TEXT_VOCAB + len(TINY_MULTIMODAL_TOKENS)))
    assert tokenizer.convert_tokens_to_ids("<image_soft_token>") == TINY_IMAGE_SOFT_TOKEN_ID
    assert len(tokenizer) == TINY_TEXT_VOCAB + len(TINY_MULTIMODAL_TOKENS) <= TINY_VOCAB
    # Every id the tokenizer can produce has a row in the tiny model's embedding table.
    assert len(tokenizer) <= VideoGemmaConfig.from_preset("tiny").text_config.vocab_size
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id) == (0, 1, 2)
    # Ordinary text never produces an id at or above the per-layer-input table.
    ids = tokenizer("squats - knees caving in; push the knees out over the toes 😀", add_special_tokens=False)
    assert max(ids["input_ids"]) < TINY_TEXT_VOCAB


@pytest.mark.parametrize(
    "text",
    [
        "Keep your chest up and go a bit deeper.",
        "  leading and trailing spaces \n\n\ttabs\r\nCRLF  ",
        "Ünïcödé: naïve café, Straße, Ελληνικά, русский, 日本語のテキスト, 한국어, עברית, العربية",
        "emoji 🏋️‍♀️🔥 and symbols ∑∫√ ≠ ≤ © ® ™ \x00\x07 control",
        "",
    ],
)
def test_any_text_round_trips(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert tokenizer.unk_token_id not in ids


def test_plain_call_starts_with_bos_like_gemma(tokenizer):
    assert tokenizer("squats")["input_ids"][0] == tokenizer.bos_token_id
    assert tokenizer.decode(tokenizer("squats")["input_ids"], skip_special_tokens=True) == "squats"


def test_exercise_vocabulary_is_compact(tokenizer):
    # The embedded corpus makes QVED's words single tokens, so answers stay short for the tiny model.
    for word in [" squats", " knees", " caving", " push", " deeper", " chest", " straight", " hips"]:
        assert len(tokenizer(word, add_special_tokens=False)["input_ids"]) == 1, word
    prompt = "Please evaluate the exercise form shown. What mistakes, if any, are present?"
    assert len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) < len(prompt) / 4


def test_building_twice_gives_identical_files(tmp_path):
    build_tiny_tokenizer().save_pretrained(tmp_path / "a")
    build_tiny_tokenizer().save_pretrained(tmp_path / "b")
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert "tokenizer.json" in names
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


@pytest.mark.slow
def test_another_process_builds_the_same_tokenizer(tokenizer):
    # A different hash seed changes set/dict iteration order: training must not depend on it.
    code = (
        "import hashlib; from videogemma.processing.tokenizer import build_tiny_tokenizer; "
        "print(hashlib.sha256(build_tiny_tokenizer().backend_tokenizer.to_str().encode()).hexdigest())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    expected = hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()
    assert result.stdout.strip() == expected


@pytest.mark.parametrize("loader", [AutoTokenizer.from_pretrained, PreTrainedTokenizerFast.from_pretrained])
def test_save_and_load_keeps_ids_and_special_tokens(tokenizer, tmp_path, loader):
    tokenizer.save_pretrained(tmp_path)
    loaded = loader(tmp_path)
    text = "Push the knees out over the toes. 日本語"
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert loaded.convert_tokens_to_ids(list(TINY_SPECIAL_TOKENS + TINY_MULTIMODAL_TOKENS)) == list(
        range(len(TINY_SPECIAL_TOKENS))
    ) + list(range(TINY_TEXT_VOCAB, TINY_TEXT_VOCAB + len(TINY_MULTIMODAL_TOKENS)))
    assert (loaded.pad_token, loaded.eos_token, loaded.bos_token) == ("<pad>", "<eos>", "<bos>")
    ids = loaded("<start_of_turn>model\nGo deeper.<end_of_turn>", add_special_tokens=False)["input_ids"]
    assert loaded.decode(ids, skip_special_tokens=True) == "model\nGo deeper."
