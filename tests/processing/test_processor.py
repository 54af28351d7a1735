from __future__ import annotations

import json
import string
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer
from transformers.models.gemma.tokenization_gemma import GemmaTokenizer

from videogemma.config import VideoGemmaConfig
from videogemma.constants import IGNORE_INDEX
from videogemma.errors import PromptTooLongError, VideoGemmaDataError
from videogemma.processing.processor import PROCESSOR_CONFIG_NAME, VideoGemmaProcessor
from videogemma.processing.tokenizer import build_tiny_tokenizer
from videogemma.processing.transforms import clip_transform, videomamba_transform
from videogemma.processing.video import read_video_frames, sample_frame_indices

QUESTION = "How is my squat?"
ANSWER = "squats - knees caving in; push the knees out over the toes"


@pytest.fixture(scope="module")
def processor() -> VideoGemmaProcessor:
    return VideoGemmaProcessor.from_preset("tiny")


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """12 random frames of a 40×56 clip (a frame count other than the processor's 8)."""
    return np.random.default_rng(0).integers(0, 256, size=(12, 40, 56, 3), dtype=np.uint8)


def training_conversation(answer: str = ANSWER) -> list[dict]:
    return [{"from": "human", "value": QUESTION}, {"from": "gpt", "value": answer}]


def test_real_clip_gives_model_shaped_inputs(processor, real_clip):
    config = VideoGemmaConfig.from_preset("tiny")
    batch = processor(videos=[str(real_clip)], text=[QUESTION], padding_side="left")
    T, Sc, Sv = config.num_frames, config.vision_config.image_size, config.videomamba_config.image_size
    assert batch["clip_pixel_values"].shape == (1, T, 3, Sc, Sc)
    assert batch["videomamba_pixel_values"].shape == (1, T, 3, Sv, Sv)
    assert batch["clip_pixel_values"].dtype == torch.float32
    assert (
        torch.isfinite(batch["clip_pixel_values"]).all()
        and torch.isfinite(batch["videomamba_pixel_values"]).all()
    )
    ids = batch["input_ids"][0]
    assert (ids == config.image_token_id).sum() == config.num_visual_tokens
    assert batch["attention_mask"].all() and "labels" not in batch
    # A question alone gets the generation prompt.
    assert processor.decode(ids[-3:], skip_special_tokens=False) == "<start_of_turn>model\n"
    # The pixels are the two transforms of the frames read_video_frames picks.
    frames = read_video_frames(real_clip, T)
    assert torch.equal(batch["clip_pixel_values"][0], clip_transform(frames, Sc))
    assert torch.equal(batch["videomamba_pixel_values"][0], videomamba_transform(frames, Sv))


def test_training_batch_is_right_padded_with_answer_labels(processor, frames):
    short, long = training_conversation("squats - good form"), training_conversation()
    batch = processor(videos=[frames, frames], conversations=[short, long], return_labels=True)
    samples = [processor.process_sample(frames, c) for c in (short, long)]
    lengths = [len(s["input_ids"]) for s in samples]
    assert lengths[0] < lengths[1] == batch["input_ids"].shape[1]
    for row, (sample, n) in enumerate(zip(samples, lengths)):
        assert torch.equal(batch["input_ids"][row, :n], sample["input_ids"])
        assert torch.equal(batch["labels"][row, :n], sample["labels"])
        assert (batch["input_ids"][row, n:] == processor.pad_token_id).all()
        assert (batch["labels"][row, n:] == IGNORE_INDEX).all()
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (lengths[1] - n)
    answer = batch["labels"][1][batch["labels"][1] != IGNORE_INDEX]
    assert processor.decode(answer) == ANSWER
    # A conversation ending with its answer gets no generation prompt.
    assert processor.decode(samples[1]["input_ids"][-2:], skip_special_tokens=False) == "<end_of_turn>\n"


def test_generation_batch_is_left_padded(processor, frames):
    batch = processor(
        videos=[frames, frames], text=["Hi", QUESTION + " Be detailed, please."], padding_side="left"
    )
    samples = [processor.process_sample(frames, [{"from": "human", "value": q}]) for q in ("Hi", QUESTION)]
    length = batch["input_ids"].shape[1]
    n = len(samples[0]["input_ids"])
    assert torch.equal(batch["input_ids"][0, length - n :], samples[0]["input_ids"])
    assert (batch["input_ids"][0, : length - n] == processor.pad_token_id).all()
    assert batch["attention_mask"][0].tolist() == [0] * (length - n) + [1] * n
    # Every row ends with the generation prompt, where generation continues.
    assert processor.batch_decode(batch["input_ids"][:, -2:], skip_special_tokens=False) == ["model\n"] * 2
    assert processor.batch_decode(batch["input_ids"])[0] == "user\n\n\n\n\nHi\nmodel\n"


def test_save_and_load_round_trip_gives_identical_outputs(processor, frames, tmp_path):
    tuned = VideoGemmaProcessor.from_preset("tiny", default_system="You are a fitness coach.", max_length=300)
    tuned.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / PROCESSOR_CONFIG_NAME).read_text())
    assert saved["num_frames"] == 8 and saved["num_visual_tokens"] == 40 and saved["max_length"] == 300
    assert saved["image_token"] == "<image_soft_token>" and saved["clip_image_size"] == 64
    loaded = VideoGemmaProcessor.from_pretrained(tmp_path)
    assert loaded.to_dict() == tuned.to_dict()
    kwargs = dict(videos=[frames], conversations=[training_conversation()], return_labels=True)
    expected, actual = tuned(**kwargs), loaded(**kwargs)
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key
    assert "You are a fitness coach." in loaded.decode(actual["input_ids"][0])


def gemma_tokenizer_directory(directory: Path) -> Path:
    """A miniature of Gemma-3n's tokenizer files: `GemmaTokenizer` (byte-fallback BPE), Gemma-3n's special ids."""
    vocab = {
        "<pad>": 0,
        "<eos>": 1,
        "<bos>": 2,
        "<unk>": 3,
        "<mask>": 4,
        "<start_of_turn>": 105,
        "<end_of_turn>": 106,
    }
    vocab |= {"\n": 107, "\n\n": 108} | {f"<0x{byte:02X}>": 238 + byte for byte in range(256)}
    vocab |= {char: 1000 + i for i, char in enumerate(string.ascii_letters + string.digits + ".,;?!-▁")}
    vocab |= {"<start_of_image>": 255999, "<end_of_image>": 262144, "<image_soft_token>": 262145}
    tokenizer = GemmaTokenizer(vocab=vocab, merges=[])
    multimodal = [
        "<start_of_turn>",
        "<end_of_turn>",
        "<start_of_image>",
        "<end_of_image>",
        "<image_soft_token>",
    ]
    tokenizer.add_special_tokens({"additional_special_tokens": multimodal})
    tokenizer.save_pretrained(directory)
    return directory


def test_gemma_tokenizer_directory_works(tmp_path):
    # What the e2b model gets: AutoTokenizer on a Gemma-3n directory; special tokens are found by name.
    tokenizer = AutoTokenizer.from_pretrained(gemma_tokenizer_directory(tmp_path / "gemma"))
    assert isinstance(tokenizer, GemmaTokenizer)
    config = VideoGemmaConfig.from_preset("e2b")
    processor = VideoGemmaProcessor.from_config(config, tokenizer, default_system="Be brief.")
    conversation = [{"from": "human", "value": "How deep?"}, {"from": "gpt", "value": "Go deeper."}]
    sample = processor.encode_conversation(conversation)
    ids, labels = sample["input_ids"].tolist(), sample["labels"].tolist()
    start = ids.index(255999)
    assert ids[:2] == [2, 105] and ids.count(2) == 1
    assert ids[start + 1 : start + 1 + 2402] == [262145] * 2402 and ids.count(262145) == 2402
    assert ids[start + 1 + 2402] == 262144 and ids.count(262144) == 1
    assert ids[-2:] == [106, 107]
    assert processor.decode([t for t in labels if t != IGNORE_INDEX], skip_special_tokens=False) == (
        "Go deeper.<end_of_turn>"
    )
    assert processor.decode(ids) == "user\nBe brief.\n\n\n\n\n\nHow deep?\nmodel\nGo deeper.\n"
    text = processor.render_text(conversation, expand_placeholders=True)
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == ids
    # Saved beside the model and loaded back: the same tokenizer class and the same ids.
    processor.save_pretrained(tmp_path / "model")
    loaded = VideoGemmaProcessor.from_pretrained(tmp_path / "model")
    assert isinstance(loaded.tokenizer, GemmaTokenizer)
    assert loaded.encode_conversation(conversation)["input_ids"].tolist() == ids


def test_mismatched_tokenizer_and_config_are_refused():
    with pytest.raises(ValueError, match="image_token_id=262145"):
        VideoGemmaProcessor.from_config(VideoGemmaConfig.from_preset("e2b"), build_tiny_tokenizer())
    with pytest.raises(ValueError, match="Gemma-3n's tokenizer"):
        VideoGemmaProcessor.from_preset("e2b")


def test_from_pretrained_without_processor_config(tmp_path):
    build_tiny_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match=PROCESSOR_CONFIG_NAME):
        VideoGemmaProcessor.from_pretrained(tmp_path)
    # Hugging Face's Gemma-3n directories hold their own processor_config.json.
    (tmp_path / PROCESSOR_CONFIG_NAME).write_text(
        '{"processor_class": "Gemma3nProcessor", "image_seq_length": 256}'
    )
    with pytest.raises(ValueError, match="describes a Gemma3nProcessor processor, not a VideoGemmaProcessor"):
        VideoGemmaProcessor.from_pretrained(tmp_path)


def test_frames_in_memory_are_sampled_like_files(processor, frames):
    picked = frames[sample_frame_indices(len(frames), processor.num_frames)]
    assert np.array_equal(processor.load_frames(frames), picked)
    # Lists of PIL images or arrays, and torch tensors, are the same video.
    as_pil = [Image.fromarray(frame) for frame in frames]
    assert np.array_equal(processor.load_frames(as_pil), picked)
    assert np.array_equal(processor.load_frames(list(frames)), picked)
    assert np.array_equal(processor.load_frames(torch.from_numpy(frames)), picked)
    # Fewer frames than needed repeat real frames (never black ones).
    three = processor.load_frames(frames[:3])
    assert len(three) == processor.num_frames
    assert all(any(np.array_equal(f, g) for g in frames[:3]) for f in three)
    # A single list of frames given as `videos` is one video.
    batch = processor(videos=as_pil, text=QUESTION)
    clip, _ = processor.preprocess_video(frames)
    assert torch.equal(batch["clip_pixel_values"][0], clip)


@pytest.mark.parametrize(
    "video",
    [
        np.zeros((4, 8, 8, 3), dtype=np.float32),
        np.zeros((4, 8, 8), dtype=np.uint8),
        [np.zeros((8, 8, 3), dtype=np.uint8), np.zeros((9, 8, 3), dtype=np.uint8)],
        [],
        42,
    ],
)
def test_bad_videos_are_data_errors(processor, video):
    with pytest.raises(VideoGemmaDataError):
        processor.load_frames(video)


def test_prompt_too_long_fails_before_decoding(processor):
    limited = VideoGemmaProcessor.from_preset("tiny", max_length=30)
    # The text is checked first: the missing file is never opened.
    with pytest.raises(PromptTooLongError, match=r"squats/00000340\.mp4"):
        limited.process_sample("missing.mp4", training_conversation(), record="squats/00000340.mp4")


def test_answer_truncation_is_opt_in(processor, frames):
    prompt_length = len(processor.encode_conversation([{"from": "human", "value": QUESTION}])["input_ids"])
    truncating = VideoGemmaProcessor.from_preset("tiny", max_length=prompt_length + 3, truncate_answer=True)
    sample = truncating.process_sample(frames, training_conversation())
    assert len(sample["input_ids"]) == prompt_length + 3
    assert (sample["labels"] != IGNORE_INDEX).sum() == 3
    strict = VideoGemmaProcessor.from_preset("tiny", max_length=prompt_length + 3)
    with pytest.raises(VideoGemmaDataError, match="enable answer truncation"):
        strict.process_sample(frames, training_conversation())


def test_text_only_and_default_prompt(processor, frames):
    text_only = processor(text=[QUESTION])
    assert set(text_only) == {"input_ids", "attention_mask"}
    assert processor.image_token_id not in text_only["input_ids"]
    default = processor(videos=frames)
    assert processor.default_prompt in processor.decode(default["input_ids"][0])
    with pytest.raises(ValueError, match="all video samples or all text-only"):
        processor(videos=[frames, None], text=["a", "b"])
    with pytest.raises(ValueError, match="2 videos for 1"):
        processor(videos=[frames, frames], text=["a"])


def test_system_text_and_display_rendering(processor):
    conversation = {"video": "squats/00000340.mp4", "question": QUESTION}
    text = processor.render_text(conversation, system="You are a coach.")
    assert text == (
        "<bos><start_of_turn>user\nYou are a coach.\n\n\n\n<start_of_image><image_soft_token>×40<end_of_image>\n\n"
        f"{QUESTION}<end_of_turn>\n<start_of_turn>model\n"
    )
    ids = processor.encode_conversation(conversation, system="You are a coach.")["input_ids"]
    assert (
        processor.decode(ids, skip_special_tokens=False).replace(
            "<image_soft_token>" * 40, "<image_soft_token>×40"
        )
        == text
    )
