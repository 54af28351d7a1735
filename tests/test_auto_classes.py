"""Hugging Face conventions: the Auto classes resolve a saved VideoGemma after `import videogemma` (registered,
no remote code), `from videogemma import VideoGemmaProcessor`, `apply_chat_template`, and `push_to_hub` wired to
the Hub's upload (replaced here: CI has no network)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import videogemma
from videogemma import VideoGemmaProcessor
from videogemma.processing.chat_template import ConversationError

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    """A tiny model saved as a user would: `save_pretrained` of the model and of its processor, one folder."""
    model, processor = videogemma.load("tiny", quiet=True)
    folder = tmp_path_factory.mktemp("saved")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def run_python(code: str) -> subprocess.CompletedProcess:
    """A fresh interpreter: what a user's script sees (nothing of transformers imported before)."""
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=300
    )


def test_import_videogemma_loads_neither_torch_nor_transformers():
    result = run_python(
        """
        import sys, videogemma
        print(sorted(m for m in ("torch", "transformers", "numpy", "av") if m in sys.modules))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("transformers_first", [False, True])
def test_auto_classes_resolve_a_saved_model_after_import_videogemma(saved_model, transformers_first):
    # Either order of imports: registration happens when the Auto module arrives, or at once if it was there.
    imports = (
        "from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor\n"
        "import videogemma\n"
    )
    if not transformers_first:
        imports = "\n".join(reversed(imports.strip().splitlines())) + "\n"
    result = run_python(
        imports
        + f"""
folder = {str(saved_model)!r}
config = AutoConfig.from_pretrained(folder)
model = AutoModelForImageTextToText.from_pretrained(folder)
plain = AutoModel.from_pretrained(folder)
processor = AutoProcessor.from_pretrained(folder)
print(type(config).__name__, type(model).__name__, type(plain).__name__, type(processor).__name__)
print(type(config.videomamba_config).__name__, model.config.num_frames == processor.num_frames)
"""
    )
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.strip().splitlines()[-2:]
    assert first.split() == [
        "VideoGemmaConfig",
        "VideoGemmaForConditionalGeneration",
        "VideoGemmaForConditionalGeneration",
        "VideoGemmaProcessor",
    ]
    assert second.split() == ["VideoMambaConfig", "True"]


def test_the_auto_model_loads_the_same_weights(saved_model):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(saved_model)
    reference, _ = videogemma.load(saved_model, dtype="float32", device="cpu", quiet=True)
    for (name, got), (_, want) in zip(model.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(got, want), name


def test_auto_processor_reads_a_processor_folder(tmp_path):
    from transformers import AutoProcessor

    processor = VideoGemmaProcessor.from_preset("tiny")
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, VideoGemmaProcessor)
    assert loaded.to_dict() == processor.to_dict()


def test_processor_is_exported_at_the_top_level():
    assert "VideoGemmaProcessor" in videogemma.__all__
    assert videogemma.VideoGemmaProcessor is VideoGemmaProcessor
    with pytest.raises(AttributeError, match="no attribute 'NoSuchName'"):
        videogemma.NoSuchName  # noqa: B018


# ---- apply_chat_template ---------------------------------------------------------------------------------------


def test_apply_chat_template_renders_the_one_template(write_clip, level_frames, tmp_path):
    processor = VideoGemmaProcessor.from_preset("tiny")
    clip = write_clip(tmp_path / "clip.mp4", level_frames(12))
    messages = [
        {
            "role": "user",
            "content": [{"type": "video", "video": str(clip)}, {"type": "text", "text": "How is my squat?"}],
        }
    ]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert text == processor.render_text(
        [{"from": "human", "value": "<video>How is my squat?"}], add_generation_prompt=True
    )
    assert text.endswith("<start_of_turn>model\n") and "<image_soft_token>×" in text

    batch = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    direct = processor(videos=[clip], text=["How is my squat?"])
    assert batch.keys() == direct.keys()
    for key in direct:
        assert torch.equal(batch[key], direct[key]), key
    ids = processor.apply_chat_template(messages, tokenize=True, return_dict=False, return_tensors="pt")
    assert torch.equal(ids, direct["input_ids"])


def test_apply_chat_template_takes_a_batch_and_text_only_turns():
    processor = VideoGemmaProcessor.from_preset("tiny")
    conversations = [
        [{"role": "user", "content": "Hello"}],
        [
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
            {"role": "assistant", "content": "Yes"},
        ],
    ]
    texts = processor.apply_chat_template(conversations)
    assert texts[0].endswith("<start_of_turn>model\n")  # ends with a question: a generation prompt
    assert texts[1].endswith("Yes<end_of_turn>\n")


def test_apply_chat_template_refuses_what_it_cannot_render():
    processor = VideoGemmaProcessor.from_preset("tiny")
    two_videos = [{"role": "user", "content": [{"type": "video", "video": "a.mp4"}] * 2}]
    with pytest.raises(ConversationError, match="2 videos"):
        processor.apply_chat_template(two_videos)
    image = [{"role": "user", "content": [{"type": "image", "image": "a.png"}]}]
    with pytest.raises(ConversationError, match="unsupported content part 'image'"):
        processor.apply_chat_template(image)
    nameless = [{"role": "user", "content": [{"type": "video"}]}]
    with pytest.raises(ConversationError, match="names no video"):
        processor.apply_chat_template(nameless)


# ---- push_to_hub -----------------------------------------------------------------------------------------------


class FakeHub:
    """Stands for `HfApi`: records the repository created and the files each commit uploads."""

    def __init__(self) -> None:
        self.repos: list[str] = []
        self.uploads: dict[str, bytes] = {}

    def create_repo(self, repo_id: str, **_: object) -> object:
        self.repos.append(repo_id)
        return type("Repo", (), {"repo_id": repo_id})()

    def create_commit(self, repo_id: str, operations: list, **_: object) -> str:
        for operation in operations:
            self.uploads[operation.path_in_repo] = Path(operation.path_or_fileobj).read_bytes()
        return f"https://huggingface.co/{repo_id}/commit/0"


@pytest.fixture
def fake_hub(monkeypatch) -> FakeHub:
    from huggingface_hub import ModelCard, ModelCardData
    from transformers.utils import hub

    fake = FakeHub()
    monkeypatch.setattr(hub, "hf_api", lambda: fake)
    card = ModelCard.from_template(ModelCardData(library_name="transformers"))
    monkeypatch.setattr(hub, "create_and_tag_model_card", lambda *args, **kwargs: card)
    return fake


def test_processor_push_to_hub_uploads_what_save_pretrained_writes(fake_hub, tmp_path):
    processor = VideoGemmaProcessor.from_preset("tiny")
    processor.push_to_hub("someone/videogemma-tiny")
    assert fake_hub.repos == ["someone/videogemma-tiny"]
    processor.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} <= set(fake_hub.uploads)
    assert json.loads(fake_hub.uploads["processor_config.json"]) == processor.to_dict()


def test_model_push_to_hub_uploads_its_weights(fake_hub, saved_model):
    model = videogemma.VideoGemmaForConditionalGeneration.from_pretrained(saved_model)
    model.push_to_hub("someone/videogemma-tiny")
    assert {"config.json", "model.safetensors"} <= set(fake_hub.uploads)
    assert json.loads(fake_hub.uploads["config.json"])["model_type"] == "videogemma"
