"""Single-video inference: `load`, `answer`, streaming, and `videogemma infer` on the tiny preset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import videogemma
from videogemma.cli import main as videogemma_cli
from videogemma.errors import VideoDecodeError
from videogemma.inference.generate import GenerationSettings, answer, generate_answers, stream_answer

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example() -> str:
    """The README's first Python block (the API example), as a user would copy it."""
    text = README.read_text(encoding="utf-8")
    start = text.index("```python\n") + len("```python\n")
    return text[start : text.index("```", start)]


def test_readme_example_runs_and_matches_answer(tmp_path, real_clip, tiny_model, capsys, monkeypatch):
    (tmp_path / "exercise.mp4").symlink_to(real_clip)
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_example(), "README example", "exec"), {})
    printed = capsys.readouterr().out.strip()
    model, processor = tiny_model
    expected = answer(
        model, processor, real_clip, "How is my squat form?", settings=GenerationSettings(max_new_tokens=32)
    )
    assert printed == expected.text


def test_load_preset_is_deterministic_and_ready(tiny_model):
    model, processor = tiny_model
    again, _ = videogemma.load("tiny")
    assert not model.training
    assert processor.image_token_id == model.config.image_token_id
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    other, _ = videogemma.load("tiny", seed=1)
    assert not torch.equal(next(model.image_projector.parameters()), next(other.image_projector.parameters()))


def test_load_saved_model_gives_the_same_answer(tmp_path, real_clip, tiny_model):
    model, processor = tiny_model
    model.save_pretrained(tmp_path / "saved")
    processor.save_pretrained(tmp_path / "saved")
    loaded, loaded_processor = videogemma.load(tmp_path / "saved")
    settings = GenerationSettings(max_new_tokens=12)
    assert answer(loaded, loaded_processor, real_clip, settings=settings).text == (
        answer(model, processor, real_clip, settings=settings).text
    )


def test_answer_is_greedy_and_counts_tokens(real_clip, tiny_model):
    model, processor = tiny_model
    settings = GenerationSettings(max_new_tokens=10)
    first = answer(model, processor, real_clip, settings=settings)
    second = answer(model, processor, real_clip, settings=settings)
    assert first.text == second.text
    assert 1 <= first.generated_tokens <= 10
    assert first.time_to_first_token is not None and 0 < first.time_to_first_token <= first.generation_time
    assert first.tokens_per_second > 0


def test_sampling_with_a_seed_is_reproducible(real_clip, tiny_model):
    model, processor = tiny_model
    settings = GenerationSettings(max_new_tokens=10, do_sample=True, temperature=1.5, top_k=0, seed=7)
    assert answer(model, processor, real_clip, settings=settings).text == (
        answer(model, processor, real_clip, settings=settings).text
    )


def test_stream_answer_yields_the_same_text(real_clip, tiny_model):
    model, processor = tiny_model
    settings = GenerationSettings(max_new_tokens=12)
    streamed = "".join(stream_answer(model, processor, real_clip, "How is my form?", settings=settings))
    assert streamed.strip() == answer(model, processor, real_clip, "How is my form?", settings=settings).text


def test_generate_answers_matches_model_generate(real_clip, tiny_model):
    model, processor = tiny_model
    inputs = processor(videos=[real_clip], padding_side="left")
    expected = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    ids = expected[0, inputs["input_ids"].shape[1] :]
    result = generate_answers(model, processor, inputs, GenerationSettings(max_new_tokens=8))[0]
    assert result.text == processor.decode(ids, skip_special_tokens=True).strip()


def test_missing_video_names_the_file(tmp_path, tiny_model):
    model, processor = tiny_model
    with pytest.raises(VideoDecodeError, match=r"missing\.mp4"):
        answer(model, processor, tmp_path / "missing.mp4")


def test_infer_command_streams_the_answer(real_clip, tiny_model, capsys):
    model, processor = tiny_model
    expected = answer(
        model, processor, real_clip, "Any mistakes?", settings=GenerationSettings(max_new_tokens=8)
    )
    status = videogemma_cli(
        ["infer", str(real_clip), "--prompt", "Any mistakes?", "--max-new-tokens", "8", "--stream"]
    )
    captured = capsys.readouterr()
    assert status == 0
    assert captured.out.strip() == expected.text
    assert "tokens/s" in captured.err


def test_infer_command_reports_a_bad_video(tmp_path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    assert videogemma_cli(["infer", os.fspath(bad), "--max-new-tokens", "2"]) == 2
    assert "broken.mp4" in capsys.readouterr().err


def test_model_arguments_accept_a_saved_folder(tmp_path, real_clip, tiny_model, capsys):
    model, processor = tiny_model
    model.save_pretrained(tmp_path / "m")
    processor.save_pretrained(tmp_path / "m")
    assert (
        videogemma_cli(["infer", str(real_clip), "--model", str(tmp_path / "m"), "--max-new-tokens", "4"])
        == 0
    )
    out = capsys.readouterr()
    assert "random weights" not in out.err
    assert Path(tmp_path / "m" / "config.json").is_file()


def test_the_natural_batched_call_generates_what_one_by_one_does(tmp_path, real_clip, tiny_model):
    """Without `padding_side`, a batch of questions is padded on the left, so each answer follows its prompt."""
    model, processor = tiny_model
    questions = ["Hi", "How is my squat form? Tell me everything you see, please."]
    batch = processor(videos=[real_clip, real_clip], text=questions)
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][:, -1].all()  # left padding
    output = model.generate(**batch, max_new_tokens=6, do_sample=False)
    batched = [text.strip() for text in processor.batch_decode(output[:, batch["input_ids"].shape[1] :])]
    settings = GenerationSettings(max_new_tokens=6)
    assert batched == [answer(model, processor, real_clip, q, settings=settings).text for q in questions]
    training = processor(
        videos=[real_clip],
        conversations=[[{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "squats - good form"}]],
    )
    assert (
        training["attention_mask"][0, -1] == 1
    )  # a finished conversation is a training sample: right padding
