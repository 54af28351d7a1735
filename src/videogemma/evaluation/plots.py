"""PNG plots of evaluation results."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

from matplotlib.ticker import MaxNLocator

from videogemma.evaluation.metrics import BAND_NAMES, BANDS, METRIC_LABELS
from videogemma.plotting import figure_canvas, save_png

if TYPE_CHECKING:
    from videogemma.evaluation.form_metrics import Confusion
    from videogemma.evaluation.metrics import EvaluationResult

# The report fills (C6EFCE / FFEB9C / FFC7CE) are too pale for bars; these are their saturated kin.
BAND_COLOURS = {"green": "#4caf50", "yellow": "#f2b705", "red": "#e5484d"}


def plot_metric_distributions(result: EvaluationResult, path: str | os.PathLike) -> Path:
    """A histogram of every metric's per-sample scores, with its mean marked."""
    columns = 3
    rows = math.ceil(len(result.metrics) / columns)
    with figure_canvas(4 * columns, 3 * rows) as figure:
        axes = figure.subplots(rows, columns, squeeze=False).ravel()
        for axis, name in zip(axes, result.metrics):
            values = [sample.scores[name] for sample in result.samples]
            axis.hist(values, bins=20, range=(0.0, 1.0), color="#4c78a8", edgecolor="white")
            mean = result.aggregates[name]["mean"]
            axis.axvline(mean, color="black", linestyle="--", linewidth=1, label=f"mean {mean:.3f}")
            axis.set_title(METRIC_LABELS[name])
            axis.set_xlabel("score")
            axis.set_ylabel("samples")
            axis.yaxis.set_major_locator(MaxNLocator(integer=True))
            axis.legend(loc="upper right", fontsize="small")
        for axis in axes[len(result.metrics) :]:
            axis.set_visible(False)
        figure.suptitle(f"Metric distributions ({len(result.samples)} samples)")
        return save_png(figure, Path(path))


def plot_band_counts(result: EvaluationResult, path: str | os.PathLike) -> Path:
    """Green / yellow / red sample counts of each banded metric, as grouped bars."""
    names = list(result.band_counts)
    width = 0.8 / len(BAND_NAMES)
    with figure_canvas(max(5, 2.2 * len(names)), 3.5) as figure:
        axis = figure.subplots()
        for offset, band_name in enumerate(BAND_NAMES):
            positions = [i + (offset - 1) * width for i in range(len(names))]
            counts = [result.band_counts[name][band_name] for name in names]
            bars = axis.bar(positions, counts, width, color=BAND_COLOURS[band_name], label=band_name)
            axis.bar_label(bars, fontsize="small")
        axis.set_xticks(range(len(names)))
        axis.set_xticklabels(
            [f"{METRIC_LABELS[n]}\n(≥{BANDS[n][0]:g} / ≥{BANDS[n][1]:g})" for n in names], fontsize="small"
        )
        axis.set_ylabel("samples")
        axis.yaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_title("Score bands")
        axis.legend()
        return save_png(figure, Path(path))


def plot_exercise_accuracy(result: EvaluationResult, path: str | os.PathLike) -> Path:
    """Exercise identification accuracy per ground-truth exercise, with the overall accuracy marked."""
    rows = result.per_exercise
    with figure_canvas(7, max(2.5, 0.45 * len(rows) + 1.2)) as figure:
        axis = figure.subplots()
        labels = [f"{row['exercise'] or '(none)'} (n={row['samples']})" for row in rows]
        bars = axis.barh(range(len(rows)), [row["accuracy"] for row in rows], color="#4c78a8")
        axis.bar_label(bars, labels=[f"{row['accuracy']:.0%}" for row in rows], fontsize="small", padding=2)
        axis.axvline(result.exercise_accuracy, color="black", linestyle="--", linewidth=1)
        axis.set_yticks(range(len(rows)))
        axis.set_yticklabels(labels, fontsize="small")
        axis.invert_yaxis()
        axis.set_xlim(0, 1.1)
        axis.set_xlabel("exercise identified (fraction of samples)")
        axis.set_title(f"Exercise identification: {result.exercise_accuracy:.1%} overall (dashed)")
        return save_png(figure, Path(path))


def plot_confusion(confusion: Confusion, title: str, path: str | os.PathLike) -> Path:
    """A confusion matrix: ground truth by answer, each cell's count written in it, shaded by its share of
    the row (so a rare class reads as clearly as a common one)."""
    import numpy as np

    counts = np.array(confusion.counts, dtype=float)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    rows, columns = counts.shape
    with figure_canvas(max(5.0, 0.55 * columns + 3.0), max(3.0, 0.45 * rows + 2.2)) as figure:
        axis = figure.subplots()
        axis.imshow(shares, cmap="Blues", vmin=0, vmax=1, aspect="auto")
        for row in range(rows):
            for column in range(columns):
                if counts[row, column]:
                    colour = "white" if shares[row, column] > 0.6 else "black"
                    axis.text(column, row, f"{counts[row, column]:.0f}", ha="center", va="center",
                              fontsize="small", color=colour)  # fmt: skip
        axis.set_xticks(range(columns))
        axis.set_xticklabels(confusion.predicted, rotation=40, ha="right", fontsize="small")
        axis.set_yticks(range(rows))
        axis.set_yticklabels([f"{label} (n={int(sum(row))})" for label, row in zip(confusion.labels, counts)],
                             fontsize="small")  # fmt: skip
        axis.set_xlabel("answer")
        axis.set_ylabel("ground truth")
        correct = sum(counts[i, confusion.predicted.index(label)] for i, label in enumerate(confusion.labels)
                      if label in confusion.predicted)  # fmt: skip
        axis.set_title(f"{title}\n{correct / max(counts.sum(), 1):.1%} on the diagonal", fontsize="medium")
        return save_png(figure, Path(path))


def make_evaluation_plots(result: EvaluationResult, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Every evaluation plot as PNG in `out_dir`, keyed by a short name."""
    out_dir = Path(out_dir)
    form = result.form
    plots = {
        "exercise_confusion": plot_confusion(
            form.exercise_confusion, "Exercises", out_dir / "exercise_confusion.png"
        ),
        "form_confusion": plot_confusion(
            form.form_confusion, "Form (good form or the fault)", out_dir / "form_confusion.png"
        ),
        "exercise_accuracy": plot_exercise_accuracy(result, out_dir / "exercise_accuracy.png"),
        "metric_distributions": plot_metric_distributions(result, out_dir / "metric_distributions.png"),
    }
    if result.band_counts:
        plots["score_bands"] = plot_band_counts(result, out_dir / "score_bands.png")
    return plots
