"""Learning check: what the `tiny` preset learns from scratch on the synthetic exercise dataset, recipe by recipe.

Two recipes in one run (`--recipes`, both by default), each trained `full` from scratch with 2 DDP ranks:

- `demo`: exactly what `videogemma demo` trains: its data (120 clips per form variant, 16 frames, split
  80 / 10 / 10 per exercise: 1,728 / 216 / 216 clips) and the shipped demo_tiny.yaml (1,200 steps of 2 × 8);
- `default`: this benchmark's earlier reference run: 200 clips per variant of 36 frames at 12 fps, split
  60 / 20 / 20 (2,160 / 720 / 720), demo_tiny.yaml, 1,200 steps of 2 × 8.

For each: greedy answers on the test split, exercise identification (the name before " - " matches) and
exact label (targets ≥ 90 % and ≥ 60 %), the answer loss with each clip's own video against another clip's
(does the answer depend on the video at all), and a learning curve: validation exact label (216
validation clips, evenly spaced) every `--curve-steps` steps against training wall-clock minutes (the curve's own answering
time left out) in `learning_curve.png`. Then, for the demo recipe's model:

- held-out seed: clips of a generator seed the demo never uses (`--heldout-seed`; the demo's clips are seed 0,
  its workouts seed 1) score within 5 points of the demo's own test split (it learned the exercises, not
  the seed's scenes);
- `finetune` (LoRA + projectors, frozen encoders) from it: the validation loss improves (`--finetune-epochs`).

    python benchmarks/learning.py --out runs/learning [--recipes demo default] [--finetune-epochs 2]

Prints the figures, writes `learning.json`, `learning_curve.png` and each run's training plots under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import TrainerCallback

from videogemma import demo
from videogemma.train.train_config import SHIPPED_CONFIGS

PROJECT = Path(__file__).resolve().parents[1]
CURVE_CLIPS = 216  # validation clips answered for each point of the learning curve (evenly spaced)
HELDOUT_TOLERANCE = 0.05  # the held-out seed's figures may differ from the test split's by this much


@dataclass(frozen=True)
class Recipe:
    """The data a recipe generates and how it trains (demo_tiny.yaml plus `overrides`, `processes` ranks)."""

    per_variant: int
    frames: int
    fps: float
    ratios: tuple[float, float, float]
    stratify: bool
    processes: int = 2
    overrides: tuple[tuple[str, Any], ...] = ()


RECIPES = {
    "demo": Recipe(demo.FULL.per_variant, demo.CLIP_FRAMES, demo.CLIP_FPS, demo.SPLIT_RATIOS, True,
                   demo.TRAIN_PROCESSES),
    "default": Recipe(200, 36, 12.0, (0.6, 0.2, 0.2), False, 2),
}  # fmt: skip


def make_dataset(root: Path, recipe: Recipe, seed: int) -> Path:
    """The recipe's clips and split files under `root` (kept from an earlier run: they are deterministic)."""
    from videogemma.datasets.qved.prepare import prepare_splits
    from videogemma.datasets.synthetic.generate import generate_dataset

    if not (root / "qved_test.json").is_file():
        generate_dataset(root, per_variant=recipe.per_variant, seed=seed, num_frames=recipe.frames,
                         fps=recipe.fps, workers=2)  # fmt: skip
        prepare_splits(root, ratios=recipe.ratios, stratify=recipe.stratify)
    return root


@torch.inference_mode()
def evaluate_generation(model: Any, processor: Any, split_file: Path, batch_size: int = 16) -> dict[str, Any]:
    """Greedy answers on a split; exercise identification and exact match rates (read as `eval` reads them),
    and some examples."""
    from videogemma.evaluation.form_metrics import read_answer
    from videogemma.inference.generate import GenerationSettings, generate_answers
    from videogemma.processing.chat_template import normalize_conversation

    records = json.loads(split_file.read_text())
    root = split_file.parent
    settings = GenerationSettings(max_new_tokens=64)
    identified = exact = 0
    examples = []
    for start in range(0, len(records), batch_size):
        batch = records[start : start + batch_size]
        questions, truths = [], []
        for record in batch:
            turns = normalize_conversation(record["conversations"])
            questions.append(turns[0].text)
            truths.append(turns[1].text.strip())
        inputs = processor(
            videos=[str(root / r["video"]) for r in batch], text=questions, padding_side="left"
        )
        answers = generate_answers(model, processor, inputs, settings)
        for truth, answer in zip(truths, answers):
            reading = read_answer(truth, answer.text)
            identified += reading.exercise_identified
            exact += reading.exact
            if len(examples) < 6:
                examples.append({"truth": truth, "prediction": answer.text})
    n = len(records)
    return {
        "samples": n,
        "exercise_identification": identified / n,
        "exact_match": exact / n,
        "examples": examples,
    }


@torch.inference_mode()
def video_reliance(model: Any, processor: Any, split_file: Path, batch_size: int = 16) -> dict[str, float]:
    """Teacher-forced answer loss on a split with each clip's own video and with the videos rotated by one
    within each batch: equal losses mean the model answers from the text prior alone."""
    records = json.loads(split_file.read_text())
    root = split_file.parent
    totals = {"own_video": 0.0, "other_video": 0.0}
    for start in range(0, len(records), batch_size):
        batch = records[start : start + batch_size]
        inputs = processor(
            videos=[str(root / r["video"]) for r in batch],
            conversations=[r["conversations"] for r in batch],
            return_labels=True,
        )
        totals["own_video"] += float(model(**inputs).loss) * len(batch)
        for name in ("clip_pixel_values", "videomamba_pixel_values"):
            inputs[name] = inputs[name].roll(1, dims=0)
        totals["other_video"] += float(model(**inputs).loss) * len(batch)
    return {name: total / len(records) for name, total in totals.items()}


def recipe_config(recipe: Recipe, data: Path, run_dir: Path, steps: int | None) -> dict[str, Any]:
    """demo_tiny.yaml for this recipe's data and run folder."""
    config = yaml.safe_load((SHIPPED_CONFIGS / "demo_tiny.yaml").read_text())
    config.update(dict(recipe.overrides), output_dir=str(run_dir))
    config["data"] = {**config["data"], "train_file": str(data / "qved_train.json"),
                      "val_file": str(data / "qved_val.json")}  # fmt: skip
    if steps is not None:  # a shorter check: validation at a third, two thirds and the end, as the demo
        config.update(max_steps=steps, eval_steps=max(steps // 3, 1))
    return config


def train(
    config: dict[str, Any], path: Path, processes: int = 1, curve: dict[str, Any] | None = None
) -> tuple[Path, float]:
    """One training run, in this process or (processes > 1) as DDP ranks under torchrun; with `curve`
    ({split_file, every, out}), the learning curve's points are answered on rank 0 as it trains."""
    path.write_text(yaml.safe_dump(config))
    start = time.perf_counter()
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
               str(processes), __file__, "--train-rank", str(path), "--curve", json.dumps(curve)]  # fmt: skip
    if processes == 1:
        train_rank(path, curve)
    else:
        subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return Path(config["output_dir"]), time.perf_counter() - start


def train_rank(config_path: Path, curve: dict[str, Any] | None) -> None:
    """What each rank runs: `run_training`, with the learning-curve callback when asked."""
    from videogemma.train.run import run_training
    from videogemma.train.train_config import load_train_config

    config = load_train_config(config_path)
    callbacks = [] if curve is None else [LearningCurve(Path(config.output_dir), **curve)]
    run_training(config, extra_callbacks=callbacks)


class LearningCurve(TrainerCallback):
    """Every `every` steps (and at the last), rank 0 answers `split_file` greedily and appends
    {step, minutes, exact_match, exercise_identification} to `out`; `minutes` is training wall time, this
    callback's own time left out. It draws no random numbers, so the run trains as it would without it."""

    def __init__(self, run_dir: Path, split_file: str, every: int, out: str) -> None:
        self.run_dir, self.split_file, self.every, self.out = run_dir, Path(split_file), every, Path(out)
        self.start, self.paused, self.processor = 0.0, 0.0, None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.start, self.paused = time.perf_counter(), 0.0
        if state.is_world_process_zero:
            self.out.unlink(missing_ok=True)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or (
            state.global_step % self.every and state.global_step < state.max_steps
        ):
            return
        from videogemma.loading import load_processor

        began = time.perf_counter()
        minutes = (began - self.start - self.paused) / 60
        self.processor = self.processor or load_processor(self.run_dir)
        training = model.training
        model.eval()
        result = evaluate_generation(model, self.processor, self.split_file)
        model.train(training)
        point = {"step": state.global_step, "minutes": minutes, "exact_match": result["exact_match"],
                 "exercise_identification": result["exercise_identification"]}  # fmt: skip
        with self.out.open("a") as log:
            log.write(json.dumps(point) + "\n")
        self.paused += time.perf_counter() - began


def read_curve(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def plot_curves(curves: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    """Validation exact label against training wall-clock minutes, one line per recipe."""
    from videogemma.plotting import figure_canvas, save_png

    with figure_canvas(7, 4.2) as figure:
        axes = figure.add_subplot()
        for name, points in curves.items():
            axes.plot([0] + [p["minutes"] for p in points], [0] + [100 * p["exact_match"] for p in points],
                      marker="o", label=name)  # fmt: skip
        axes.axhline(60, color="grey", linestyle=":", label="target (60 %)")
        axes.set_xlabel("training wall-clock minutes (2 DDP ranks)")
        axes.set_ylabel(f"validation exact label, % ({CURVE_CLIPS} clips)")
        axes.set_ylim(0, 100)
        axes.grid(alpha=0.3)
        axes.legend()
        return save_png(figure, path)


def eval_losses(run_dir: Path) -> list[tuple[int, float]]:
    losses = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if "eval_loss" in entry:
            losses.append((entry["step"], entry["eval_loss"]))
    return losses


def run_recipe(name: str, args: argparse.Namespace) -> tuple[dict[str, Any], Path, dict[str, Path]]:
    """Train one recipe and score it on its test split; (summary, run directory, split files)."""
    from videogemma.loading import load_run

    recipe = RECIPES[name]
    data = make_dataset(args.out / f"data_{name}", recipe, seed=0)
    splits = {s: data / f"qved_{s}.json" for s in ("train", "val", "test")}
    counts = {s: len(json.loads(p.read_text())) for s, p in splits.items()}
    curve_file = data / "qved_val_curve.json"
    # Evenly spaced: a split file lists its clips exercise by exercise, so its first ones may be 2 exercises.
    val = json.loads(splits["val"].read_text())
    curve_file.write_text(json.dumps(val[:: max(len(val) // CURVE_CLIPS, 1)][:CURVE_CLIPS]))
    curve = {
        "split_file": str(curve_file),
        "every": args.curve_steps,
        "out": str(args.out / f"{name}_curve.jsonl"),
    }
    config = recipe_config(recipe, data, args.out / name, args.steps)
    run_dir, seconds = train(config, args.out / f"{name}.yaml", recipe.processes, curve)
    model, processor = load_run(run_dir)
    result = evaluate_generation(model, processor, splits["test"])
    result["answer_loss"] = video_reliance(model, processor, splits["test"])
    steps = json.loads((run_dir / "trainer_state.json").read_text())["global_step"]
    print(f"{name}: {counts['train']} training clips, {steps} steps in {seconds / 60:.1f} min; test "
          f"exercise identification {result['exercise_identification']:.1%}, exact label {result['exact_match']:.1%}; "
          f"answer loss with its own video {result['answer_loss']['own_video']:.4f}, with another clip's "
          f"{result['answer_loss']['other_video']:.4f}", flush=True)  # fmt: skip
    summary = {"dataset": counts, "steps": steps, "minutes": seconds / 60, **result,
               "eval_losses": eval_losses(run_dir), "curve": read_curve(Path(curve["out"]))}  # fmt: skip
    if name == "demo" and args.heldout_seed is not None:
        summary["heldout"] = heldout_check(model, processor, recipe, result, args)
    return summary, run_dir, splits


def heldout_check(
    model: Any, processor: Any, recipe: Recipe, test: dict[str, Any], args: Any
) -> dict[str, Any]:
    """The model's figures on clips of another generator seed, against its own test split's."""
    held = Recipe(args.heldout_per_variant, recipe.frames, recipe.fps, (0.0, 0.0, 1.0), False)
    data = make_dataset(args.out / f"data_heldout_seed{args.heldout_seed}", held, seed=args.heldout_seed)
    result = evaluate_generation(model, processor, data / "qved_test.json")
    gaps = {key: result[key] - test[key] for key in ("exercise_identification", "exact_match")}
    within = all(abs(gap) <= HELDOUT_TOLERANCE for gap in gaps.values())
    print(f"held-out seed {args.heldout_seed} ({result['samples']} clips): exercise identification "
          f"{result['exercise_identification']:.1%} ({100 * gaps['exercise_identification']:+.1f} points), exact "
          f"label {result['exact_match']:.1%} ({100 * gaps['exact_match']:+.1f} points): "
          f"{'within' if within else 'NOT within'} {100 * HELDOUT_TOLERANCE:.0f} points", flush=True)  # fmt: skip
    return {"seed": args.heldout_seed, **result, "gaps": gaps, "within_5_points": within}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=PROJECT / "runs" / "learning")
    parser.add_argument("--recipes", nargs="+", choices=sorted(RECIPES), default=["demo", "default"])
    parser.add_argument(
        "--steps", type=int, help="optimiser steps of every recipe (default: demo_tiny.yaml's 1200)"
    )
    parser.add_argument("--curve-steps", type=int, default=150, help="steps between learning-curve points")
    parser.add_argument("--heldout-seed", type=int, default=7, help="generator seed of the held-out clips")
    parser.add_argument("--heldout-per-variant", type=int, default=40, help="held-out clips per form variant")
    parser.add_argument("--finetune-epochs", type=float, default=2.0, help="0: no `finetune` run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of this process")
    parser.add_argument("--train-rank", type=Path, help=argparse.SUPPRESS)  # what each DDP rank runs
    parser.add_argument("--curve", type=json.loads, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.train_rank is not None:
        train_rank(args.train_rank, args.curve)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)

    summary: dict[str, Any] = {"recipes": {}, "targets_met": {}}
    runs = {}
    for name in args.recipes:
        summary["recipes"][name], run_dir, splits = run_recipe(name, args)
        runs[name] = (run_dir, splits)
        result = summary["recipes"][name]
        summary["targets_met"][name] = {
            "exercise_identification_ge_90": result["exercise_identification"] >= 0.9,
            "exact_match_ge_60": result["exact_match"] >= 0.6,
        }
        if "heldout" in result:
            summary["targets_met"][name]["heldout_within_5_points"] = result["heldout"]["within_5_points"]
        (args.out / "learning.json").write_text(json.dumps(summary, indent=2))  # written as it goes
    curves = {name: result["curve"] for name, result in summary["recipes"].items()}
    print(f"learning curve: {plot_curves(curves, args.out / 'learning_curve.png')}")
    if args.finetune_epochs > 0:
        name = args.recipes[0]
        run_dir, splits = runs[name]
        summary["finetune"] = finetune_from(
            run_dir, yaml.safe_load((args.out / f"{name}.yaml").read_text()), splits, args
        )
        summary["targets_met"]["finetune_improves_val_loss"] = summary["finetune"]["improves_val_loss"]
    (args.out / "learning.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary["targets_met"]))
    return 0


def finetune_from(full_dir: Path, full: dict[str, Any], splits: dict[str, Path], args: Any) -> dict[str, Any]:
    """`finetune` (LoRA + projectors, frozen encoders) from the trained model: its figures for the summary."""
    from videogemma.loading import load_run
    from videogemma.train.export import export_run

    pretrained = export_run(full_dir, args.out / "full_merged")
    finetune = {
        "stage": "finetune",
        "output_dir": str(args.out / "finetune"),
        "model": {"pretrained": str(pretrained)},
        "data": {"train_file": str(splits["train"]), "val_file": str(splits["val"])},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.05},
        "learning_rate": 5e-4,
        "projector_learning_rate": 1e-4,
        "num_train_epochs": args.finetune_epochs,
        "per_device_train_batch_size": full.get("per_device_train_batch_size", 8),
        "effective_batch_size": full.get("effective_batch_size", 8),
        "eval_steps": 100,
        "eval_on_start": True,
        "save_total_limit": 1,
        "precision": "fp32",
        "gradient_checkpointing": False,
        "feature_cache_dir": str(args.out / "feature_cache"),
    }
    finetune_dir, finetune_seconds = train(finetune, args.out / "finetune.yaml")
    losses = eval_losses(finetune_dir)
    finetune_result = evaluate_generation(*load_run(finetune_dir), splits["test"])
    start_loss, best_loss = losses[0][1], min(loss for _, loss in losses)
    print(f"finetune: {finetune_seconds / 60:.1f} min; validation loss {start_loss:.4f} → {best_loss:.4f} "
          f"(best); test exercise identification {finetune_result['exercise_identification']:.1%}, "
          f"exact {finetune_result['exact_match']:.1%}")  # fmt: skip

    return {
        "minutes": finetune_seconds / 60,
        **finetune_result,
        "eval_losses": losses,
        "improves_val_loss": best_loss < start_loss,
    }


if __name__ == "__main__":
    sys.exit(main())
