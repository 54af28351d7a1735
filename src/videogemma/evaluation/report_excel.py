"""The Excel workbook earlier QVED users expect: per-sample results and a summary with band charts.

Text from records (predictions are model output) is stored as text, never as a formula: a prediction
`=HYPERLINK(...)` shows as those characters and does nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE, Cell
from openpyxl.chart import BarChart, Reference
from openpyxl.styles import Alignment, Border, Font, PatternFill, Side
from openpyxl.utils import get_column_letter

from videogemma.evaluation.metrics import BAND_NAMES, BANDS, METRIC_LABELS, EvaluationResult, band
from videogemma.files import atomic_path

RESULTS_SHEET = "Test Evaluation Results"
SUMMARY_SHEET = "Summary"

BAND_FILLS = {
    "green": PatternFill("solid", start_color="C6EFCE", end_color="C6EFCE"),
    "yellow": PatternFill("solid", start_color="FFEB9C", end_color="FFEB9C"),
    "red": PatternFill("solid", start_color="FFC7CE", end_color="FFC7CE"),
}
HEADER_FILL = PatternFill("solid", start_color="1F4E78", end_color="1F4E78")
HEADER_FONT = Font(bold=True, color="FFFFFF")
SECTION_FONT = Font(bold=True, size=12)
_THIN = Side(style="thin", color="BFBFBF")
CELL_BORDER = Border(left=_THIN, right=_THIN, top=_THIN, bottom=_THIN)

# Excel refuses cells longer than this.
_EXCEL_CELL_LIMIT = 32767


def _text(value: object) -> object:
    """A cell value Excel accepts: no control characters, at most the cell length limit."""
    if not isinstance(value, str):
        return value
    value = ILLEGAL_CHARACTERS_RE.sub("", value)
    return value if len(value) <= _EXCEL_CELL_LIMIT else value[: _EXCEL_CELL_LIMIT - 1] + "…"


def _set(cell: Cell, value: object) -> Cell:
    """Write `value` into `cell`; text is always stored as text (openpyxl would store `=...` as a formula)."""
    cell.value = _text(value)
    if isinstance(cell.value, str):
        cell.data_type = "s"
    return cell


def _style_header(sheet, row: int, columns: int) -> None:
    for column in range(1, columns + 1):
        cell = sheet.cell(row=row, column=column)
        cell.fill = HEADER_FILL
        cell.font = HEADER_FONT
        cell.alignment = Alignment(horizontal="center", vertical="center", wrap_text=True)
        cell.border = CELL_BORDER


def _write_results(sheet, result: EvaluationResult) -> None:
    headers = ["ID", "Video path", "Ground truth", "Prediction"]
    headers += [METRIC_LABELS[name] for name in result.metrics]
    headers += ["Exercise identified", "Status", "Error"]
    sheet.append(headers)
    _style_header(sheet, 1, len(headers))
    first_metric_column = 5
    # Rows are counted here: `sheet.max_row` scans every cell, once per row that made the writer quadratic.
    for row_index, sample in enumerate(result.samples, start=2):
        record = sample.record
        status = "empty" if sample.outcome == "empty" else record.status
        row = [record.id, record.video_path, record.ground_truth, record.prediction]
        row += [round(sample.scores[name], 4) for name in result.metrics]
        row += ["yes" if sample.exercise_identified else "no", status, record.error]
        for column, value in enumerate(row, start=1):
            if value is not None:
                _set(sheet.cell(row=row_index, column=column), value)
        for offset, name in enumerate(result.metrics):
            band_name = band(name, sample.scores[name])
            if band_name:
                sheet.cell(row=row_index, column=first_metric_column + offset).fill = BAND_FILLS[band_name]
        exercise_cell = sheet.cell(row=row_index, column=first_metric_column + len(result.metrics))
        exercise_cell.fill = BAND_FILLS["green" if sample.exercise_identified else "red"]
        for column in (3, 4, len(headers)):
            sheet.cell(row=row_index, column=column).alignment = Alignment(wrap_text=True, vertical="top")
    sheet.freeze_panes = "A2"
    sheet.auto_filter.ref = f"A1:{get_column_letter(len(headers))}{len(result.samples) + 1}"
    widths = {"ID": 8, "Video path": 32, "Ground truth": 60, "Prediction": 60, "Error": 40}
    for column, header in enumerate(headers, start=1):
        sheet.column_dimensions[get_column_letter(column)].width = widths.get(header, 14)


def _section(sheet, row: int, title: str, headers: list[str], rows: list[list[object]]) -> int:
    """A titled table starting at `row`; returns the first free row after it."""
    sheet.cell(row=row, column=1, value=title).font = SECTION_FONT
    row += 1
    for column, header in enumerate(headers, start=1):
        _set(sheet.cell(row=row, column=column), header)
    _style_header(sheet, row, len(headers))
    for values in rows:
        row += 1
        for column, value in enumerate(values, start=1):
            _set(sheet.cell(row=row, column=column), value).border = CELL_BORDER
    return row + 2


def _write_summary(sheet, result: EvaluationResult) -> None:
    identifiers = result.identifiers
    row = _section(
        sheet,
        1,
        "Run",
        ["Item", "Value"],
        [
            ["Model", ", ".join(identifiers.get("model") or []) or "unknown"],
            ["Dataset", ", ".join(identifiers.get("dataset") or []) or "unknown"],
            *[[f"{key} variant", text] for key, text in result.variants.items()],
        ],
    )
    counts = result.counts
    row = _section(
        sheet,
        row,
        "Counts",
        ["Samples", "Success", "Error", "Empty prediction"],
        [[counts["total"], counts["success"], counts["error"], counts["empty"]]],
    )
    statistic_rows = [
        [
            METRIC_LABELS[name],
            *(round(result.aggregates[name][key], 4) for key in ("mean", "median", "std", "min", "max")),
        ]
        for name in result.metrics
    ]
    statistic_rows.append(["Corpus BLEU", round(result.corpus_bleu, 4), None, None, None, None])
    row = _section(
        sheet,
        row,
        "Statistics (errors and empty predictions score 0)",
        ["Metric", "Mean", "Median", "Std", "Min", "Max"],
        statistic_rows,
    )

    band_start = row
    band_rows = [
        [
            f"{METRIC_LABELS[name]} (≥{BANDS[name][0]:g} / ≥{BANDS[name][1]:g})",
            *(counts_[b] for b in BAND_NAMES),
        ]
        for name, counts_ in result.band_counts.items()
    ]
    row = _section(sheet, row, "Score bands", ["Metric", "Green", "Yellow", "Red"], band_rows)
    for offset, band_name in enumerate(BAND_NAMES):
        sheet.cell(row=band_start + 1, column=2 + offset).fill = BAND_FILLS[band_name]
        sheet.cell(row=band_start + 1, column=2 + offset).font = Font(bold=True)
    if band_rows:
        chart = BarChart()
        chart.type = "col"
        chart.grouping = "clustered"
        chart.title = "Score bands"
        chart.y_axis.title = "samples"
        header_row, last_row = band_start + 1, band_start + 1 + len(band_rows)
        data = Reference(sheet, min_col=2, max_col=4, min_row=header_row, max_row=last_row)
        categories = Reference(sheet, min_col=1, min_row=header_row + 1, max_row=last_row)
        chart.add_data(data, titles_from_data=True)
        chart.set_categories(categories)
        for series, colour in zip(chart.series, ("4CAF50", "F2B705", "E5484D")):
            series.graphicalProperties.solidFill = colour
        chart.width, chart.height = 16, 8
        sheet.add_chart(chart, "H1")

    identified = sum(sample.exercise_identified for sample in result.samples)
    exercise_rows = [["(all)", len(result.samples), identified, round(result.exercise_accuracy, 4)]]
    exercise_rows += [
        [row_["exercise"] or "(none)", row_["samples"], row_["identified"], round(row_["accuracy"], 4)]
        for row_ in result.per_exercise
    ]
    _section(
        sheet,
        row,
        "Exercise identification",
        ["Exercise", "Samples", "Identified", "Accuracy"],
        exercise_rows,
    )

    sheet.column_dimensions["A"].width = 40
    for column in "BCDEF":
        sheet.column_dimensions[column].width = 14


def write_workbook(result: EvaluationResult, path: str | os.PathLike) -> Path:
    """Write the evaluation workbook (sheets "Test Evaluation Results" and "Summary")."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    workbook = Workbook()
    results_sheet = workbook.active
    results_sheet.title = RESULTS_SHEET
    _write_results(results_sheet, result)
    _write_summary(workbook.create_sheet(SUMMARY_SHEET), result)
    with atomic_path(path) as temporary:
        workbook.save(temporary)
    return path
