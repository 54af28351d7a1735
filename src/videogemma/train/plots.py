"""PNG plots of a training run's metrics log: loss with validation loss, learning rate, gradient norm."""

from __future__ import annotations

import math
import os
from pathlib import Path

from videogemma.plotting import figure_canvas, save_png


def plot_training_log(log_path: str | os.PathLike, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Plots of a JSON Lines training log: loss with validation loss, learning rate, gradient norm.

    Each line is a dict with `step` and any of `loss`, `eval_loss`, `learning_rate`, `grad_norm`
    (and `epoch`); other keys are ignored. Returns the written PNGs keyed by name; a quantity the log never
    records gets no plot.
    """
    from videogemma.inference.records import read_json_lines

    log_path, out_dir = Path(log_path), Path(out_dir)
    if not log_path.is_file():
        raise FileNotFoundError(f"{log_path}: no such training log")
    series: dict[str, tuple[list[float], list[float]]] = {}
    for line_number, entry in read_json_lines(log_path)[0]:
        if not isinstance(entry, dict) or "step" not in entry:
            raise ValueError(f"{log_path}, line {line_number}: expected an object with a 'step'")
        for key in ("loss", "eval_loss", "learning_rate", "grad_norm"):
            value = entry.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                steps, values = series.setdefault(key, ([], []))
                steps.append(float(entry["step"]))
                values.append(float(value))

    written: dict[str, Path] = {}
    if "loss" in series or "eval_loss" in series:
        with figure_canvas(7, 4) as figure:
            axis = figure.subplots()
            for key, label, style in (("loss", "training loss", "-"), ("eval_loss", "validation loss", "o-")):
                if key in series:
                    axis.plot(*series[key], style, label=label, markersize=4)
            axis.set_xlabel("step")
            axis.set_ylabel("loss")
            axis.set_title("Loss")
            axis.grid(alpha=0.3)
            axis.legend()
            written["loss"] = save_png(figure, out_dir / "loss.png")
    for key, label, file_name in (
        ("learning_rate", "learning rate", "learning_rate.png"),
        ("grad_norm", "gradient norm", "grad_norm.png"),
    ):
        if key not in series:
            continue
        with figure_canvas(7, 3.5) as figure:
            axis = figure.subplots()
            axis.plot(*series[key], "-", color="#4c78a8")
            axis.set_xlabel("step")
            axis.set_ylabel(label)
            axis.set_title(label.capitalize())
            axis.grid(alpha=0.3)
            if key == "learning_rate":
                axis.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
            written[key] = save_png(figure, out_dir / file_name)
    return written
