"""Learning check: does the `tiny` preset learn the synthetic exercise dataset?

1. Generate the synthetic dataset (QVED layout) and its splits.
2. Train `tiny` from scratch (`full`, the shipped demo_tiny.yaml) within a wall-time budget.
3. Greedy generation on the test split: exercise identification (the name before " - " matches) and exact
   label match. Targets: ≥ 90 % and ≥ 60 %. The answer loss with each clip's own video against another
   clip's shows whether the answers depend on the video at all.
4. `finetune` (LoRA + projectors, frozen encoders) starting from that model: the validation loss improves.

    python benchmarks/learning.py --out runs/learning [--minutes 10] [--per-variant 200]

Prints the figures, writes `learning.json` and the training plots of both runs under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from videogemma.train.train_config import SHIPPED_CONFIGS

PROJECT = Path(__file__).resolve().parents[1]


def make_dataset(root: Path, per_variant: int, size: int, frames: int, seed: int) -> Path:
    from videogemma.datasets.qved.prepare import prepare_splits
    from videogemma.datasets.synthetic.generate import generate_dataset

    if not (root / "qved_test.json").is_file():
        generate_dataset(root, per_variant=per_variant, seed=seed, size=size, num_frames=frames, workers=2)
        prepare_splits(root)
    return root


@torch.inference_mode()
def evaluate_generation(model: Any, processor: Any, split_file: Path, batch_size: int = 16) -> dict[str, Any]:
    """Greedy answers on a split; exercise identification and exact match rates, and some examples."""
    from videogemma.evaluation.metrics import exercise_name
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
            identified += exercise_name(answer.text) == exercise_name(truth)
            exact += answer.text.strip() == truth
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


def train(config: dict[str, Any], path: Path, processes: int = 1) -> tuple[Path, float]:
    """One training run, in this process or (processes > 1) as DDP ranks under torchrun."""
    from videogemma.train.run import run_training
    from videogemma.train.train_config import load_train_config

    path.write_text(yaml.safe_dump(config))
    start = time.perf_counter()
    if processes == 1:
        run_dir = run_training(load_train_config(path))
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                   "--master_port", str(_free_port()), "-m", "videogemma.cli", "train", "--config", str(path)]  # fmt: skip
        subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        run_dir = Path(config["output_dir"])
    return run_dir, time.perf_counter() - start


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def eval_losses(run_dir: Path) -> list[tuple[int, float]]:
    losses = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if "eval_loss" in entry:
            losses.append((entry["step"], entry["eval_loss"]))
    return losses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=PROJECT / "runs" / "learning")
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget of the `full` run")
    parser.add_argument("--per-variant", type=int, default=200, help="synthetic clips per form variant")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--frames", type=int, default=36, help="frames per synthetic clip")
    parser.add_argument(
        "--steps",
        type=int,
        help="optimiser steps of the `full` run, validated 3 times (default: what fills 10 minutes here: "
        "1200 with 2 processes at ~0.46 s a step, 1350 with 1 at ~0.42 s; the time limit stops earlier)",
    )
    parser.add_argument(
        "--learning-rate", type=float, help="learning rate of the `full` run (default: the config's)"
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=2,
        help="DDP processes of the `full` run (torchrun, gloo): one per core, each a batch of 8 decoding its own clips",
    )
    parser.add_argument("--finetune-epochs", type=float, default=2.0, help="0: no `finetune` run (step 4)")
    parser.add_argument("--config", type=Path, default=SHIPPED_CONFIGS / "demo_tiny.yaml")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1 is fastest for `tiny` on a shared 2-core machine)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    data = make_dataset(args.out / "data", args.per_variant, args.size, args.frames, seed=0)
    splits = {s: data / f"qved_{s}.json" for s in ("train", "val", "test")}
    counts = {s: len(json.loads(p.read_text())) for s, p in splits.items()}
    print(f"dataset: {counts}")

    # 1. `full` from scratch, within the budget.
    full = yaml.safe_load(args.config.read_text())
    full.update(
        output_dir=str(args.out / "full"),
        max_train_minutes=args.minutes,
        feature_cache_dir=str(args.out / "feature_cache"),
    )
    full["data"] = {
        **full.get("data", {}),
        "train_file": str(splits["train"]),
        "val_file": str(splits["val"]),
    }
    # Validation (and the checkpoint the best of them keeps) at a third, two thirds and the last step.
    steps = args.steps or (1200 if args.processes > 1 else 1350)
    full.update(max_steps=steps, eval_steps=max(steps // 3, 1))
    if args.processes > 1:  # every core runs a rank: no spare core for DataLoader workers
        full["effective_batch_size"] = full.get("per_device_train_batch_size", 8) * args.processes
        full["data"]["num_workers"] = 0
    if args.learning_rate is not None:
        full["learning_rate"] = args.learning_rate
    full_dir, full_seconds = train(full, args.out / "full.yaml", args.processes)
    from videogemma.loading import load_run

    full_model, full_processor = load_run(full_dir)
    full_result = evaluate_generation(full_model, full_processor, splits["test"])
    full_result["answer_loss"] = video_reliance(full_model, full_processor, splits["test"])
    print(f"full: trained {full_seconds / 60:.1f} min; test exercise identification "
          f"{full_result['exercise_identification']:.1%}, exact label match {full_result['exact_match']:.1%}; answer loss with its own video {full_result['answer_loss']['own_video']:.4f}, "
          f"with another clip's {full_result['answer_loss']['other_video']:.4f}")  # fmt: skip

    summary: dict[str, Any] = {
        "dataset": counts,
        "full": {"minutes": full_seconds / 60, **full_result, "eval_losses": eval_losses(full_dir)},
        "targets_met": {
            "exercise_identification_ge_90": full_result["exercise_identification"] >= 0.9,
            "exact_match_ge_60": full_result["exact_match"] >= 0.6,
        },
    }
    if args.finetune_epochs > 0:
        summary["finetune"] = finetune_from(full_dir, full, splits, args)
        summary["targets_met"]["finetune_improves_val_loss"] = summary["finetune"]["improves_val_loss"]
    (args.out / "learning.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary["targets_met"]))
    print(
        f"plots: {full_dir / 'plots'}"
        + (f", {args.out / 'finetune' / 'plots'}" if args.finetune_epochs > 0 else "")
    )
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
