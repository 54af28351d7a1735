"""Trainer callbacks: the JSON Lines metrics log and its plots, a quiet progress bar and the time limit.

The log has one object per line, `{"step": ..., "epoch": ..., "loss": ..., "learning_rate": ...}` (training),
`{"step": ..., "eval_loss": ...}` (validation) and the final summary; `plots.plot_training_log` reads it.
It is appended to as training goes, so a killed run keeps its history; a resumed run first drops the lines
of the steps after its checkpoint (they are trained again and would otherwise appear twice).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import ProgressCallback

METRICS_LOG_NAME = "metrics.jsonl"


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN / inf; keep them visible as "nan" / "inf"
    return value


class MetricsLogCallback(TrainerCallback):
    """Append every `Trainer.log` call (main process only) to `<run_dir>/metrics.jsonl`.

    `extra_metrics` returns counters to add to each training line (feature-cache hits, skipped samples...).
    """

    def __init__(
        self, run_dir: str | Path, extra_metrics: Callable[[], dict[str, Any]] | None = None
    ) -> None:
        self.path = Path(run_dir) / METRICS_LOG_NAME
        self.extra_metrics = extra_metrics

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not state.is_world_process_zero or not self.path.exists():
            return
        # Resumed (or restarted) at `state.global_step`: forget what was logged after it.
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
            if isinstance(entry, dict) and entry.get("step", 0) <= state.global_step:
                kept.append(line)
        self.path.write_text("".join(f"{line}\n" for line in kept))

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not state.is_world_process_zero or not logs:
            return
        entry: dict[str, Any] = {"step": state.global_step, "epoch": state.epoch}
        entry.update(logs)
        if self.extra_metrics is not None and "loss" in logs:
            entry.update(self.extra_metrics())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps({k: _json_value(v) for k, v in entry.items()}) + "\n")


class CompactProgressCallback(ProgressCallback):
    """The Trainer's progress bar (rate, ETA) with the latest loss, learning rate and gradient norm shown in
    the bar itself; only evaluations and the final summary get a line of their own.

    The stock bar prints the whole log dict on a new line at every logging step, which buries the bar.
    """

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not state.is_world_process_zero or self.training_bar is None or not logs:
            return
        if "eval_loss" in logs or "train_runtime" in logs:
            shown = {k: v for k, v in logs.items() if k != "total_flos"}
            self.training_bar.write(
                f"step {state.global_step}: "
                + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items())
            )
            return
        self.training_bar.set_postfix(
            {
                k: f"{logs[k]:.4g}"
                for k in ("loss", "learning_rate", "grad_norm")
                if isinstance(logs.get(k), float)
            },
            refresh=False,
        )


class PlotCallback(TrainerCallback):
    """Redraw the training plots (loss / validation loss / learning rate / gradient norm) at each checkpoint
    and at the end, so a long run can be watched and a killed one still has its plots."""

    def __init__(self, run_dir: str | Path) -> None:
        self.log_path = Path(run_dir) / METRICS_LOG_NAME
        self.out_dir = Path(run_dir) / "plots"

    def _plot(self, state: TrainerState) -> None:
        if not state.is_world_process_zero or not self.log_path.exists():
            return
        from videogemma.train.plots import plot_training_log

        plot_training_log(self.log_path, self.out_dir)

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._plot(state)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._plot(state)


class TimeLimitCallback(TrainerCallback):
    """Stop training (with a final checkpoint and evaluation) once it has run `minutes` of wall time.

    With several processes, rank 0's clock decides for all: ranks stopping at different steps would leave the
    others waiting in their next gradient all-reduce forever.
    """

    def __init__(self, minutes: float) -> None:
        self.seconds = minutes * 60.0
        self.start = time.monotonic()

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.start = time.monotonic()

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if _on_every_rank(time.monotonic() - self.start >= self.seconds):
            control.should_training_stop = True
            control.should_save = True
            control.should_evaluate = args.eval_strategy != "no"


def _on_every_rank(decision: bool) -> bool:
    """Rank 0's `decision`, on every process of the default process group (or `decision` without one)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return decision
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    flag = torch.tensor([int(decision)], device=device)
    dist.broadcast(flag, src=0)
    return bool(flag.item())
