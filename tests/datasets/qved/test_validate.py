"""`validate`: every problem of every record is found and named, and the run fails when there is one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from videogemma.datasets.qved.io import write_json
from videogemma.datasets.qved.prepare import prepare_splits
from videogemma.datasets.qved.validate import validate_split_files
from videogemma.datasets.synthetic.exercises import EXERCISES
from videogemma.datasets.synthetic.generate import generate_dataset


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("prepared")
    generate_dataset(root, per_variant=2, size=32, num_frames=10, exercises=EXERCISES[:2], progress=False)
    prepare_splits(root)
    return root


def test_a_good_dataset_passes(prepared):
    report = validate_split_files([prepared], min_frames=8, progress=False)
    assert report.ok, [str(p) for p in report.problems]
    assert len(report.files) == 6
    assert sum(f.records for f in report.files) == 2 * 12  # both families
    assert all(f.ok_records == f.records for f in report.files)
    check = next(iter(report.videos.values()))
    assert (check.num_frames, check.width, check.height) == (10, 32, 32)
    assert check.duration == pytest.approx(10 / 12, abs=0.01)  # 10 frames at 12 fps


def test_every_problem_is_found_and_named(prepared, tmp_path, real_clip):
    root = tmp_path / "root"
    shutil.copytree(prepared, root)
    records = json.loads((root / "qved_train.json").read_text())
    good = records[0]
    (root / "squats" / "missing.mp4").unlink(missing_ok=True)
    (root / "squats" / "empty.mp4").write_bytes(b"")
    (root / "squats" / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    shutil.copy(real_clip, root / "squats" / "real.mp4")
    broken = [
        {**good, "video": "squats/missing.mp4"},  # 0
        {**good, "video": "squats/empty.mp4"},  # 1
        {**good, "video": "squats/corrupt.mp4"},  # 2
        {"video": good["video"], "conversations": [{"from": "robot", "value": 3}]},  # 3
        {**good, "video": "../outside.mp4"},  # 4
        {"conversations": good["conversations"]},  # 5
        good,  # 6: fine
        {**good, "video": "squats/real.mp4"},  # 7: fine (a real 640×480 H.264 clip)
        "not an object",  # 8
    ]
    write_json(root / "broken.json", broken)
    report = validate_split_files([root / "broken.json"], root=root, min_frames=8, progress=False)
    assert not report.ok
    (file_report,) = report.files
    assert (file_report.records, file_report.ok_records) == (9, 2)
    kinds = {(p.record, p.kind) for p in report.problems}
    assert {
        (0, "missing_video"),
        (1, "empty_video"),
        (2, "undecodable"),
        (3, "bad_schema"),
        (4, "path_outside_root"),
        (5, "bad_schema"),
        (8, "bad_schema"),
    } <= kinds
    assert not {k for k in kinds if k[0] in (6, 7)}
    for problem in report.problems:  # each names the file, the record and (where there is one) the video
        assert str(root / "broken.json") in str(problem) and f"record {problem.record}" in str(problem)
    assert "squats/corrupt.mp4" in str(next(p for p in report.problems if p.record == 2))
    schema_messages = [p.message for p in report.problems if p.record == 3]
    assert any("robot" in m for m in schema_messages)
    assert report.videos[str(root / "squats" / "real.mp4")].num_frames == 145


def test_frame_count_and_duration_limits(prepared):
    report = validate_split_files([prepared / "qved_val.json"], min_frames=11, progress=False)
    assert {p.kind for p in report.problems} == {"too_few_frames"}
    assert all("10 frames, need at least 11" in p.message for p in report.problems)
    report = validate_split_files([prepared / "qved_val.json"], min_duration=2.0, progress=False)
    assert {p.kind for p in report.problems} == {"too_short"}


def test_unreadable_files_and_missing_split_files(prepared, tmp_path):
    (tmp_path / "bad.json").write_text("[{not json")
    (tmp_path / "object.json").write_text('{"video": "x"}')
    report = validate_split_files([tmp_path / "bad.json", tmp_path / "object.json", tmp_path], progress=False)
    kinds = [(Path(p.file).name, p.kind) for p in report.problems]
    assert ("bad.json", "bad_json") in kinds
    assert ("object.json", "bad_schema") in kinds  # read as JSON Lines: one record without a conversation
    assert ("qved_train.json", "missing_file") in kinds and (
        "qved_feedbacks_test.json",
        "missing_file",
    ) in kinds


def test_json_lines_and_flat_records(prepared, tmp_path):
    video = json.loads((prepared / "qved_train.json").read_text())[0]["video"]
    lines = [
        {"video": video, "question": "what?", "answer": "squats - good form"},
        {
            "video": video,
            "conversations": [{"from": "user", "value": "<video>\\nq"}, {"from": "assistant", "value": "a"}],
        },
        {"video": video, "question": "and now?"},  # another prompt: not a duplicate of record 0
    ]
    path = tmp_path / "flat.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    report = validate_split_files([path], root=prepared, progress=False)
    assert [(p.record, p.kind) for p in report.problems] == [(2, "bad_schema")]
    report.write(tmp_path / "report.json")
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["ok"] is False and saved["files"][0]["problems"][0]["record"] == 2
