"""Batch inference: records per sample, failures as error records, resume, batch-size equivalence, exports."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from videogemma.cli import main as videogemma_cli
from videogemma.inference.batch import list_samples, run_batch_inference
from videogemma.inference.generate import GenerationSettings
from videogemma.inference.records import read_records

SETTINGS = GenerationSettings(max_new_tokens=6)
# Questions of different lengths, so that a batch really is left padded.
QUESTIONS = [
    "Form?",
    "Please evaluate the exercise form shown.",
    "What is wrong with my knees and back here?",
    "Ok?",
]


def write_split(folder: Path, videos: list[str], questions: list[str] | None = None) -> Path:
    records = [
        {
            "video": video,
            "conversations": [
                {"from": "human", "value": (questions or QUESTIONS)[k % len(questions or QUESTIONS)]},
                {"from": "gpt", "value": f"squats - answer {k}"},
            ],
        }
        for k, video in enumerate(videos)
    ]
    path = folder / "split.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def jsonl_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture
def dataset(tmp_path, make_clips, corrupt_clip) -> Path:
    """Four good clips, a corrupt one (index 2) and a missing one (index 4) in a split file."""
    clips = make_clips(tmp_path / "videos", 4)
    corrupt_clip(tmp_path / "videos" / "corrupt.mp4")
    names = [f"videos/{c.name}" for c in clips]
    return write_split(
        tmp_path, [names[0], names[1], "videos/corrupt.mp4", names[2], "videos/missing.mp4", names[3]]
    )


def test_batch_records_errors_and_goes_on(tmp_path, dataset, tiny_model):
    model, processor = tiny_model
    out = tmp_path / "out" / "predictions.jsonl"
    samples = list_samples(dataset)
    stats = run_batch_inference(
        model, processor, samples, out, batch_size=3, num_workers=1, settings=SETTINGS, show_progress=False
    )
    records = {record.id: record for record in read_records(out)}
    assert sorted(records) == [0, 1, 2, 3, 4, 5]
    for index in (2, 4):
        assert records[index].status == "error"
        assert records[index].prediction == ""
    assert "corrupt.mp4" in records[2].error
    assert "missing.mp4" in records[4].error
    for index in (0, 1, 3, 5):
        record = records[index]
        assert record.status == "success" and record.error is None
        assert record.ground_truth == f"squats - answer {index}"
        assert record.prompt == QUESTIONS[index % len(QUESTIONS)]
        assert 1 <= record.generated_tokens <= SETTINGS.max_new_tokens
        assert record.tokens_per_second > 0 and record.time_to_first_token > 0
    assert stats["records"] == 6 and stats["successful"] == 4 and stats["errors"] == 2
    # Exports in input order, and the statistics file.
    exported = json.loads(out.with_suffix(".json").read_text())
    assert [item["id"] for item in exported] == [0, 1, 2, 3, 4, 5]
    with open(out.with_suffix(".csv"), newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["status"] for row in rows] == ["success", "success", "error", "success", "error", "success"]
    saved = json.loads((out.parent / "predictions_throughput.json").read_text())
    assert saved["tokens_per_second"]["mean"] > 0 and saved["videos_per_second"] > 0
    # What `eval`'s report names of the run: the decoding, when it finished, where the videos were read from.
    assert (
        saved["generation"]["max_new_tokens"] == SETTINGS.max_new_tokens
        and not saved["generation"]["do_sample"]
    )
    assert saved["video_root"] == str(dataset.parent) and saved["finished_at"].endswith(" UTC")

    # Honest timing: one batch's time counts once, and `eval` of the file reports the same videos/s.
    ok = [records[i] for i in (0, 1, 3, 5)]
    assert all(r.batch_time_share <= r.generation_time for r in ok)
    assert saved["videos_per_second"] == pytest.approx(len(ok) / sum(r.batch_time_share for r in ok))
    from videogemma.cli import main

    assert main(["eval", str(out), "--out", str(tmp_path / "report")]) == 0
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["throughput"]["videos_per_second"] == pytest.approx(saved["videos_per_second"])
    assert metrics["run"]["decoding"] == f"greedy, at most {SETTINGS.max_new_tokens} new tokens"
    html = (tmp_path / "report" / "report.html").read_text()
    assert html.count('src="data:image/jpeg;base64,') == 4  # a frame strip for each readable clip


def test_batch_size_does_not_change_greedy_answers(tmp_path, dataset, tiny_model):
    model, processor = tiny_model
    samples = list_samples(dataset)
    predictions = {}
    for batch_size in (1, 4):
        out = tmp_path / f"bs{batch_size}.jsonl"
        run_batch_inference(
            model, processor, samples, out, batch_size=batch_size, num_workers=0, settings=SETTINGS,
            show_progress=False,
        )  # fmt: skip
        predictions[batch_size] = {r.id: (r.prediction, r.generated_tokens) for r in read_records(out)}
    assert predictions[1] == predictions[4]
    assert any(text for text, _ in predictions[1].values())


def test_resume_appends_only_missing_samples(tmp_path, dataset, tiny_model):
    model, processor = tiny_model
    samples = list_samples(dataset)
    out = tmp_path / "predictions.jsonl"
    run_batch_inference(
        model, processor, samples[:3], out, batch_size=2, settings=SETTINGS, show_progress=False
    )
    first_lines = out.read_text(encoding="utf-8").splitlines()
    assert len(first_lines) == 3
    # A run killed mid-write leaves a torn line; resume cuts it off and redoes that sample only.
    with open(out, "a", encoding="utf-8") as file:
        file.write('{"id": 3, "predic')
    with pytest.warns(UserWarning, match="incomplete last line"):
        stats = run_batch_inference(
            model, processor, samples, out, batch_size=2, resume=True, settings=SETTINGS, show_progress=False
        )
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[:3] == first_lines  # finished samples are neither redone nor rewritten
    assert sorted(json.loads(line)["id"] for line in lines[3:]) == [3, 4, 5]
    assert stats["records"] == 3
    # Nothing left: a third run does no work.
    stats = run_batch_inference(
        model, processor, samples, out, batch_size=2, resume=True, settings=SETTINGS, show_progress=False
    )
    assert stats["records"] == 0
    assert len(out.read_text(encoding="utf-8").splitlines()) == 6


def test_prompt_too_long_is_an_error_record(tmp_path, make_clips, tiny_model):
    model, processor = tiny_model
    clips = make_clips(tmp_path / "videos", 2)
    long_question = "please look very carefully at my form " * 200
    split = write_split(tmp_path, [f"videos/{c.name}" for c in clips], ["Form?", long_question])
    out = tmp_path / "p.jsonl"
    run_batch_inference(model, processor, list_samples(split), out, settings=SETTINGS, show_progress=False)
    records = {r.id: r for r in read_records(out)}
    assert records[0].status == "success"
    assert records[1].status == "error" and "PromptTooLongError" in records[1].error


def test_bad_records_and_paths_outside_the_root_are_error_records(tmp_path, make_clips):
    clips = make_clips(tmp_path / "data" / "videos", 1)
    split = tmp_path / "data" / "split.json"
    split.write_text(
        json.dumps(
            [
                {"video": f"videos/{clips[0].name}", "question": "Form?", "answer": "squats - fine"},
                {"video": "../outside.mp4", "question": "Form?"},
                {"conversations": [{"from": "human", "value": "no video"}]},
            ]
        )
    )
    samples = list_samples(split)
    assert [s.error is None for s in samples] == [True, False, False]
    assert "outside" in samples[1].error
    assert "'video'" in samples[2].error
    assert samples[0].ground_truth == "squats - fine" and samples[0].video == clips[0]


def test_infer_batch_command_on_a_video_folder(tmp_path, make_clips, corrupt_clip, capsys):
    make_clips(tmp_path / "videos", 2)
    corrupt_clip(tmp_path / "videos" / "sub" / "zz_broken.mp4")
    out = tmp_path / "preds.jsonl"
    argv = ["infer-batch", "--data", str(tmp_path / "videos"), "--out", str(out), "--batch-size", "2",
            "--num-workers", "0", "--max-new-tokens", "4"]  # fmt: skip
    assert videogemma_cli(argv) == 0
    printed = capsys.readouterr().out
    assert "tokens/s" in printed
    records = read_records(out)
    assert [r.id for r in records] == ["clip_00.mp4", "clip_01.mp4", "sub/zz_broken.mp4"]
    assert [r.status for r in records] == ["success", "success", "error"]
    assert all(r.ground_truth is None for r in records)
    with open(out.with_suffix(".csv"), newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["video_name", "model_output"]
    assert [row[0] for row in rows[1:]] == ["clip_00.mp4", "clip_01.mp4", "zz_broken.mp4"]
    assert (tmp_path / "preds_throughput.json").is_file()
