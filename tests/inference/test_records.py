"""Prediction records: durable appends, resume after a killed run, exports and throughput."""

from __future__ import annotations

import csv
import json

import pytest

from videogemma.inference.records import (
    PredictionRecord,
    PredictionWriter,
    export_csv,
    export_json,
    read_json_lines,
    read_records,
    throughput_stats,
)


def _record(record_id, **overrides):
    data = {
        "id": record_id,
        "video_path": f"squats/{record_id:08d}.mp4",
        "prompt": "Please evaluate the exercise form shown.",
        "ground_truth": "squats - knees caving in",
        "prediction": "squats - knees caving in",
        "status": "success",
        "error": None,
        "generated_tokens": 10,
        "generation_time": 0.5,
        "tokens_per_second": 20.0,
    }
    data.update(overrides)
    return data


def test_writer_appends_one_line_per_record_and_reads_back(tmp_path):
    path = tmp_path / "preds.jsonl"
    with PredictionWriter(path) as writer:
        writer.append(_record(1))
        writer.append(PredictionRecord(id=2, ground_truth="x - y", prediction="x - y"))
    lines = path.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [1, 2]
    # The documented keys are written; unset optional keys stay out.
    assert "time_to_first_token" not in json.loads(lines[0])
    records = read_records(path)
    assert [r.id for r in records] == [1, 2]
    assert records[0].tokens_per_second == 20.0 and records[1].status == "success"


def test_torn_last_line_is_ignored_when_reading(tmp_path):
    path = tmp_path / "preds.jsonl"
    path.write_text(json.dumps(_record(1)) + "\n" + json.dumps(_record(2)) + "\n" + '{"id": 3, "predic')
    with pytest.warns(UserWarning, match="line 3: incomplete last line"):
        records = read_records(path)
    assert [r.id for r in records] == [1, 2]


def test_invalid_line_in_the_middle_is_skipped_and_named(tmp_path):
    path = tmp_path / "preds.jsonl"
    path.write_text(json.dumps(_record(1)) + "\n{not json\n" + json.dumps(_record(2)) + "\n")
    with pytest.warns(UserWarning, match=r"preds.jsonl: skipped 1 unreadable line .*line 2: invalid JSON"):
        records = read_records(path)
    assert [r.id for r in records] == [1, 2]


def test_record_without_id_or_with_unknown_status_is_skipped_and_named(tmp_path):
    path = tmp_path / "preds.jsonl"
    path.write_text(json.dumps({"prediction": "x"}) + "\n" + json.dumps(_record(4, status="done")) + "\n")
    with pytest.warns(UserWarning, match=r"line 1: missing 'id'; line 2 \(id 4\): status 'done'"):
        assert read_records(path) == []


def test_resume_cuts_the_torn_line_and_reports_finished_ids(tmp_path):
    path = tmp_path / "preds.jsonl"
    path.write_text(
        json.dumps(_record(1))
        + "\n"
        + json.dumps(_record(2, status="error", prediction="", error="decode failed"))
        + "\n"
        + '{"id": 3, "vid'
    )
    with pytest.warns(UserWarning), PredictionWriter(path, resume=True) as writer:
        assert writer.finished_ids() == {1, 2}
        assert writer.finished_ids(include_errors=False) == {1}
        writer.append(_record(3))
        writer.append(_record(2))  # the retried sample
    # Every line is valid JSON again: the fragment was cut, not glued to the new record.
    lines = path.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [1, 2, 3, 2]
    records = read_records(path)
    assert [r.id for r in records] == [1, 2, 3]
    assert records[1].status == "success"  # the later record of id 2 wins


def test_resume_false_starts_over(tmp_path):
    path = tmp_path / "preds.jsonl"
    path.write_text(json.dumps(_record(1)) + "\n")
    with PredictionWriter(path, resume=False) as writer:
        assert writer.finished_ids() == set()
        writer.append(_record(7))
    assert [r.id for r in read_records(path)] == [7]


def test_missing_prediction_reads_as_empty(tmp_path):
    path = tmp_path / "preds.jsonl"
    path.write_text(json.dumps({"id": "a", "ground_truth": "squats - ok", "prediction": None}) + "\n")
    (record,) = read_records(path)
    assert record.prediction == "" and record.is_empty and not record.is_error


def test_json_export_round_trips_and_is_a_list(tmp_path):
    records = [PredictionRecord.from_dict(_record(i, custom_field=i * 2)) for i in (1, 2)]
    out = export_json(records, tmp_path / "preds.json")
    data = json.loads(out.read_text())
    assert isinstance(data, list) and data[1]["custom_field"] == 4
    assert [r.to_dict() for r in read_records(out)] == data


def test_csv_export_with_labels_has_every_column(tmp_path):
    records = [
        PredictionRecord.from_dict(_record(1)),
        PredictionRecord.from_dict(_record(2, prediction='a, "b"\nc')),
    ]
    out = export_csv(records, tmp_path / "preds.csv")
    with open(out, newline="") as file:
        rows = list(csv.DictReader(file))
    assert rows[0]["ground_truth"] == "squats - knees caving in"
    assert rows[1]["prediction"] == 'a, "b"\nc'
    assert rows[0]["video_path"] == "squats/00000001.mp4" and rows[0]["error"] == ""


def test_csv_export_without_labels_uses_the_legacy_columns(tmp_path):
    records = [
        PredictionRecord(id=0, video_path="/videos/clip_a.mp4", prediction="squats - good"),
        PredictionRecord(id=1, video_path="/videos/clip_b.mp4", prediction="", status="error", error="x"),
    ]
    out = export_csv(records, tmp_path / "preds.csv")
    with open(out, newline="") as file:
        rows = list(csv.reader(file))
    assert rows == [["video_name", "model_output"], ["clip_a.mp4", "squats - good"], ["clip_b.mp4", ""]]


def test_throughput_statistics():
    records = [
        PredictionRecord.from_dict(
            _record(1, tokens_per_second=10.0, generation_time=1.0, time_to_first_token=0.2)
        ),
        PredictionRecord.from_dict(
            _record(2, tokens_per_second=20.0, generation_time=0.5, time_to_first_token=0.1)
        ),
        PredictionRecord.from_dict(_record(3, tokens_per_second=60.0, generation_time=0.5)),
        PredictionRecord.from_dict(
            _record(4, status="error", prediction="", tokens_per_second=None, generation_time=None)
        ),
    ]
    stats = throughput_stats(records)
    assert stats["tokens_per_second"] == {"mean": 30.0, "median": 20.0, "min": 10.0, "max": 60.0}
    assert stats["time_to_first_token_s"]["mean"] == pytest.approx(0.15)
    assert stats["generated_tokens_total"] == 30
    # Three timed videos in 2 s of generation.
    assert stats["videos_per_second"] == pytest.approx(1.5)
    assert stats["videos_per_second_basis"] == "sum_generation_time"
    with_wall = throughput_stats(records, wall_time_s=8.0)
    assert with_wall["end_to_end_videos_per_second"] == pytest.approx(0.5)  # all four records, wall time
    assert with_wall["videos_per_second"] == pytest.approx(1.5)


def test_a_batch_time_counts_once():
    """Two batches of two that took 1 s and 3 s: 4 videos in 4 s, whatever each record's own time says."""
    records = [
        PredictionRecord.from_dict(_record(i, generation_time=time, batch_time_share=share))
        for i, (time, share) in enumerate([(0.8, 0.5), (1.0, 0.5), (2.0, 1.5), (3.0, 1.5)])
    ]
    stats = throughput_stats(records)
    assert (
        stats["videos_per_second"] == pytest.approx(1.0) and stats["videos_per_second_basis"] == "batch_time"
    )
    assert json.loads(json.dumps(records[0].to_dict()))["batch_time_share"] == 0.5


def test_read_json_lines_reports_line_numbers_and_intact_length(tmp_path):
    path = tmp_path / "log.jsonl"
    good = '{"step": 1}\n\n{"step": 2}\n'
    path.write_text(good + '{"step": 3')
    with pytest.warns(UserWarning):
        items, intact_length = read_json_lines(path)
    assert items == [(1, {"step": 1}), (3, {"step": 2})]
    assert intact_length == len(good.encode())
