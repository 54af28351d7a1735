"""PNG plots of a training run's metrics log: loss with validation loss, learning rate, gradient norm.

With the video-answer alignment loss on (stage `full`), the logged training `loss` is LM + weight × alignment
while the validation loss is the LM loss alone: the loss plot then draws the training LM loss beside the
validation loss, the alignment term on its own, and the total faintly, so that no gap is read into the sum."""

from __future__ import annotations

import math
import os
from pathlib import Path

from videogemma.plotting import figure_canvas, save_png


def plot_training_log(log_path: str | os.PathLike, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Plots of a JSON Lines training log: loss with validation loss, learning rate, gradient norm.

    Each line is a dict with `step` and any of `loss`, `eval_loss`, `learning_rate`, `grad_norm`, `lm_loss`,
    `answer_alignment_term` (and `epoch`); other keys are ignored. Returns the written PNGs keyed by name; a quantity the log never
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
        for key in ("loss", "eval_loss", "learning_rate", "grad_norm", "lm_loss", "answer_alignment_term"):
            value = entry.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                steps, values = series.setdefault(key, ([], []))
                steps.append(float(entry["step"]))
                values.append(float(value))

    written: dict[str, Path] = {}
    if "loss" in series or "eval_loss" in series:
        written["loss"] = _plot_loss(series, out_dir / "loss.png")
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


def _plot_loss(series: dict[str, tuple[list[float], list[float]]], path: Path) -> Path:
    split = "lm_loss" in series and "answer_alignment_term" in series
    curves = (
        [
            ("loss", "training total (LM + alignment term)", "-", {"color": "#bbbbbb", "linewidth": 1}),
            ("lm_loss", "training LM loss", "-", {"color": "#4c78a8"}),
            ("answer_alignment_term", "alignment term (weight × alignment loss)", "--", {"color": "#54a24b"}),
            ("eval_loss", "validation LM loss", "o-", {"color": "#e45756", "markersize": 4}),
        ]
        if split
        else [
            ("loss", "training loss", "-", {}),
            ("eval_loss", "validation loss", "o-", {"markersize": 4}),
        ]
    )
    with figure_canvas(7, 4) as figure:
        axis = figure.subplots()
        for key, label, style, options in curves:
            if key in series:
                axis.plot(*series[key], style, label=label, **options)
        axis.set_xlabel("step")
        axis.set_ylabel("loss")
        axis.set_title(
            "Loss (validation: LM loss only; compare it with the training LM loss)" if split else "Loss"
        )
        axis.grid(alpha=0.3)
        axis.legend()
        return save_png(figure, path)
