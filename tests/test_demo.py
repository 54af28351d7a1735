"""`videogemma demo --quick`: every step runs through the real subcommands and a rerun skips them all."""

from __future__ import annotations

import json

import pytest

from videogemma.cli import main as videogemma_cli
from videogemma.demo import (
    FULL,
    QUICK,
    STATE_NAME,
    _write_state,
    demo_steps,
    format_headline,
    headline_metrics,
    run_steps,
)
from videogemma.inference.records import read_records

COACHING = ["workouts", "coach-0000", "coach-0001", "eval-coach"]


@pytest.mark.slow
def test_quick_demo_runs_every_step_then_skips_them(tmp_path, capsys):
    out = tmp_path / "demo"
    assert videogemma_cli(["demo", "--out", str(out), "--quick"]) == 0
    printed = capsys.readouterr().out
    for number in range(1, 10):
        assert f"[{number}/9]" in printed
    assert f"report: {out / 'report' / 'report.html'}" in printed
    assert "exercise identified:" in printed and "ROUGE-L:" in printed
    # The metrics are printed once, at the end (eval and eval-coach run --quiet).
    assert printed.count("exercise identified:") == 1 and "\nT-F score " not in printed
    assert (
        "exact label:" in printed
        and "faulty clips told good form:" in printed
        and "step times: synth" in printed
    )
    assert f"coaching report: {out / 'coach_report' / 'report.html'}" in printed
    assert "coaching T-F score:" in printed

    # Every step left its output: data splits, a trained run, predictions for the whole test split, reports.
    test_split = json.loads((out / "data" / "qved_test.json").read_text())
    assert (out / "run" / "train_config.yaml").is_file()
    records = read_records(out / "predictions" / "predictions.jsonl")
    assert len(records) == len(test_split) > 0
    assert all(r.status == "success" and r.ground_truth for r in records)
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert metrics["counts"]["total"] == len(test_split)
    assert (out / "report" / "evaluation.xlsx").is_file()
    state = json.loads((out / STATE_NAME).read_text())
    assert list(state["steps"]) == ["synth", "prepare", "train", "infer", "eval", *COACHING]

    # The coaching steps: two workouts coached by the trained run, scored with timelines.
    for name in ("0000", "0001"):
        log = out / "coach" / f"{name}.jsonl"
        assert log.is_file()
        assert all(
            json.loads(line)["source"].endswith(f"{name}.mp4") for line in log.read_text().splitlines()
        )
    coaching = json.loads((out / "coach_report" / "metrics.json").read_text())
    assert coaching["overall"]["ground_truth"] > 0 and coaching["episodes_mode"] == "single_exercise"
    assert (out / "coach_report" / "timelines" / "0001.png").is_file()

    # The trained run answers single videos too (`videogemma infer --model RUN_DIR`), as batch inference did.
    first = records[0]
    video = out / "data" / first.video_path
    assert videogemma_cli(["infer", str(video), "--model", str(out / "run"), "--max-new-tokens", "12"]) == 0
    single = capsys.readouterr()
    assert single.out.strip() == first.prediction
    assert "random weights" not in single.err

    # A rerun finds every step done and only prints the summary again.
    report_time = (out / "report" / "metrics.json").stat().st_mtime_ns
    assert videogemma_cli(["demo", "--out", str(out), "--quick"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("skipped") == 9
    assert (out / "report" / "metrics.json").stat().st_mtime_ns == report_time


def test_an_interrupted_step_resumes_and_later_steps_start_over(tmp_path):
    out = tmp_path / "demo"
    steps = demo_steps(out, QUICK)
    assert [step.name for step in steps] == ["synth", "prepare", "train", "infer", "eval", *COACHING]
    assert "--resume" in steps[2].argv and "--resume" in steps[3].argv
    # synth and prepare finished; training was interrupted (its checkpoints are kept for --resume); stale
    # predictions of an older model lie around.
    state = {"steps": {s.name: {"argv": list(s.argv), "seconds": 1.0} for s in steps[:2]}}
    state["steps"]["train"] = {"argv": list(steps[2].argv), "seconds": None}
    state["steps"]["infer"] = {"argv": list(steps[3].argv), "seconds": 5.0}
    out.mkdir()
    _write_state(out / STATE_NAME, state)
    (out / "run" / "checkpoint-2").mkdir(parents=True)
    (out / "predictions").mkdir()
    (out / "predictions" / "predictions.jsonl").write_text('{"id": 0}\n')

    seen = []

    def runner(argv: list[str]) -> int:
        seen.append((argv[0], (out / "run" / "checkpoint-2").exists(), (out / "predictions").exists()))
        return 0

    assert run_steps(steps, out / STATE_NAME, runner) == ["train", "infer", "eval", *COACHING]
    assert seen[:3] == [("train", True, True), ("infer-batch", True, False), ("eval", True, False)]
    assert run_steps(steps, out / STATE_NAME, runner) == []

    # Other arguments (the full size) redo everything from the first step.
    assert run_steps(demo_steps(out, FULL), out / STATE_NAME, runner)[0] == "synth"
    assert not (out / "run").exists()


def test_a_failing_step_stops_the_demo_and_is_redone_next_time(tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    steps = demo_steps(out, QUICK)

    def failing_train(argv: list[str]) -> int:
        return 1 if argv[0] == "train" else 0

    with pytest.raises(SystemExit, match="train"):
        run_steps(steps, out / STATE_NAME, failing_train)
    assert run_steps(steps, out / STATE_NAME, lambda argv: 0) == ["train", "infer", "eval", *COACHING]


@pytest.mark.slow
def test_the_demo_runs_from_a_plain_install(tmp_path):
    """`pip install .` (a wheel, not the editable clone) ships the demo's config: `videogemma demo` works."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    project = Path(__file__).resolve().parents[1]
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    wheel_dir, site = tmp_path / "wheel", tmp_path / "site"
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", wheel_dir, project], check=True)
    wheel = next(wheel_dir.glob("videogemma-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", site, wheel], check=True)
    # The wheel's package comes first on the path (before the clone's editable install); run away from it.
    env = {**os.environ, "PYTHONPATH": str(site)}
    command = [sys.executable, "-m", "videogemma.cli", "demo", "--quick", "--out", str(tmp_path / "demo")]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "exercise identified:" in result.stdout
    config = json.loads((tmp_path / "demo" / "demo_state.json").read_text())["steps"]["train"]["argv"]
    assert str(site / "videogemma" / "configs" / "demo_tiny.yaml") in config


def test_the_headline_leads_with_the_coaching_metrics_and_gives_each_steps_time(tmp_path):
    from videogemma.evaluation.metrics import evaluate_records
    from videogemma.inference.records import PredictionRecord

    truths = ["squats - knees caving in; push the knees out", "squats - good form; keep it up"]
    said = ["squats - good form; keep it up", "pushups - good form; keep it up"]
    records = [
        PredictionRecord(id=i, ground_truth=t, prediction=p) for i, (t, p) in enumerate(zip(truths, said))
    ]
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps(evaluate_records(records, progress=False).to_json()))
    state = tmp_path / STATE_NAME
    _write_state(
        state, {"steps": {"train": {"argv": [], "seconds": 61.2}, "infer": {"argv": [], "seconds": 4.4}}}
    )
    summary = headline_metrics(metrics, state)
    assert summary["exercise_accuracy"] == 0.5 and summary["exact_label"] == 0.0
    assert summary["faulty_told_good_form"] == 1
    summary.update(report="r/report.html")
    lines = format_headline(summary).splitlines()
    assert lines[:2] == ["report: r/report.html", "test clips: 2 (0 errors)"]
    assert [line.split(":")[0] for line in lines[2:9]] == [
        "exercise identified",
        "exact label",
        "verdict (good form or fault)",
        "fault detection F1",
        "fault named",
        "faulty clips told good form",
        "exercises most confused",
    ]
    assert lines[7].split(":", 1)[1].split() == ["1", "(of", "1", "clip", "with", "a", "fault)"]
    assert lines[9].startswith("ROUGE-L:") and lines[10].startswith("METEOR:")
    assert lines[-1] == "step times: train 61 s, infer 4 s (total 66 s)"
