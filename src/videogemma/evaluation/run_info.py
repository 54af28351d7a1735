"""What a report says about the run it scores: checkpoint, training config, decoding settings, dates, steps.

Gathered by `videogemma eval` from the prediction records (their `model` and `dataset`), the
`<stem>_throughput.json` that `infer-batch` writes beside its predictions (decoding settings, batch size, when
it finished, the folder the videos were read from) and the run folder's `train_config.yaml`. Reports carry no
machine paths: a path shows relative to the report's parent folder when it lies inside it, else as its name.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from videogemma.inference.output import THROUGHPUT_SUFFIX

TRAIN_CONFIG_NAME = "train_config.yaml"
# The training settings a report names beside the config file, when the config has them.
CONFIG_FIELDS = ("stage", "learning_rate", "num_train_epochs", "max_steps", "effective_batch_size", "seed")


def display_path(path: str | os.PathLike, base: Path) -> str:
    """`path` relative to `base` when it lies inside `base`, else its last component."""
    path = Path(path)
    try:
        resolved, root = path.resolve(), base.resolve()
    except OSError:
        return path.name or str(path)
    if resolved != root and resolved.is_relative_to(root):
        return resolved.relative_to(root).as_posix()
    return path.name or str(path)


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _sidecar(predictions: Path) -> dict[str, Any]:
    """`infer-batch`'s throughput file beside the predictions (`predictions_throughput.json`), or {}."""
    stem = predictions.name.rsplit(".", 1)[0]
    path = predictions.with_name(stem + THROUGHPUT_SUFFIX)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _train_config(checkpoint: Path) -> Path | None:
    """The training config of a run folder, or of the run a `checkpoint-N` folder belongs to."""
    for folder in (checkpoint, checkpoint.parent):
        if (folder / TRAIN_CONFIG_NAME).is_file():
            return folder / TRAIN_CONFIG_NAME
    return None


def _config_summary(path: Path) -> str:
    import yaml

    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return ""
    model = config.get("model") or {}
    parts = [f"preset {model['preset']}"] if model.get("preset") else []
    if model.get("pretrained"):
        parts.append(f"from {Path(str(model['pretrained'])).name}")
    # max_steps -1 means "no limit" (the epochs decide), so it is left out like an unset field.
    parts += [f"{key} {config[key]}" for key in CONFIG_FIELDS if config.get(key) not in (None, -1)]
    return ", ".join(parts)


def decoding_text(generation: dict[str, Any]) -> str:
    """GenerationSettings as the report shows them: greedy or the sampling options, and the token limit."""
    if generation.get("do_sample"):
        mode = (
            f"sampling (temperature {generation.get('temperature')}, top-p {generation.get('top_p')}, "
            f"top-k {generation.get('top_k')}, seed {generation.get('seed')})"
        )
    else:
        mode = "greedy"
    return f"{mode}, at most {generation.get('max_new_tokens')} new tokens"


def gather_run_info(
    predictions: Path, models: list[str], report_dir: Path, timings: Path | None = None
) -> dict[str, Any]:
    """The run facts the reports show, every path made display-safe (`display_path`)."""
    base = report_dir.resolve().parent
    sidecar = _sidecar(predictions)
    info: dict[str, Any] = {"predictions": display_path(predictions, base), "evaluated_at": utc_now()}
    if sidecar.get("finished_at"):
        info["predicted_at"] = sidecar["finished_at"]
    if isinstance(sidecar.get("generation"), dict):
        info["decoding"] = decoding_text(sidecar["generation"])
    if sidecar.get("batch_size"):
        info["batch_size"] = sidecar["batch_size"]
    if len(models) == 1:
        model = Path(models[0])
        info["checkpoint"] = display_path(model, base) if model.is_absolute() or model.exists() else models[0]
        config = _train_config(model) if model.is_dir() else None
        if config is not None:
            summary = _config_summary(config)
            info["config"] = display_path(config, base) + (f" ({summary})" if summary else "")
    if timings is not None:
        info["steps"] = step_seconds(timings)
    return info


def video_root(predictions: Path, option: Path | None) -> Path | None:
    """Where the records' `video_path`s resolve: the option, else the folder infer-batch read them from."""
    if option is not None:
        return option
    recorded = _sidecar(predictions).get("video_root")
    return Path(recorded) if recorded else None


def step_seconds(path: Path) -> dict[str, float]:
    """{step: seconds} of the finished steps in a state file like the demo's (`{"steps": {name: {"seconds"}}}`)."""
    try:
        steps = json.loads(path.read_text(encoding="utf-8")).get("steps", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return {
        name: float(step["seconds"])
        for name, step in steps.items()
        if isinstance(step, dict) and isinstance(step.get("seconds"), (int, float))
    }


RUN_LABELS = {
    "checkpoint": "Checkpoint",
    "config": "Training config",
    "decoding": "Decoding",
    "batch_size": "Batch size",
    "predictions": "Predictions",
    "predicted_at": "Predicted",
    "evaluated_at": "Evaluated",
}


def run_rows(result: Any) -> list[list[object]]:
    """The report's "Run" table of an `EvaluationResult`: model, dataset, then what `gather_run_info` found."""
    run, identifiers = result.run, result.identifiers
    rows: list[list[object]] = [
        ["Model", ", ".join(identifiers.get("model") or []) or "unknown"],
        ["Dataset", ", ".join(identifiers.get("dataset") or []) or "unknown"],
    ]
    rows += [[label, str(run[key])] for key, label in RUN_LABELS.items() if run.get(key) is not None]
    if run.get("steps"):
        rows.append(
            ["Step times", ", ".join(f"{name} {seconds:.0f} s" for name, seconds in run["steps"].items())]
        )
    if result.throughput and result.throughput.get("videos_per_second"):
        rows.append(["Throughput", f"{result.throughput['videos_per_second']:.2f} videos/s (generation)"])
    return rows
