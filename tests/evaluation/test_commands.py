"""`videogemma eval` end to end on a small prediction file."""

from __future__ import annotations

import json
import sys

import pytest
from openpyxl import load_workbook

from videogemma import cli


@pytest.fixture
def run_cli(monkeypatch):
    assert "videogemma.evaluation.commands" in cli.COMMAND_MODULES
    # Register only this area's commands, so a missing or broken command module of another area does not
    # fail this test; the line above checks ours is wired into the real CLI.
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("videogemma.evaluation.commands",))
    return cli.main


@pytest.fixture
def predictions(tmp_path):
    records = [
        {
            "id": 1,
            "video_path": "squats/00000001.mp4",
            "prompt": "p",
            "ground_truth": "squats - knees caving in",
            "prediction": "squats - knees caving in",
            "status": "success",
            "error": None,
            "generated_tokens": 6,
            "generation_time": 0.3,
            "tokens_per_second": 20.0,
            "time_to_first_token": 0.05,
            "model": "tiny-run",
        },
        {
            "id": 2,
            "video_path": "cat-cow_pose/00000002.mp4",
            "prompt": "p",
            "ground_truth": "cat-cow pose - good",
            "prediction": "cat-cow pose - back not rounded",
            "status": "success",
            "error": None,
            "generated_tokens": 7,
            "generation_time": 0.35,
            "tokens_per_second": 20.0,
            "model": "tiny-run",
        },
        {
            "id": 3,
            "video_path": "pushups/00000003.mp4",
            "prompt": "p",
            "ground_truth": "pushups - elbows flared",
            "prediction": "",
            "status": "error",
            "error": "VideoDecodeError: corrupt",
            "model": "tiny-run",
        },
        {
            "id": 4,
            "video_path": "lunges/00000004.mp4",
            "prompt": "p",
            "ground_truth": "lunges - knee past toes",
            "prediction": "",
            "status": "success",
            "error": None,
            "model": "tiny-run",
        },
    ]
    path = tmp_path / "predictions.jsonl"
    # The run was killed while writing a fifth record.
    path.write_text("".join(json.dumps(record) + "\n" for record in records) + '{"id": 5, "video_pa')
    return path


def test_eval_writes_every_report(run_cli, predictions, tmp_path, capsys):
    out = tmp_path / "report"
    args = [
        "eval",
        str(predictions),
        "--out",
        str(out),
        "--similarity-model",
        "none",
        "--dataset-name",
        "qved-test",
    ]
    assert run_cli(args) == 0
    captured = capsys.readouterr()
    # The torn last line is named on one plain line of stderr, and in metrics.json.
    assert "videogemma eval: warning: " in captured.err and "incomplete last line" in captured.err

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["identifiers"]["skipped_lines"] == [5]
    assert metrics["counts"] == {"total": 4, "success": 2, "error": 1, "empty": 1}
    assert metrics["identifiers"]["model"] == ["tiny-run"]
    assert metrics["identifiers"]["dataset"] == ["qved-test"]
    assert set(metrics["metrics"]) == {"rouge1", "rouge2", "rougeL", "bleu", "meteor"}
    assert set(metrics["metrics"]["meteor"]) == {"label", "mean", "median", "std", "min", "max"}
    assert metrics["metrics"]["rouge1"]["max"] == pytest.approx(1.0)
    assert metrics["exercise_identification"]["accuracy"] == pytest.approx(0.5)
    per_exercise = {row["exercise"]: row for row in metrics["exercise_identification"]["per_exercise"]}
    assert per_exercise["cat-cow pose"]["identified"] == 1 and per_exercise["pushups"]["errors"] == 1
    assert metrics["bands"]["counts"]["rougeL"]["red"] >= 2
    assert "meteor_score" in metrics["metric_variants"]["meteor"]
    assert metrics["metric_variants"]["similarity"] == "skipped (--similarity-model none)"
    assert metrics["throughput"]["tokens_per_second"]["mean"] == pytest.approx(20.0)
    assert metrics["throughput"]["time_to_first_token_s"]["max"] == pytest.approx(0.05)

    # The coaching metrics: 1 exact; 'cat-cow pose - good' has no good-form phrase, so it is a fault (told
    # another fault: detected, not named); the error and the empty answer give no verdict.
    form = metrics["form_feedback"]
    assert form["exact_label"] == {"count": 1, "rate": pytest.approx(0.25)}
    assert form["fault_detection"]["clips_with_fault"] == 4 and form["fault_detection"]["true_positives"] == 2
    assert form["faulty_told_good_form"] == 0 and form["outcomes"]["no answer"] == 2

    rows = list(load_workbook(out / "evaluation.xlsx")["Test Evaluation Results"].iter_rows(values_only=True))
    assert [row[0] for row in rows[1:]] == [1, 2, 3, 4]
    html = (out / "report.html").read_text()
    assert "<title>Form-feedback evaluation: tiny-run on qved-test</title>" in html
    assert html.count("data:image/png;base64,") == 5  # two confusion matrices and three other plots
    assert str(tmp_path) not in html  # no machine paths
    assert (out / "predictions.csv").read_text().startswith("id,video_path,prompt,ground_truth,prediction")
    for name in ("metric_distributions", "score_bands", "exercise_accuracy", "exercise_confusion"):
        assert (out / "plots" / f"{name}.png").is_file()

    printed = captured.out
    assert "samples 4: success 2, error 1, empty 1" in printed
    # The headline leads, coaching metrics first.
    lines = printed.splitlines()
    assert lines[1].split() == ["exercise", "identified:", "50.0%", "(2", "of", "4)"]
    assert lines[2].split()[:3] == ["exact", "label:", "25.0%"]
    assert "tokens/s: mean 20.00" in printed


def test_eval_good_form_phrases_are_configurable(run_cli, predictions, tmp_path, capsys):
    out = tmp_path / "report"
    args = ["eval", str(predictions), "--out", str(out), "--similarity-model", "none", "--quiet"]
    assert run_cli([*args, "--good-form-phrase", "good"]) == 0
    assert "exercise identified" not in capsys.readouterr().out  # --quiet: only the files written
    form = json.loads((out / "metrics.json").read_text())["form_feedback"]
    # 'cat-cow pose - good' is good form now, and was told a fault.
    assert form["fault_detection"]["clips_with_fault"] == 3 and form["outcomes"]["fault on good form"] == 1
    assert run_cli([*args, "--good-form-phrase", " "]) == 2
    assert "good-form phrases must be non-empty" in capsys.readouterr().err


def test_eval_reports_bad_input_by_name(run_cli, tmp_path, capsys):
    unlabeled = tmp_path / "unlabeled.jsonl"
    unlabeled.write_text(json.dumps({"id": "clip_a.mp4", "prediction": "squats - x"}) + "\n")
    out = tmp_path / "report"
    assert run_cli(["eval", str(unlabeled), "--out", str(out), "--similarity-model", "none"]) == 2
    assert "'clip_a.mp4'" in capsys.readouterr().err
    assert run_cli(["eval", str(tmp_path / "missing.jsonl"), "--out", str(out)]) == 2
    assert "missing.jsonl: no such prediction file" in capsys.readouterr().err
    (tmp_path / "empty.jsonl").write_text("")
    assert run_cli(["eval", str(tmp_path / "empty.jsonl"), "--out", str(out)]) == 2
    assert "empty.jsonl: no prediction records" in capsys.readouterr().err
    labeled = tmp_path / "labeled.jsonl"
    labeled.write_text(json.dumps({"id": 1, "ground_truth": "a - b", "prediction": "a - b"}) + "\n")
    args = ["eval", str(labeled), "--out", str(out), "--similarity-model", str(tmp_path / "no-model")]
    assert run_cli(args) == 2
    assert "--similarity-model" in capsys.readouterr().err
    assert not (out / "metrics.json").exists()


def test_bertscore_is_skipped_cleanly_without_bert_score(run_cli, predictions, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "bert_score", None)  # makes `import bert_score` raise ImportError
    model_dir = tmp_path / "bert-model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps({"num_hidden_layers": 2}))
    out = tmp_path / "report"
    args = ["eval", str(predictions), "--out", str(out), "--similarity-model", "none"]
    assert run_cli([*args, "--bertscore-model", str(model_dir)]) == 0  # (the torn last line is a warning)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["metric_variants"]["bertscore"] == "skipped: the bert_score package is not installed"
    assert "bertscore_f1" not in metrics["metrics"]
