"""A self-contained HTML report: summary tables, per-sample results and the plots embedded as PNG.

One file, no external assets or scripts, so it opens in any browser and can be mailed around. All text
from records (predictions are model output) is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from videogemma.evaluation.metrics import BAND_NAMES, BANDS, METRIC_LABELS, EvaluationResult, band
from videogemma.files import atomic_write

REPORT_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; }
th { background: #1F4E78; color: white; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.text { max-width: 40em; white-space: pre-wrap; }
.green { background: #C6EFCE; } .yellow { background: #FFEB9C; } .red { background: #FFC7CE; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
"""


def escape(value: object) -> str:
    return "" if value is None else html.escape(str(value), quote=True)


def html_table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], classes: Sequence[Sequence[str]] | None = None
) -> str:
    """An HTML table; `classes` gives each cell's CSS class (same shape as rows)."""
    parts = ["<table>", "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in headers) + "</tr>"]
    for row_index, row in enumerate(rows):
        cells = []
        for column, value in enumerate(row):
            css = classes[row_index][column] if classes else ""
            if isinstance(value, float):
                value = f"{value:.4f}"
                css = f"num {css}".strip()
            elif isinstance(value, int) and not isinstance(value, bool):
                css = f"num {css}".strip()
            attribute = f' class="{css}"' if css else ""
            cells.append(f"<td{attribute}>{escape(value)}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table>")
    return "\n".join(parts)


def embedded_image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def render_html(
    result: EvaluationResult, plots: Mapping[str, Path] | None = None, title: str = "VideoGemma evaluation"
) -> str:
    """The report as one HTML string."""
    identifiers = result.identifiers
    counts = result.counts
    sections = [f"<h1>{escape(title)}</h1>"]

    run_rows = [
        ["Model", ", ".join(identifiers.get("model") or []) or "unknown"],
        ["Dataset", ", ".join(identifiers.get("dataset") or []) or "unknown"],
        *[[f"{key} variant", text] for key, text in result.variants.items()],
    ]
    sections += ["<h2>Run</h2>", html_table(["Item", "Value"], run_rows)]

    sections += [
        "<h2>Counts</h2>",
        html_table(
            ["Samples", "Success", "Error", "Empty prediction"],
            [[counts["total"], counts["success"], counts["error"], counts["empty"]]],
        ),
    ]

    statistic_rows = [
        [
            METRIC_LABELS[name],
            *(result.aggregates[name][key] for key in ("mean", "median", "std", "min", "max")),
        ]
        for name in result.metrics
    ]
    statistic_rows.append(["Corpus BLEU", result.corpus_bleu, "", "", "", ""])
    sections += [
        "<h2>Statistics</h2><p>Errors and empty predictions score 0.</p>",
        html_table(["Metric", "Mean", "Median", "Std", "Min", "Max"], statistic_rows),
    ]

    if result.band_counts:
        band_rows = [
            [
                f"{METRIC_LABELS[name]} (≥{BANDS[name][0]:g} / ≥{BANDS[name][1]:g})",
                *(counts_[b] for b in BAND_NAMES),
            ]
            for name, counts_ in result.band_counts.items()
        ]
        band_classes = [["", *BAND_NAMES] for _ in band_rows]
        sections += [
            "<h2>Score bands</h2>",
            html_table(["Metric", "Green", "Yellow", "Red"], band_rows, band_classes),
        ]

    identified = sum(sample.exercise_identified for sample in result.samples)
    exercise_rows = [["(all)", len(result.samples), identified, result.exercise_accuracy]]
    exercise_rows += [
        [row["exercise"] or "(none)", row["samples"], row["identified"], row["accuracy"]]
        for row in result.per_exercise
    ]
    sections += [
        "<h2>Exercise identification</h2>",
        html_table(["Exercise", "Samples", "Identified", "Accuracy"], exercise_rows),
    ]

    if plots:
        sections.append("<h2>Plots</h2>")
        sections += [embedded_image(path, name.replace("_", " ")) for name, path in plots.items()]

    headers = ["ID", "Video path", "Ground truth", "Prediction"]
    headers += [METRIC_LABELS[name] for name in result.metrics] + ["Exercise identified", "Status", "Error"]
    sample_rows, sample_classes = [], []
    for sample in result.samples:
        record = sample.record
        status = "empty" if sample.outcome == "empty" else record.status
        sample_rows.append(
            [record.id, record.video_path, record.ground_truth, record.prediction]
            + [sample.scores[name] for name in result.metrics]
            + ["yes" if sample.exercise_identified else "no", status, record.error]
        )
        sample_classes.append(
            ["", "", "text", "text"]
            + [band(name, sample.scores[name]) or "" for name in result.metrics]
            + ["green" if sample.exercise_identified else "red", "", "text"]
        )
    sections += ["<h2>Per-sample results</h2>", html_table(headers, sample_rows, sample_classes)]

    body = "\n".join(sections)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(title)}</title>\n<style>{REPORT_STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def write_html(
    result: EvaluationResult,
    path: str | os.PathLike,
    plots: Mapping[str, Path] | None = None,
    title: str = "VideoGemma evaluation",
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as file:
        file.write(render_html(result, plots, title))
    return path
