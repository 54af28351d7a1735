"""PNG plots of evaluation results and of training logs (matplotlib, Agg canvas, no LaTeX)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from matplotlib.ticker import MaxNLocator

from videogemma.evaluation.metrics import BAND_NAMES, BANDS, METRIC_LABELS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from videogemma.evaluation.metrics import EvaluationResult

# The report fills (C6EFCE / FFEB9C / FFC7CE) are too pale for bars; these are their saturated kin.
BAND_COLOURS = {"green": "#4caf50", "yellow": "#f2b705", "red": "#e5484d"}


@contextmanager
def _figure(width: float, height: float) -> Iterator[Figure]:
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # A user's matplotlibrc may turn on usetex; plots must not need a LaTeX install.
    with matplotlib.rc_context({"text.usetex": False}):
        figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
        FigureCanvasAgg(figure)
        yield figure


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def plot_metric_distributions(result: EvaluationResult, path: str | os.PathLike) -> Path:
    """A histogram of every metric's per-sample scores, with its mean marked."""
    columns = 3
    rows = math.ceil(len(result.metrics) / columns)
    with _figure(4 * columns, 3 * rows) as figure:
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
        return _save(figure, Path(path))


def plot_band_counts(result: EvaluationResult, path: str | os.PathLike) -> Path:
    """Green / yellow / red sample counts of each banded metric, as grouped bars."""
    names = list(result.band_counts)
    width = 0.8 / len(BAND_NAMES)
    with _figure(max(5, 2.2 * len(names)), 3.5) as figure:
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
        return _save(figure, Path(path))


def plot_exercise_accuracy(result: EvaluationResult, path: str | os.PathLike) -> Path:
    """Exercise identification accuracy per ground-truth exercise, with the overall accuracy marked."""
    rows = result.per_exercise
    with _figure(7, max(2.5, 0.45 * len(rows) + 1.2)) as figure:
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
        return _save(figure, Path(path))


def make_evaluation_plots(result: EvaluationResult, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Every evaluation plot as PNG in `out_dir`, keyed by a short name."""
    out_dir = Path(out_dir)
    plots = {
        "metric_distributions": plot_metric_distributions(result, out_dir / "metric_distributions.png"),
        "exercise_accuracy": plot_exercise_accuracy(result, out_dir / "exercise_accuracy.png"),
    }
    if result.band_counts:
        plots["score_bands"] = plot_band_counts(result, out_dir / "score_bands.png")
    return plots


def plot_training_log(log_path: str | os.PathLike, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Plots of a JSON Lines training log: loss with validation loss, learning rate, gradient norm.

    Each line is a dict with `step` and any of `loss`, `eval_loss`, `learning_rate`, `grad_norm`
    (and `epoch`); other keys are ignored. Returns the written PNGs keyed by name; a quantity the log never
    records gets no plot.
    """
    from videogemma.evaluation.records import read_json_lines

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
        with _figure(7, 4) as figure:
            axis = figure.subplots()
            for key, label, style in (("loss", "training loss", "-"), ("eval_loss", "validation loss", "o-")):
                if key in series:
                    axis.plot(*series[key], style, label=label, markersize=4)
            axis.set_xlabel("step")
            axis.set_ylabel("loss")
            axis.set_title("Loss")
            axis.grid(alpha=0.3)
            axis.legend()
            written["loss"] = _save(figure, out_dir / "loss.png")
    for key, label, file_name in (
        ("learning_rate", "learning rate", "learning_rate.png"),
        ("grad_norm", "gradient norm", "grad_norm.png"),
    ):
        if key not in series:
            continue
        with _figure(7, 3.5) as figure:
            axis = figure.subplots()
            axis.plot(*series[key], "-", color="#4c78a8")
            axis.set_xlabel("step")
            axis.set_ylabel(label)
            axis.set_title(label.capitalize())
            axis.grid(alpha=0.3)
            if key == "learning_rate":
                axis.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
            written[key] = _save(figure, out_dir / file_name)
    return written
