"""The lmms-eval plugin against lmms-eval's own model API (its registry, base class, request and message types).

lmms-eval's evaluator and task loading are not run: installing the package with its dependencies replaces the
CPU torch with a CUDA build and pins PyAV below 16, so the development set-up installs it without them (its
model API needs only loguru and pytz). The test builds the requests the evaluator builds for a chat model
(`Instance` with `(context, doc_to_messages, generation options, doc id, task, split)`, the task's documents in
`task_dict`) from a tiny local task over the real clip.
"""

from __future__ import annotations

import logging
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from lmms_eval.api.instance import Instance
from lmms_eval.models.registry_v2 import ModelRegistryV2

from videogemma.constants import DEFAULT_PROMPT
from videogemma.evaluation.lmms_eval_plugin import VideoGemma
from videogemma.inference.generate import GenerationSettings, answer

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest's own TOML reader
    import tomli as tomllib

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
TASK, SPLIT = "tiny_video_qa", "test"


@pytest.fixture(scope="module")
def plugin() -> VideoGemma:
    return VideoGemma.create_from_arg_string(
        "pretrained=tiny,max_new_tokens=8", {"batch_size": 2, "device": "cpu"}
    )


def to_messages(doc: dict) -> list[dict]:
    content = [{"type": "video", "url": str(doc["video"])}] if doc.get("video") else []
    content += [{"type": "image", "url": doc["image"]}] if doc.get("image") else []
    if doc.get("question"):
        content.append({"type": "text", "text": doc["question"]})
    return [{"role": "user", "content": content}]


def requests_for(plugin: VideoGemma, docs: list[dict], gen_kwargs: dict) -> list[Instance]:
    plugin.task_dict = {TASK: {SPLIT: docs}}
    return [
        Instance(
            request_type="generate_until",
            arguments=("", to_messages, dict(gen_kwargs), doc_id, TASK, SPLIT),
            idx=0,
            metadata={"task": TASK, "doc_id": doc_id, "repeats": 1},
        )
        for doc_id in range(len(docs))
    ]


def test_the_entry_point_registers_a_chat_model_with_lmms_eval():
    declared = tomllib.loads(PYPROJECT.read_text())["project"]["entry-points"]["lmms_eval.models"]
    entry_point = EntryPoint(name="videogemma", value=declared["videogemma"], group="lmms_eval.models")
    registry = ModelRegistryV2()
    for manifest in registry._coerce_payload_to_manifests(entry_point.load()):
        registry.register_manifest(manifest)
    resolved = registry.resolve("videogemma")
    assert resolved.model_type == "chat"
    assert registry.get_model_class("videogemma") is VideoGemma  # lmms-eval's own checks: an lmms, not simple


def test_generate_until_answers_each_document_in_order(plugin, real_clip, tmp_path, write_clip, level_frames):
    model, processor = plugin.model, plugin.processor
    other = write_clip(tmp_path / "other.mp4", level_frames(12))
    docs = [
        {"video": real_clip, "question": "Hi"},
        {"video": other, "question": "What is happening in this clip?"},
        {"video": real_clip},  # no question: the QVED prompt
    ]
    got = plugin.generate_until(requests_for(plugin, docs, {"max_new_tokens": 8, "until": []}))
    settings = GenerationSettings(max_new_tokens=8)
    want = [
        answer(model, processor, doc["video"], doc.get("question", DEFAULT_PROMPT), settings=settings).text
        for doc in docs
    ]
    assert got == want and all(got)


def test_stop_strings_and_lengths_come_from_the_task(plugin, real_clip):
    full = answer(
        plugin.model, plugin.processor, real_clip, "Hi", settings=GenerationSettings(max_new_tokens=12)
    ).text
    stop = full.split()[1]  # a word inside the answer
    docs = [{"video": real_clip, "question": "Hi"}]
    [cut] = plugin.generate_until(requests_for(plugin, docs, {"max_new_tokens": 12, "until": [stop]}))
    assert cut == full.split(stop, 1)[0] and len(cut) < len(full)
    [short] = plugin.generate_until(requests_for(plugin, docs, {"max_new_tokens": 2}))
    assert (
        short
        == answer(
            plugin.model, plugin.processor, real_clip, "Hi", settings=GenerationSettings(max_new_tokens=2)
        ).text
    )


def test_an_unreadable_document_is_logged_and_the_others_answered(plugin, real_clip, tmp_path, caplog):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"not a video" * 50)
    docs = [
        {"video": corrupt, "question": "Hi"},
        {"video": real_clip, "question": "Hi"},
        {"image": "x.png", "question": "Hi"},
    ]
    with caplog.at_level(logging.ERROR, logger="videogemma.evaluation.lmms_eval_plugin"):
        got = plugin.generate_until(requests_for(plugin, docs, {"max_new_tokens": 8}))
    want = answer(
        plugin.model, plugin.processor, real_clip, "Hi", settings=GenerationSettings(max_new_tokens=8)
    ).text
    assert got == ["", want, ""]
    assert "document 0" in caplog.text and "corrupt.mp4" in caplog.text and "document 2" in caplog.text


def test_model_arguments_are_checked(tmp_path):
    with pytest.raises(TypeError, match="unknown"):
        VideoGemma.create_from_arg_string("pretrained=tiny,unknown=1")
    with pytest.raises(ValueError, match="batch_size"):
        VideoGemma.create_from_arg_string("pretrained=tiny", {"batch_size": "auto"})
    with pytest.raises(ValueError, match="not a preset"):
        VideoGemma.create_from_arg_string(f"pretrained={tmp_path / 'missing'}")
    with pytest.raises(NotImplementedError, match="generation tasks"):
        VideoGemma.create_from_arg_string("pretrained=tiny").loglikelihood([])
