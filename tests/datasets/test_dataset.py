"""Conversation files, path resolution, the dataset's bad-sample policies (also across DataLoader workers)
and the collator, on tiny generated clips and the tiny processor."""

from __future__ import annotations

import gc
import json
import logging
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from videogemma.constants import IGNORE_INDEX
from videogemma.datasets.bad_samples import SkippedSample
from videogemma.datasets.collator import ConversationCollator
from videogemma.datasets.dataset import ConversationDataset
from videogemma.datasets.records import load_conversation_records, resolve_video_path
from videogemma.errors import PathOutsideRootError, PromptTooLongError, RecordError, VideoGemmaDataError
from videogemma.processing.chat_template import Turn
from videogemma.processing.processor import VideoGemmaProcessor

QUESTION = "Please evaluate the exercise form shown. What mistakes, if any, are present?"


@pytest.fixture(scope="module")
def processor() -> VideoGemmaProcessor:
    return VideoGemmaProcessor.from_preset("tiny")


def _record(video: str, answer: str = "squats - knees caving in") -> dict:
    return {
        "video": video,
        "conversations": [
            {"from": "human", "value": f"<video>\n{QUESTION}"},
            {"from": "gpt", "value": answer},
        ],
        "split": "train",
    }


def _write_json(path: Path, records) -> Path:
    path.write_text(json.dumps(records, indent=2), encoding="utf-8")
    return path


def _write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def dataset_root(tmp_path, write_clip, level_frames) -> Path:
    """A QVED-like folder: four good clips in two classes, plus broken ones."""
    root = tmp_path / "dataset"
    for name in (
        "squats/00000001.mp4",
        "squats/00000002.mp4",
        "pushups/00000003.mp4",
        "pushups/00000004.mp4",
    ):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        write_clip(root / name, level_frames(10))
    (root / "broken").mkdir()
    (root / "broken" / "empty.mp4").touch()
    (root / "broken" / "garbage.mp4").write_bytes(b"\x00\x01 not a video" * 100)
    (root / "broken" / "zero.y4m").write_text("YUV4MPEG2 W64 H48 F10:1 Ip A1:1 C420jpeg\n")
    return root


GOOD = ["squats/00000001.mp4", "squats/00000002.mp4", "pushups/00000003.mp4", "pushups/00000004.mp4"]


# ---- reading conversation files -----------------------------------------------------------------------------


def test_llava_json_list(tmp_path):
    records = [
        _record("squats/00000001.mp4"),
        {
            "video": "pushups/00000003.mp4",
            "conversations": [
                {"from": "system", "value": "You are a fitness coach."},
                {"from": "user", "value": "How is my form?"},
                {"from": "assistant", "value": "pushups - hips sagging"},
                {"from": "human", "value": "And now?"},
                {"from": "gpt", "value": "Better."},
            ],
            "id": "abc",
        },
        {"video": "squats/00000002.mp4", "question": "How is my form?", "answer": "squats - good form"},
        {"video": "squats/00000002.mp4", "conversations": [{"role": "user", "content": "Q"}]},
    ]
    path = _write_json(tmp_path / "train.json", records)
    loaded = load_conversation_records(path)
    assert [r.video for r in loaded] == [r["video"] for r in records]
    assert loaded[0].turns == (
        Turn("user", f"<video>\n{QUESTION}"),
        Turn("model", "squats - knees caving in"),
    )
    assert [t.role for t in loaded[1].turns] == ["system", "user", "model", "user", "model"]
    assert loaded[1].data["id"] == "abc"
    assert loaded[2].turns == (Turn("user", "How is my form?"), Turn("model", "squats - good form"))
    assert loaded[3].turns == (Turn("user", "Q"),)
    assert [r.index for r in loaded] == [0, 1, 2, 3]
    assert all(r.source_file == str(path) for r in loaded)


def test_json_lines_with_blank_lines(tmp_path):
    path = _write_jsonl(
        tmp_path / "train.jsonl",
        [json.dumps(_record("squats/00000001.mp4")), "", json.dumps(_record("pushups/00000003.mp4", "fine"))],
    )
    loaded = load_conversation_records(path)
    assert [(r.index, r.line, r.video) for r in loaded] == [
        (0, 1, "squats/00000001.mp4"),
        (1, 3, "pushups/00000003.mp4"),
    ]
    assert loaded[1].turns[-1] == Turn("model", "fine")
    assert "line 3" in loaded[1].label and "pushups/00000003.mp4" in loaded[1].label


def test_malformed_json_names_file_and_position(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[\n  {"video": "a.mp4",\n   "conversations": [}\n]\n', encoding="utf-8")
    with pytest.raises(RecordError) as error:
        load_conversation_records(path)
    assert str(path) in str(error.value)
    assert "line 3" in str(error.value)


def test_malformed_json_line_names_the_line(tmp_path):
    path = _write_jsonl(tmp_path / "broken.jsonl", [json.dumps(_record("a.mp4")), '{"video": "b.mp4",'])
    with pytest.raises(RecordError) as error:
        load_conversation_records(path)
    assert str(path) in str(error.value) and "line 2" in str(error.value)
    # Collected instead of raised, the good record survives.
    errors: list[RecordError] = []
    assert [r.video for r in load_conversation_records(path, errors=errors)] == ["a.mp4"]
    assert len(errors) == 1 and "line 2" in str(errors[0])


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"conversations": [{"from": "human", "value": "Q"}]}, "missing field 'video'"),
        ({"video": "a.mp4"}, "missing field 'conversations'"),
        ({"video": "a.mp4", "conversations": [{"from": "human"}]}, "missing field 'value'"),
        ({"video": "a.mp4", "conversations": [{"value": "Q"}]}, "missing field 'from'"),
        ({"video": 7, "question": "Q"}, "'video' must be a non-empty string"),
        ({"video": "a.mp4", "conversations": "Q"}, "'conversations' must be a non-empty list"),
        ({"video": "a.mp4", "conversations": [{"from": "robot", "value": "Q"}]}, "unknown role 'robot'"),
        ({"video": "a.mp4", "conversations": [{"from": "human", "value": 3}]}, "must be a string"),
        ({"video": "a.mp4", "conversations": [{"from": "gpt", "value": "A"}]}, "no human/user turn"),
        (["video", "a.mp4"], "expected a JSON object"),
    ],
)
def test_bad_records_name_file_and_record(tmp_path, record, message):
    path = _write_json(tmp_path / "train.json", [_record("ok.mp4"), record])
    with pytest.raises(RecordError) as error:
        load_conversation_records(path)
    assert isinstance(error.value, VideoGemmaDataError)
    assert str(path) in str(error.value)
    assert "record 1" in str(error.value)
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "file not found"),
        ("", "empty file"),
        ("  \n", "empty file"),
        ('"text"', "expected a JSON list"),
    ],
)
def test_unreadable_files(tmp_path, content, message):
    path = tmp_path / "train.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(RecordError, match=message) as error:
        load_conversation_records(path)
    assert str(path) in str(error.value)


# ---- video paths --------------------------------------------------------------------------------------------


def test_paths_resolve_under_the_root(tmp_path):
    root = tmp_path / "root"
    where = {"source_file": "train.json", "record": 4}
    assert resolve_video_path("squats/a.mp4", root, **where) == root / "squats" / "a.mp4"
    assert resolve_video_path("./squats/../pushups/b.mp4", root, **where) == root / "pushups" / "b.mp4"
    assert resolve_video_path(str(root / "c.mp4"), root, **where) == root / "c.mp4"  # absolute, inside


@pytest.mark.parametrize("video", ["../outside.mp4", "squats/../../outside.mp4", "/etc/passwd"])
def test_paths_escaping_the_root_are_rejected(tmp_path, video):
    with pytest.raises(PathOutsideRootError) as error:
        resolve_video_path(video, tmp_path / "root", source_file="train.json", record=4)
    assert "train.json, record 4" in str(error.value)
    assert video in str(error.value)
    # A sibling folder sharing the root's name as a prefix is outside too.
    with pytest.raises(PathOutsideRootError):
        resolve_video_path(str(tmp_path / "root2" / "a.mp4"), tmp_path / "root", source_file="t", record=0)


# ---- the dataset --------------------------------------------------------------------------------------------


def test_items_are_model_tensors_with_the_resolved_path(tmp_path, dataset_root, processor):
    split = _write_json(tmp_path / "train.json", [_record(v) for v in GOOD])
    dataset = ConversationDataset(split, dataset_root, processor, bad_sample_policy="strict")
    assert len(dataset) == 4
    item = dataset[2]
    assert item["video_path"] == str(dataset_root / "pushups" / "00000003.mp4")
    assert item["clip_pixel_values"].shape == (8, 3, 64, 64)
    assert item["videomamba_pixel_values"].shape == (8, 3, 64, 64)
    assert item["input_ids"].shape == item["labels"].shape
    assert (item["input_ids"] == processor.image_token_id).sum() == processor.num_visual_tokens
    # Only the answer (and its end-of-turn) is supervised.
    supervised = item["labels"][item["labels"] != IGNORE_INDEX]
    assert processor.tokenizer.decode(supervised[:-1]) == "squats - knees caving in"
    reference = processor.process_sample(str(dataset_root / GOOD[2]), _record(GOOD[2])["conversations"])
    assert torch.equal(item["input_ids"], reference["input_ids"])
    assert torch.equal(item["clip_pixel_values"], reference["clip_pixel_values"])


def test_dataset_root_defaults_to_the_split_folder(dataset_root, processor):
    split = _write_json(dataset_root / "train.json", [_record(GOOD[0])])
    dataset = ConversationDataset(split, None, processor)
    assert dataset.video_paths == [dataset_root / GOOD[0]]


BROKEN = ["broken/missing.mp4", "broken/empty.mp4", "broken/garbage.mp4", "broken/zero.y4m"]


@pytest.mark.parametrize("video", BROKEN)
def test_strict_fails_at_the_first_bad_video_naming_it(tmp_path, dataset_root, processor, video):
    split = _write_json(tmp_path / "train.json", [_record(GOOD[0]), _record(video)])
    dataset = ConversationDataset(split, dataset_root, processor, bad_sample_policy="strict")
    assert dataset[0]["video_path"].endswith(GOOD[0])
    with pytest.raises(RecordError) as error:
        dataset[1]
    message = str(error.value)
    assert str(split) in message and "record 1" in message and video in message
    assert str(dataset_root / video) in message  # the decode error names the file


def test_strict_rejects_escaping_paths_and_bad_records_when_built(tmp_path, dataset_root, processor):
    split = _write_json(tmp_path / "train.json", [_record(GOOD[0]), _record("../../etc/passwd")])
    with pytest.raises(PathOutsideRootError, match="record 1"):
        ConversationDataset(split, dataset_root, processor, bad_sample_policy="strict")
    split = _write_json(tmp_path / "train.json", [_record(GOOD[0]), {"video": GOOD[1]}])
    with pytest.raises(RecordError, match="record 1"):
        ConversationDataset(split, dataset_root, processor, bad_sample_policy="strict")


def test_prompt_too_long_names_the_record(tmp_path, dataset_root):
    processor = VideoGemmaProcessor.from_preset("tiny", max_length=40)  # below the visual block
    split = _write_json(tmp_path / "train.json", [_record(GOOD[0])])
    with pytest.raises(PromptTooLongError, match=r"train\.json record 0"):
        ConversationDataset(split, dataset_root, processor, bad_sample_policy="strict")[0]
    skipping = ConversationDataset(split, dataset_root, processor, bad_sample_policy="skip")
    assert isinstance(skipping[0], SkippedSample)
    assert skipping.bad_sample_counts() == {"skipped": 1, "PromptTooLongError": 1}


def test_prompt_too_long_is_caught_before_decoding_with_a_frame_cache(tmp_path, dataset_root, monkeypatch):
    processor = VideoGemmaProcessor.from_preset("tiny", max_length=40)
    split = _write_json(tmp_path / "train.json", [_record(GOOD[0])])
    dataset = ConversationDataset(split, dataset_root, processor, frame_cache_bytes=2**20)
    monkeypatch.setattr(processor, "load_frames", lambda video: pytest.fail(f"decoded {video}"))
    assert isinstance(dataset[0], SkippedSample)
    assert dataset.bad_sample_counts() == {"skipped": 1, "PromptTooLongError": 1}


# ---- the decoded-frame cache --------------------------------------------------------------------------------


def _counting_decoder(monkeypatch, processor) -> list:
    decoded = []
    load_frames = processor.load_frames

    def counting(video):
        if isinstance(video, str):
            decoded.append(video)
        return load_frames(video)

    monkeypatch.setattr(processor, "load_frames", counting)
    return decoded


def test_frame_cache_serves_later_epochs_the_same_samples_without_decoding(
    tmp_path, dataset_root, processor, monkeypatch
):
    split = _write_json(tmp_path / "train.json", [_record(v) for v in GOOD])
    plain = ConversationDataset(split, dataset_root, processor)
    cached = ConversationDataset(split, dataset_root, processor, frame_cache_bytes=2**20)
    decoded = _counting_decoder(monkeypatch, processor)
    for _epoch in range(3):
        for position in range(len(GOOD)):
            sample, reference = cached[position], plain[position]
            assert sample.keys() == reference.keys()
            for key in ("input_ids", "labels", "clip_pixel_values", "videomamba_pixel_values"):
                assert torch.equal(sample[key], reference[key]), key
            assert sample["video_path"] == reference["video_path"]
    # The plain dataset decodes every time (3 × 4); the cached one once per clip.
    assert len(decoded) == 3 * len(GOOD) + len(GOOD)
    assert len(cached.frame_cache) == len(GOOD)


def test_frame_cache_stays_within_its_budget(tmp_path, dataset_root, processor, monkeypatch):
    split = _write_json(tmp_path / "train.json", [_record(v) for v in GOOD])
    one_clip = processor.load_frames(str(dataset_root / GOOD[0])).nbytes
    dataset = ConversationDataset(split, dataset_root, processor, frame_cache_bytes=2 * one_clip + 1)
    decoded = _counting_decoder(monkeypatch, processor)
    for _epoch in range(2):
        for position in range(len(GOOD)):
            dataset[position]
    assert len(dataset.frame_cache) == 2 and dataset.frame_cache.bytes == 2 * one_clip
    assert len(decoded) == len(GOOD) + (len(GOOD) - 2)  # the two that did not fit decode again


def test_frame_cache_keeps_the_bad_sample_policy(tmp_path, dataset_root, processor):
    dataset = ConversationDataset(
        _mixed_split(tmp_path), dataset_root, processor, bad_sample_policy="skip", frame_cache_bytes=2**20
    )
    for _epoch in range(2):
        for position in range(len(dataset)):
            dataset[position]
    _check_skips(dataset)
    assert len(dataset.frame_cache) == len(GOOD)
    strict = ConversationDataset(
        _write_json(tmp_path / "s.json", [_record("broken/garbage.mp4")]),
        dataset_root,
        processor,
        bad_sample_policy="strict",
        frame_cache_bytes=2**20,
    )
    with pytest.raises(VideoGemmaDataError, match=r"garbage\.mp4"):
        strict[0]


def _mixed_split(tmp_path) -> Path:
    """Good records interleaved with every kind of bad one, as JSON Lines."""
    lines = [
        json.dumps(_record(GOOD[0])),
        json.dumps(_record("broken/missing.mp4")),
        json.dumps(_record(GOOD[1])),
        '{"video": "squats/00000009.mp4", "conversations": [',  # malformed JSON
        json.dumps(_record("broken/empty.mp4")),
        json.dumps(_record("../outside/00000005.mp4")),  # escapes the root
        json.dumps(_record(GOOD[2])),
        json.dumps(_record("broken/garbage.mp4")),
        json.dumps({"video": GOOD[0], "conversations": [{"from": "gpt", "value": "no question"}]}),
        json.dumps(_record("broken/zero.y4m")),
        json.dumps(_record(GOOD[3])),
    ]
    return _write_jsonl(tmp_path / "train.jsonl", lines)


def _check_skips(dataset: ConversationDataset) -> None:
    skipped = dataset.skipped_samples
    reasons = {s.label: s.reason for s in skipped}
    assert len(skipped) == 7, reasons
    assert dataset.bad_sample_counts() == {
        "skipped": 7,
        "RecordError": 2,
        "PathOutsideRootError": 1,
        "VideoDecodeError": 4,
    }
    by_video = {s.video: s for s in skipped if s.video}
    assert "not found" in by_video[str(dataset.dataset_root / "broken/missing.mp4")].reason
    assert "empty" in by_video[str(dataset.dataset_root / "broken/empty.mp4")].reason
    assert "no decodable frames" in by_video[str(dataset.dataset_root / "broken/zero.y4m")].reason
    assert any("line 4" in s.label and "invalid JSON" in s.reason for s in skipped)
    assert any("outside the dataset root" in s.reason for s in skipped)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_skip_loses_no_good_record_and_reports_every_bad_one(
    tmp_path, dataset_root, processor, num_workers, caplog
):
    split = _mixed_split(tmp_path)
    with caplog.at_level(logging.WARNING, logger="videogemma.datasets.dataset"):
        dataset = ConversationDataset(split, dataset_root, processor, bad_sample_policy="skip")
    # Malformed, escaping and question-less records are left out when the dataset is built.
    assert len(dataset) == 8
    assert any("outside the dataset root" in message for message in caplog.messages)
    loader = DataLoader(
        dataset, batch_size=3, num_workers=num_workers, collate_fn=ConversationCollator(processor)
    )
    seen = [path for batch in loader for path in batch["video_paths"]]
    assert sorted(seen) == sorted(str(dataset_root / v) for v in GOOD)  # each good record exactly once
    _check_skips(dataset)  # the workers' skips are visible in the main process


def test_skip_twice_counts_each_record_once(tmp_path, dataset_root, processor):
    dataset = ConversationDataset(_mixed_split(tmp_path), dataset_root, processor, bad_sample_policy="skip")
    for _epoch in range(2):
        for position in range(len(dataset)):
            dataset[position]
    _check_skips(dataset)


def test_skip_log_file_is_kept_where_asked(tmp_path, dataset_root, processor):
    log = tmp_path / "run" / "skipped.jsonl"
    dataset = ConversationDataset(_mixed_split(tmp_path), dataset_root, processor, skip_log=log)
    for position in range(len(dataset)):
        dataset[position]
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(entries) == 7 and all(entry["reason"] for entry in entries)


def test_temporary_skip_log_is_created_on_demand_and_removed(tmp_path, dataset_root, processor):
    clean = ConversationDataset(_write_json(tmp_path / "a.json", [_record(GOOD[0])]), dataset_root, processor)
    clean[0]
    assert clean.skipped_samples == [] and not clean.skip_log.path.exists()
    dataset = ConversationDataset(
        _write_json(tmp_path / "b.json", [_record(BROKEN[0])]), dataset_root, processor
    )
    dataset[0]
    log = dataset.skip_log.path
    assert log.exists() and dataset.bad_sample_counts()["skipped"] == 1
    del dataset
    gc.collect()
    assert not log.exists()


# ---- the collator -------------------------------------------------------------------------------------------


def test_collator_right_pads_and_stacks(tmp_path, dataset_root, processor):
    records = [_record(GOOD[0], "short"), _record(GOOD[1], "a much longer answer with many more words in it")]
    dataset = ConversationDataset(_write_json(tmp_path / "t.json", records), dataset_root, processor)
    items = [dataset[0], dataset[1]]
    batch = ConversationCollator(processor)(items)
    short, long = (len(item["input_ids"]) for item in items)
    assert short < long
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (2, long)
    assert torch.equal(batch["input_ids"][0, :short], items[0]["input_ids"])
    assert (batch["input_ids"][0, short:] == processor.pad_token_id).all()
    assert batch["attention_mask"][0].tolist() == [1] * short + [0] * (long - short)
    assert (batch["labels"][0, short:] == IGNORE_INDEX).all()
    assert torch.equal(batch["labels"][1], items[1]["labels"])
    assert batch["clip_pixel_values"].shape == (2, 8, 3, 64, 64)
    assert torch.equal(batch["videomamba_pixel_values"][1], items[1]["videomamba_pixel_values"])
    assert batch["video_paths"] == [str(dataset_root / GOOD[0]), str(dataset_root / GOOD[1])]


def test_collator_drops_or_refills_skipped_samples(tmp_path, dataset_root, processor):
    records = [_record(GOOD[0]), _record("broken/empty.mp4"), _record(GOOD[1]), _record("broken/garbage.mp4")]
    dataset = ConversationDataset(_write_json(tmp_path / "t.json", records), dataset_root, processor)
    items = [dataset[i] for i in range(4)]
    assert [isinstance(item, SkippedSample) for item in items] == [False, True, False, True]

    dropped = ConversationCollator(processor)(items)
    assert dropped["video_paths"] == [str(dataset_root / GOOD[0]), str(dataset_root / GOOD[1])]
    assert dropped["input_ids"].shape[0] == 2

    refilled = ConversationCollator(processor, refill_from=dataset)(items)
    assert refilled["input_ids"].shape[0] == 4  # each skipped sample replaced by the next good one
    assert refilled["video_paths"][2:] == [str(dataset_root / GOOD[1]), str(dataset_root / GOOD[0])]

    # A marker from another dataset sharing the collator is refilled from that dataset, never this one.
    other = ConversationDataset(_write_json(tmp_path / "v.json", [_record(GOOD[3])]), dataset_root, processor)
    both = ConversationCollator(processor, refill_from=[other, dataset])(items[:2])
    assert both["video_paths"] == [str(dataset_root / GOOD[0]), str(dataset_root / GOOD[1])]
    assert ConversationCollator(processor, refill_from=other)(items[:2])["video_paths"] == [
        str(dataset_root / GOOD[0])
    ]

    empty = ConversationCollator(processor)([items[1], items[3]])
    assert empty["input_ids"].shape == (0, 0) and empty["video_paths"] == []
    assert dataset.bad_sample_counts()["skipped"] == 2


def test_unknown_policy_is_rejected(tmp_path, processor):
    with pytest.raises(ValueError, match="bad_sample_policy"):
        ConversationDataset(
            _write_json(tmp_path / "t.json", [_record("a.mp4")]), tmp_path, processor, "ignore"
        )
