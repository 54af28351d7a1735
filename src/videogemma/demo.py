"""`videogemma demo`: the whole pipeline on a CPU, end to end, with the real subcommands.

    1. data synth      the synthetic exercise dataset (QVED layout)        → OUT/data/
    2. data prepare    train / val / test conversation split files         → OUT/data/qved_*.json
    3. train           the `tiny` preset on the train split (the shipped demo_tiny.yaml) → OUT/run/
    4. infer-batch     answers for the test split                          → OUT/predictions/
    5. eval            metrics, workbook, HTML report and plots            → OUT/report/
    6. synth-workouts  two held-out synthetic workouts (QEVD-FIT-COACH layout) → OUT/workouts/
    7-8. coach         the trained model coaches each workout, window by window → OUT/coach/<id>.jsonl
    9. eval-coach      T-F score, METEOR, ROUGE-L on matched pairs, timelines → OUT/coach_report/

Every step is the `videogemma` subcommand itself, called in-process with its arguments, so the demo is
exactly what a user would type. A finished step is recorded in OUT/demo_state.json with its arguments and
skipped on a rerun; an interrupted training or inference step continues (`--resume`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from videogemma.train.train_config import SHIPPED_CONFIGS

STATE_NAME = "demo_state.json"
# The demo's training config, shipped with the package (`pip install .` works as well as a clone).
DEMO_CONFIG = SHIPPED_CONFIGS / "demo_tiny.yaml"


@dataclass(frozen=True)
class DemoSize:
    """How big the demo is: clips per exercise form variant, training length, answer length."""

    per_variant: int
    train_overrides: tuple[str, ...]
    max_new_tokens: int
    batch_size: int
    workout_overrides: tuple[str, ...] = ()  # `data synth-workouts` options (the coaching steps)
    split_args: tuple[str, ...] = ()  # `data prepare` options (default: 60 / 20 / 20 over all clips)


# The clips the demo trains on: 16 frames over 3 s. The frames the model reads (8 segment centres) fall where
# those of a 36-frame clip at 12 fps would, for less than half the rendering, encoding and decoding.
CLIP_FRAMES, CLIP_FPS = 16, 16 / 3
SYNTH_ARGS = ("--frames", str(CLIP_FRAMES), "--fps", str(CLIP_FPS), "--workers", "2")
# 2,160 clips (120 per form variant) split 80 / 10 / 10 within each exercise: 1,728 training clips, 216
# validation and 216 test clips (36 per exercise).
SPLIT_RATIOS = (0.8, 0.1, 0.1)
SPLIT_ARGS = ("--ratios", *map(str, SPLIT_RATIOS), "--stratify")
# Two DDP ranks (one per core) × 8 clips a step, 1,200 steps (demo_tiny.yaml; about 11 epochs). No time limit:
# on a busy machine the run is slower, never different, so every run gives the same figures.
TRAIN_PROCESSES = 2
FULL = DemoSize(
    per_variant=120,
    train_overrides=("--processes", str(TRAIN_PROCESSES)),
    max_new_tokens=64,
    batch_size=8,
    split_args=SPLIT_ARGS,
)
# A minute on two cores: one clip per variant (18 clips; split 60 / 20 / 20 over all of them, as 3 clips per
# exercise cannot be split 80 / 10 / 10), a few optimiser steps in one process, short answers.
QUICK = DemoSize(
    per_variant=1,
    train_overrides=("--max_steps", "3", "--eval_steps", "2", "--per_device_train_batch_size", "4",
                     "--effective_batch_size", "4"),
    max_new_tokens=12,
    batch_size=4,
    workout_overrides=("--size", "32", "--fps", "4"),
)  # fmt: skip
# The coaching steps: two workouts of 30-45 s, drawn from a seed the training data never used.
WORKOUTS = ("0000", "0001")
WORKOUT_ARGS = ("--count", str(len(WORKOUTS)), "--min-duration", "30", "--max-duration", "45", "--seed", "1")


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    argv: tuple[str, ...]
    output: Path | None = None  # removed before the step reruns after an earlier step changed


def demo_steps(out: Path, size: DemoSize, config: Path = DEMO_CONFIG) -> list[Step]:
    """The demo's five subcommand invocations."""
    data, run, predictions, report = out / "data", out / "run", out / "predictions", out / "report"
    prediction_file = predictions / "predictions.jsonl"
    return [
        Step(
            "synth",
            "generate the synthetic exercise dataset",
            ("data", "synth", "--out", str(data), "--per-variant", str(size.per_variant), *SYNTH_ARGS),
        ),
        Step(
            "prepare",
            "prepare the train / val / test splits",
            ("data", "prepare", "--root", str(data), *size.split_args),
        ),
        Step(
            "train",
            "train the tiny preset",
            (
                "train",
                "--config",
                str(config),
                "--resume",
                "--output_dir",
                str(run),
                "--data.train_file",
                str(data / "qved_train.json"),
                "--data.val_file",
                str(data / "qved_val.json"),
                *size.train_overrides,
            ),
            output=run,
        ),
        Step(
            "infer",
            "answer the test split (batch inference)",
            (
                "infer-batch",
                "--model",
                str(run),
                "--data",
                str(data / "qved_test.json"),
                "--out",
                str(prediction_file),
                "--batch-size",
                str(size.batch_size),
                "--max-new-tokens",
                str(size.max_new_tokens),
                # The tiny model trains in fp32 (demo_tiny.yaml): it answers in fp32 on every CPU, bf16 or not.
                "--dtype",
                "float32",
                "--resume",
            ),
            output=predictions,
        ),
        Step(
            "eval",
            "evaluate and write the report",
            (
                "eval",
                str(prediction_file),
                "--out",
                str(report),
                "--model-name",
                "tiny (demo run)",
                "--dataset-name",
                "synthetic QVED test split",
                # The report shows the steps' times so far; the demo prints the metrics once, at the end.
                "--timings",
                str(out / STATE_NAME),
                "--quiet",
            ),
        ),
        *coaching_steps(out, size),
    ]


def coaching_steps(out: Path, size: DemoSize) -> list[Step]:
    """Synthetic workouts, the trained model coaching each of them, and the coaching report."""
    workouts, logs = out / "workouts", out / "coach"
    steps = [
        Step(
            "workouts",
            "generate two held-out workouts",
            ("data", "synth-workouts", "--out", str(workouts), *WORKOUT_ARGS, *size.workout_overrides),
            output=workouts,
        )
    ]
    for name in WORKOUTS:
        video = workouts / "long_range_videos" / f"{name}.mp4"
        argv = (
            "coach",
            str(video),
            "--model",
            str(out / "run"),
            "--out",
            str(logs / f"{name}.jsonl"),
            "--overwrite",
            "--max-new-tokens",
            str(size.max_new_tokens),
        )
        steps.append(Step(f"coach-{name}", f"coach workout {name}", argv))
    report = ("eval-coach", str(logs), "--ground-truth", str(workouts), "--out", str(out / "coach_report"),
              "--quiet")  # fmt: skip
    steps.append(Step("eval-coach", "score the coaching (T-F score, timelines)", report))
    return steps


def _read_state(path: Path) -> dict[str, Any]:
    if path.is_file():
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            print(f"demo: ignoring the unreadable {path}; every step runs again")
    return {"steps": {}}


def _write_state(path: Path, state: dict[str, Any]) -> None:
    path.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")


def run(out: str | Path = "outputs/demo", quick: bool = False, force: bool = False) -> dict[str, Any]:
    """Run (or finish) the demo in `out`; returns the headline metrics and the report's path."""
    import torch

    from videogemma.cli import main as videogemma

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not DEMO_CONFIG.is_file():
        raise FileNotFoundError(f"the demo's training config {DEMO_CONFIG} is missing (a broken install?)")
    # The tiny model's matrices are too small to split between threads: a second thread only adds
    # synchronisation (several times slower when other processes share the cores), so the model runs on
    # one core and the data workers use the other.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        run_steps(demo_steps(out, QUICK if quick else FULL), out / STATE_NAME, videogemma, force=force)
    finally:
        torch.set_num_threads(threads)
    summary = headline_metrics(out / "report" / "metrics.json", out / STATE_NAME)
    summary["report"] = str(out / "report" / "report.html")
    summary["coaching"] = coaching_metrics(out / "coach_report" / "metrics.json")
    summary["coach_report"] = str(out / "coach_report" / "report.html")
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s")
    print(format_headline(summary))
    return summary


def run_steps(
    steps: list[Step], state_path: Path, runner: Callable[[list[str]], int], force: bool = False
) -> list[str]:
    """Run the steps not finished before (per `state_path`) with `runner(argv)`; returns the names run.

    Once a step runs, every later step starts over (its old output came from other inputs). A step that
    was interrupted, with the same arguments and inputs, continues where it stopped (`--resume`).
    """
    state = {"steps": {}} if force else _read_state(state_path)
    start_over = force
    ran = []
    for number, step in enumerate(steps, start=1):
        header = f"[{number}/{len(steps)}] {step.title}"
        recorded = state["steps"].get(step.name)
        same_arguments = recorded is not None and recorded["argv"] == list(step.argv)
        if not start_over and same_arguments and recorded.get("seconds") is not None:
            print(f"{header}: done before ({recorded['seconds']:.0f} s), skipped", flush=True)
            continue
        if (start_over or (recorded and not same_arguments)) and step.output and step.output.exists():
            shutil.rmtree(step.output)
        start_over = True
        # Forget this step and the later ones until this one finishes.
        state["steps"] = {
            s.name: state["steps"][s.name] for s in steps[: number - 1] if s.name in state["steps"]
        }
        state["steps"][step.name] = {"argv": list(step.argv), "seconds": None}
        _write_state(state_path, state)
        print(f"{header}: videogemma {' '.join(step.argv)}", flush=True)
        start = time.perf_counter()
        status = runner(list(step.argv))
        if status:
            raise SystemExit(f"demo: step {number} ({step.name}) failed with status {status}")
        seconds = time.perf_counter() - start
        print(f"{header}: done in {seconds:.0f} s", flush=True)
        state["steps"][step.name]["seconds"] = seconds
        _write_state(state_path, state)
        ran.append(step.name)
    return ran


def headline_metrics(metrics_path: Path, state_path: Path | None = None) -> dict[str, Any]:
    """The numbers the demo prints, from eval's metrics.json (the coaching metrics first, as `eval` orders
    them) and the step times from the demo's state file."""
    from dataclasses import asdict

    from videogemma.evaluation.headline import headline_rows
    from videogemma.evaluation.run_info import step_seconds

    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    form = metrics["form_feedback"]
    return {
        "samples": metrics["counts"]["total"],
        "errors": metrics["counts"]["error"],
        "exercise_accuracy": form["exercise_identified"]["rate"],
        "exact_label": form["exact_label"]["rate"],
        "verdict_accuracy": form["verdict"]["accuracy"],
        "fault_f1": form["fault_detection"]["f1"],
        "faulty_told_good_form": form["faulty_told_good_form"],
        "means": {name: values["mean"] for name, values in metrics["metrics"].items()},
        "headline": [asdict(row) for row in headline_rows(metrics)],
        "steps": step_seconds(state_path) if state_path else {},
    }


def coaching_metrics(metrics_path: Path) -> dict[str, Any]:
    """The coaching step's headline numbers, from eval-coach's metrics.json."""
    overall = json.loads(metrics_path.read_text(encoding="utf-8"))["overall"]
    keys = ("t_f_score", "precision", "recall", "meteor", "rougeL", "ground_truth", "predictions")
    return {key: overall[key] for key in keys}


def format_headline(summary: dict[str, Any]) -> str:
    """The demo's closing lines: the report, the headline rows of `eval`, the step times, the coaching."""
    from videogemma.evaluation.headline import HeadlineRow, format_headline_rows

    lines = [
        f"report: {summary['report']}",
        f"test clips: {summary['samples']} ({summary['errors']} errors)",
        format_headline_rows([HeadlineRow(**row) for row in summary["headline"]]),
    ]
    if summary.get("steps"):
        times = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in summary["steps"].items())
        lines.append(f"step times: {times} (total {sum(summary['steps'].values()):.0f} s)")
    coaching = summary.get("coaching")
    if coaching:
        lines += [
            f"coaching report: {summary['coach_report']}",
            f"coaching T-F score: {coaching['t_f_score']:.3f} (precision {coaching['precision']:.3f}, recall "
            f"{coaching['recall']:.3f}; {coaching['predictions']} feedbacks said, {coaching['ground_truth']} due)",
            f"coaching METEOR: {coaching['meteor']:.3f}, ROUGE-L: {coaching['rougeL']:.3f} (matched pairs)",
        ]
    return "\n".join(lines)


# ---- the command ---------------------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="the whole pipeline on CPU: synthetic data, training, batch inference, evaluation report, "
        "live coaching",
        description="Generate the synthetic exercise dataset, prepare its splits, train the tiny preset, "
        "answer the test split, evaluate and write the report, then coach two synthetic workouts and score "
        "the coaching. Rerunning skips finished steps.",
    )
    demo.add_argument(
        "--out", type=Path, default=Path("outputs/demo"), help="working folder (default: outputs/demo)"
    )
    demo.add_argument("--quick", action="store_true", help="a much smaller run (a minute), for smoke tests")
    demo.add_argument("--force", action="store_true", help="redo every step even if it finished before")
    demo.set_defaults(func=_run_command)


def _run_command(args: argparse.Namespace) -> int:
    run(args.out, quick=args.quick, force=args.force)
    return 0
