"""`videogemma data captions`: captioned videos (LLaVA-style JSON, WebVid CSV) into the conversation files the
projector stages read, which the training data loader accepts as they are."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from videogemma.cli import main
from videogemma.datasets.captions import CAPTION_PROMPT, convert_captions
from videogemma.datasets.records import load_conversation_records
from videogemma.errors import RecordError, VideoGemmaDataError


def read(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))


def test_llava_json_converts_and_loads_as_conversation_records(tmp_path):
    source = tmp_path / "valley.json"
    rows = [
        {"id": "v1", "video": "clips/a.mp4", "conversations": [
            {"from": "human", "value": "<video>\nWhat happens here?"}, {"from": "gpt", "value": "A man squats."}]},
        {"id": "i1", "image": "img/b.jpg", "conversations": [
            {"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": "A cat."}]},
        {"id": "v2", "video": "clips/c.mp4", "conversations": [
            {"from": "human", "value": "Summarize <image>"}, {"from": "gpt", "value": "Two people run."}]},
    ]  # fmt: skip
    source.write_text(json.dumps(rows), encoding="utf-8")
    summary = convert_captions(source, tmp_path / "out", "llava", val_fraction=0.0)
    assert summary.records == {"train": 2, "val": 0} and summary.without_video == 1
    records = read(tmp_path / "out" / "pretrain_train.json")
    assert [r["video"] for r in records] == ["clips/a.mp4", "clips/c.mp4"]
    assert records[1]["conversations"][0] == {"from": "human", "value": "Summarize <video>"}
    loaded = load_conversation_records(tmp_path / "out" / "pretrain_train.json")
    assert [r.video for r in loaded] == ["clips/a.mp4", "clips/c.mp4"]


def test_webvid_csv_converts_with_the_video_template_and_a_stable_split(tmp_path):
    source = tmp_path / "results_train.csv"
    with open(source, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["videoid", "contentUrl", "duration", "page_dir", "name"])
        for k in range(200):
            writer.writerow(
                [1000 + k, f"https://example.org/{k}.mp4", "PT00H00M10S", f"{k % 3:03d}", f"clip {k}"]
            )
    summary = convert_captions(source, tmp_path / "out", "webvid", val_fraction=0.1)
    assert summary.records["train"] + summary.records["val"] == 200
    assert 5 <= summary.records["val"] <= 40  # about a tenth, by a hash of the path
    first = read(tmp_path / "out" / "pretrain_train.json") + read(tmp_path / "out" / "pretrain_val.json")
    record = next(r for r in first if r["video"] == "000/1000.mp4")
    assert record["conversations"] == [
        {"from": "human", "value": f"<video>\n{CAPTION_PROMPT}"},
        {"from": "gpt", "value": "clip 0"},
    ]
    again = convert_captions(source, tmp_path / "again", "webvid", val_fraction=0.1)
    assert again.records == summary.records  # the same split every time
    for split in ("train", "val"):
        load_conversation_records(tmp_path / "out" / f"pretrain_{split}.json")


def test_bad_caption_files_name_the_file_and_record(tmp_path):
    csv_file = tmp_path / "bad.csv"
    csv_file.write_text("videoid,caption\n1,hello\n", encoding="utf-8")
    with pytest.raises(RecordError, match=r"bad\.csv: no column name, page_dir"):
        convert_captions(csv_file, tmp_path / "out", "webvid")
    llava = tmp_path / "bad.json"
    llava.write_text(json.dumps([{"video": "a.mp4", "conversations": [{"from": "human"}]}]), encoding="utf-8")
    with pytest.raises(RecordError, match=r"bad\.json, record 0: 'conversations' must hold"):
        convert_captions(llava, tmp_path / "out", "llava")
    images = tmp_path / "images.json"
    images.write_text(json.dumps([{"image": "a.jpg", "conversations": []}]), encoding="utf-8")
    with pytest.raises(VideoGemmaDataError, match="no captioned video"):
        convert_captions(images, tmp_path / "out", "llava")


def test_the_command_writes_the_files_the_projector_configs_read(tmp_path, capsys):
    import yaml

    from videogemma.train.train_config import SHIPPED_CONFIGS

    source = tmp_path / "c.json"
    source.write_text(json.dumps([{"video": "a.mp4", "conversations": [
        {"from": "human", "value": "<video>"}, {"from": "gpt", "value": "A squat."}]}]), encoding="utf-8")  # fmt: skip
    out = tmp_path / "data" / "pretrain"
    assert main(["data", "captions", "--format", "llava", "--input", str(source), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    for name in ("video_proj", "image_proj"):
        config = yaml.safe_load((SHIPPED_CONFIGS / f"{name}.yaml").read_text(encoding="utf-8"))
        assert Path(config["data"]["train_file"]).name == "pretrain_train.json"
        assert Path(config["data"]["val_file"]).name == "pretrain_val.json"
    assert (out / "pretrain_train.json").is_file() and (out / "pretrain_val.json").is_file()
