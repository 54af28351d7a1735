"""Frozen-feature cache: time per epoch with and without it, side by side in one run.

With both encoders frozen (`finetune`), epoch 1 runs CLIP + VideoMamba and stores their features; later
epochs read them back and skip decoding and both encoders. The model is `tiny` with larger encoders (so that
the encoders dominate, as they do for the real model: CLIP ViT-B/16 + VideoMamba-M beside LoRA on the LM).
Goal: epochs after the first ≥ 5× faster with the cache.

    python benchmarks/feature_cache.py [--epochs 3] [--per-variant 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

# `tiny` with CLIP and VideoMamba scaled up (160-pixel frames, wider and deeper); the LM stays tiny.
LARGER_ENCODERS = {
    "vision_config": {
        "hidden_size": 384,
        "intermediate_size": 1536,
        "num_hidden_layers": 8,
        "num_attention_heads": 6,
        "image_size": 160,
    },
    "videomamba_config": {"embed_dim": 256, "depth": 12, "image_size": 160},
}


class EpochTimer(TrainerCallback):
    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def run(work: Path, data: Path, cache: bool, epochs: int) -> tuple[list[float], float]:
    from videogemma.train.run import run_training
    from videogemma.train.train_config import load_train_config

    name = "cached" if cache else "uncached"
    overrides = {
        "stage": "finetune",
        "output_dir": str(work / name),
        "model.preset": "tiny",
        "data.train_file": str(data / "qved_train.json"),
        "lora.r": 8,
        "lora.alpha": 16,
        "num_train_epochs": epochs,
        "per_device_train_batch_size": 4,
        "effective_batch_size": 4,
        "eval_steps": 10_000,
        "save_steps": 10_000,
        "gradient_checkpointing": False,
        "precision": "fp32",
        "feature_cache": "auto" if cache else "off",
        "feature_cache_dir": str(work / "feature_cache"),
        "plots": False,
    }
    args = [item for key, value in overrides.items() for item in (f"--{key}", json.dumps(value))]
    args += ["--model.overrides", json.dumps(LARGER_ENCODERS)]
    timer = EpochTimer()
    run_dir = run_training(load_train_config(None, args), extra_callbacks=[timer])
    final_loss = next(
        json.loads(line)["train_loss"]
        for line in reversed((run_dir / "metrics.jsonl").read_text().splitlines())
        if "train_loss" in line
    )
    return timer.seconds, final_loss


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--per-variant", type=int, default=2, help="synthetic clips per form variant (18 variants)"
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from videogemma.datasets.qved.prepare import prepare_splits
    from videogemma.datasets.synthetic.generate import generate_dataset

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "data"
        generate_dataset(data, per_variant=args.per_variant, size=160, num_frames=16, progress=False)
        prepare_splits(data)
        uncached, uncached_loss = run(work, data, cache=False, epochs=args.epochs)
        cached, cached_loss = run(work, data, cache=True, epochs=args.epochs)

    print(f"\n{'epoch':>5} {'uncached s':>11} {'cached s':>9} {'speed-up':>9}")
    for epoch, (u, c) in enumerate(zip(uncached, cached), start=1):
        print(f"{epoch:>5} {u:>11.2f} {c:>9.2f} {u / c:>8.1f}×")
    later_u, later_c = sum(uncached[1:]), sum(cached[1:])
    ratio = later_u / later_c if later_c else float("nan")
    print(f"epochs after the first: {ratio:.1f}× faster with the cache (goal ≥ 5×)")
    print(f"final training loss: uncached {uncached_loss:.6f}, cached {cached_loss:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
