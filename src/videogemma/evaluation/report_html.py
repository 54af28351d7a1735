"""A self-contained HTML report: the headline (coaching metrics first), the run, confusion matrices, the text
metrics and a sortable, filterable per-sample table with a strip of each clip's frames, worst cases first.

One file, no external assets or scripts (a few lines of inline JavaScript sort and filter the table), so it
opens offline in any browser and can be mailed around. All text from records (predictions are model output)
is HTML-escaped. Paths show as names or relative to the report's folder (`run_info.display_path`).
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from videogemma.evaluation.form_metrics import OUTCOME_SEVERITY
from videogemma.evaluation.headline import headline_rows, report_title
from videogemma.evaluation.metrics import (
    BAND_NAMES,
    BANDS,
    METRIC_LABELS,
    EvaluationResult,
    SampleScore,
    sample_band,
)
from videogemma.evaluation.run_info import run_rows
from videogemma.evaluation.thumbnails import Strip
from videogemma.files import atomic_write

REPORT_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em 2em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } .subtitle { color: #555; margin-top: 0; }
h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; }
th { background: #1F4E78; color: white; position: sticky; top: 0; z-index: 1; }
th[data-sort] { cursor: pointer; user-select: none; }
th[aria-sort=ascending]::after { content: " ▲"; } th[aria-sort=descending]::after { content: " ▼"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.text { min-width: 14em; max-width: 30em; white-space: pre-wrap; }
td.path { font-size: 0.8em; color: #555; }
.green { background: #C6EFCE; } .yellow { background: #FFEB9C; } .red { background: #FFC7CE; }
img.plot { display: block; max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
img.strip { display: block; height: 48px; }
.cards { display: flex; flex-wrap: wrap; gap: 0.6em; margin: 1em 0; }
.card { border: 1px solid #ccc; border-radius: 6px; padding: 0.5em 0.8em; min-width: 10em; max-width: 22em; }
.card .label { font-size: 0.8em; color: #555; } .card .value { font-size: 1.5em; font-weight: 600; }
.card .detail { font-size: 0.8em; color: #555; } .card.bad { border-color: #e5484d; background: #fff4f4; }
.card.good { border-color: #4caf50; } .card.wide { max-width: 40em; } .card.wide .value { font-size: 1em; }
.controls { margin: 0.5em 0; } .controls input { width: 22em; } .controls > * { margin-right: 0.8em; }
"""

# Sorts the per-sample table by a clicked header (numbers by their data-v value) and filters its rows by text
# and outcome. Plain DOM code, no library: the report must work offline.
TABLE_SCRIPT = """
(function () {
  var table = document.getElementById("samples");
  var body = table.tBodies[0];
  var text = document.getElementById("sample-filter");
  var outcome = document.getElementById("outcome-filter");
  var count = document.getElementById("sample-count");
  function key(row, column) {
    var cell = row.cells[column];
    var value = cell.getAttribute("data-v");
    return value === null ? cell.textContent.trim().toLowerCase() : parseFloat(value);
  }
  var headers = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(headers, function (header, column) {
    if (!header.hasAttribute("data-sort")) return;
    header.addEventListener("click", function () {
      var ascending = header.getAttribute("aria-sort") !== "ascending";
      Array.prototype.forEach.call(headers, function (h) { h.removeAttribute("aria-sort"); });
      header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = key(a, column), y = key(b, column);
        return (x < y ? -1 : x > y ? 1 : 0) * (ascending ? 1 : -1);
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
  function apply() {
    var query = text.value.trim().toLowerCase(), wanted = outcome.value, shown = 0;
    Array.prototype.forEach.call(body.rows, function (row) {
      var keep = (!wanted || row.getAttribute("data-outcome") === wanted) &&
                 (!query || row.textContent.toLowerCase().indexOf(query) !== -1);
      row.hidden = !keep;
      if (keep) shown += 1;
    });
    count.textContent = shown + " of " + body.rows.length + " clips shown";
  }
  text.addEventListener("input", apply);
  outcome.addEventListener("change", apply);
  apply();
})();
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
    return f'<img class="plot" alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def _headline(result: EvaluationResult) -> str:
    cards = []
    for row in headline_rows(result.to_json(), confusions=3):
        tone = f" {row.tone}" if row.tone else ""
        tone += " wide" if len(row.value) > 12 else ""
        cards.append(
            f'<div class="card{tone}"><div class="label">{escape(row.label)}</div>'
            f'<div class="value">{escape(row.value)}</div><div class="detail">{escape(row.detail)}</div></div>'
        )
    return '<div class="cards" id="headline">' + "".join(cards) + "</div>"


def _text_metric_sections(result: EvaluationResult) -> list[str]:
    statistic_rows = [
        [
            METRIC_LABELS[name],
            *(result.aggregates[name][key] for key in ("mean", "median", "std", "min", "max")),
        ]
        for name in result.metrics
    ]
    statistic_rows.append(["Corpus BLEU", result.corpus_bleu, "", "", "", ""])
    sections = [
        "<h2>Text metrics</h2><p>Errors and empty predictions score 0.</p>",
        html_table(["Metric", "Mean", "Median", "Std", "Min", "Max"], statistic_rows),
    ]
    if result.band_counts:
        band_rows = [
            [
                f"{METRIC_LABELS[name]} (≥{BANDS[name][0]:g} / ≥{BANDS[name][1]:g})",
                *(counts[b] for b in BAND_NAMES),
            ]
            for name, counts in result.band_counts.items()
        ]
        sections += [
            f"<h3>Score bands</h3><p>{escape(result.variants.get('bands', ''))}.</p>",
            html_table(
                ["Metric", "Green", "Yellow", "Red"], band_rows, [["", *BAND_NAMES] for _ in band_rows]
            ),
        ]
    return sections


def _percent(value: float) -> str:
    return f"{value:.1%}"


def _exercise_section(result: EvaluationResult) -> list[str]:
    form = result.form
    rows = [
        ["(all)", form.samples, _percent(form.exercise_accuracy), _percent(form.exact_accuracy),
         _percent(form.verdict_accuracy), form.faulty, form.faulty_told_good]
    ]  # fmt: skip
    for row in result.per_exercise:
        samples = row["samples"]
        rows.append([row["exercise"] or "(none)", samples, _percent(row["accuracy"]),
                     _percent(row["exact"] / samples), _percent(row["verdict_correct"] / samples), row["faulty"],
                     row["faulty_told_good"]])  # fmt: skip
    headers = ["Exercise", "Clips", "Exercise identified", "Exact label", "Verdict right", "With a fault",
               "Faulty told good form"]  # fmt: skip
    return ["<h2>Per exercise</h2>", html_table(headers, rows)]


def _order(sample: SampleScore, metric: str | None) -> tuple[object, ...]:
    """Worst first: by outcome (no answer, wrong exercise, fault missed, ...), then by the lowest score."""
    return (OUTCOME_SEVERITY[sample.form.outcome], sample.scores[metric] if metric else 0.0)


def _cell(value: object, css: str = "", sort_value: float | None = None) -> str:
    attributes = f' class="{css}"' if css else ""
    if sort_value is not None:
        attributes += f' data-v="{sort_value:.6g}"'
    return f"<td{attributes}>{value}</td>"


def _sample_table(result: EvaluationResult, strips: Mapping[str, Strip]) -> str:
    metric = next((name for name in ("similarity", "rougeL") if name in result.metrics), None)
    samples = sorted(result.samples, key=lambda sample: _order(sample, metric))
    # The banded metrics (and BERTScore) fit beside the text; every metric is in the workbook.
    shown = [name for name in result.metrics if name in BANDS or name == "bertscore_f1"]
    headers = ["Frames", "ID", "Outcome", "Ground truth", "Prediction", "Exercise", "Verdict"]
    headers += [METRIC_LABELS[name] for name in shown] + ["Status"]
    sortable = {header: header != "Frames" for header in headers}
    head = "".join(f"<th{' data-sort' if sortable[h] else ''}>{escape(h)}</th>" for h in headers)
    rows = []
    for sample in samples:
        record, form = sample.record, sample.form
        strip = strips.get(record.video_path or "")
        picture = (
            f'<img class="strip" alt="frames" loading="lazy" src="{strip.data_uri}">'
            if strip and strip.data_uri
            else escape(strip.note if strip else "")
        )
        status = "empty" if sample.outcome == "empty" else record.status
        verdict = f"{form.verdict_truth} → {form.verdict_predicted or 'none'}"
        cells = [
            _cell(f"{picture}<div>{escape(record.video_path)}</div>", "path"),
            _cell(escape(record.id), "num", record.id)
            if isinstance(record.id, int)
            else _cell(escape(record.id)),
            _cell(escape(form.outcome), "", OUTCOME_SEVERITY[form.outcome]),
            _cell(escape(record.ground_truth), "text"),
            _cell(escape(record.prediction), "text"),
            _cell(
                "yes" if sample.exercise_identified else "no",
                "green" if sample.exercise_identified else "red",
            ),
            _cell(escape(verdict), "green" if form.verdict_correct else "red"),
        ]
        for name in shown:
            value = sample.scores[name]
            cells.append(_cell(f"{value:.3f}", f"num {sample_band(sample, name) or ''}".strip(), value))
        cells.append(_cell(escape(status + (f": {record.error}" if record.error else "")), "text"))
        rows.append(f'<tr data-outcome="{escape(form.outcome)}">' + "".join(cells) + "</tr>")
    options = "".join(
        f'<option value="{escape(name)}">{escape(name)} ({count})</option>'
        for name, count in result.form.outcomes.items()
    )
    controls = (
        '<div class="controls"><input id="sample-filter" type="search" placeholder="filter: any text in a row">'
        f'<select id="outcome-filter"><option value="">every outcome</option>{options}</select>'
        '<span id="sample-count"></span></div>'
    )
    table = (
        f'<table id="samples"><thead><tr>{head}</tr></thead><tbody>\n'
        + "\n".join(rows)
        + "\n</tbody></table>"
    )
    note = (
        "<p>Worst first: no answer, wrong exercise, fault missed (told good form), fault said on good form, "
        "wrong fault, then right answers in other words; within each, the lowest score first. Click a header "
        "to sort; type to filter.</p>"
    )
    return "<h2>Per-sample results</h2>" + note + controls + table


def render_html(
    result: EvaluationResult,
    plots: Mapping[str, Path] | None = None,
    title: str | None = None,
    strips: Mapping[str, Strip] | None = None,
) -> str:
    """The report as one HTML string; `strips` maps a record's video_path to its frame strip."""
    title = title or report_title(result)
    plots = dict(plots or {})
    counts = result.counts
    subtitle = (
        f"{counts['total']} clips: {counts['success']} answered, {counts['error']} errors, "
        f"{counts['empty']} empty"
        + (f" · evaluated {result.run['evaluated_at']}" if result.run.get("evaluated_at") else "")
    )
    sections = [f"<h1>{escape(title)}</h1>", f'<p class="subtitle">{escape(subtitle)}</p>', _headline(result)]
    sections += ["<h2>Run</h2>", html_table(["Item", "Value"], run_rows(result))]
    confusion = [plots.pop(name) for name in ("exercise_confusion", "form_confusion") if name in plots]
    if confusion:
        sections.append("<h2>Confusion matrices</h2><p>Ground truth (rows) by answer (columns).</p>")
        sections += [embedded_image(path, path.stem.replace("_", " ")) for path in confusion]
    sections += _exercise_section(result)
    sections += _text_metric_sections(result)
    if plots:
        sections.append("<h2>Plots</h2>")
        sections += [embedded_image(path, name.replace("_", " ")) for name, path in plots.items()]
    sections.append(_sample_table(result, strips or {}))
    how = [[key, text] for key, text in result.variants.items()]
    sections += ["<h2>How the metrics were computed</h2>", html_table(["Metric", "Definition"], how)]
    body = "\n".join(sections)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(title)}</title>\n<style>{REPORT_STYLE}</style>\n</head>\n<body>\n{body}\n"
        f"<script>{TABLE_SCRIPT}</script>\n</body>\n</html>\n"
    )


def write_html(
    result: EvaluationResult,
    path: str | os.PathLike,
    plots: Mapping[str, Path] | None = None,
    title: str | None = None,
    strips: Mapping[str, Any] | None = None,
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as file:
        file.write(render_html(result, plots, title, strips))
    return path
