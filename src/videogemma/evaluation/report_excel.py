"""The Excel workbook earlier QVED users expect: a summary (opened first: the headline with the coaching
metrics, the run, confusion matrices, statistics, bands with a chart, per exercise) and the per-sample results.

Both sheets print landscape, one page wide, the results with their header row on every page.

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

from videogemma.evaluation.form_metrics import Confusion
from videogemma.evaluation.headline import headline_rows, report_title, subtitle
from videogemma.evaluation.metrics import BAND_NAMES, BANDS, METRIC_LABELS, EvaluationResult, sample_band
from videogemma.evaluation.run_info import run_rows
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
TITLE_FONT = Font(bold=True, size=16)
_THIN = Side(style="thin", color="BFBFBF")
CELL_BORDER = Border(left=_THIN, right=_THIN, top=_THIN, bottom=_THIN)

# The results sheet's wrapped text columns (characters) and the height of one line of text (points).
TEXT_WIDTH = 44
ERROR_WIDTH = 24
LINE_HEIGHT = 13
TOP = Alignment(vertical="top")
TOP_WRAPPED = Alignment(wrap_text=True, vertical="top")
# Excel refuses cells longer than this.
_EXCEL_CELL_LIMIT = 32767


def _text(value: object) -> object:
    """A cell value Excel accepts: no control characters, at most the cell length limit."""
    if not isinstance(value, str):
        return value
    value = ILLEGAL_CHARACTERS_RE.sub("", value)
    return value if len(value) <= _EXCEL_CELL_LIMIT else value[: _EXCEL_CELL_LIMIT - 1] + "…"


def _wrapped_lines(text: str | None, width: int) -> int:
    """Lines `text` takes wrapped at a column `width` characters wide (a proportional font fits about a quarter
    more characters than the width counts, measured on LibreOffice's rendering)."""
    if not text:
        return 1
    usable = max(1, int(width * 1.2))
    return sum(max(1, -(-len(line) // usable)) for line in text.splitlines() or [""])


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
    headers += ["Exercise identified", "Outcome", "Verdict", "Status", "Error"]
    sheet.append(headers)
    _style_header(sheet, 1, len(headers))
    first_metric_column = 5
    # Rows are counted here: `sheet.max_row` scans every cell, once per row that made the writer quadratic.
    for row_index, sample in enumerate(result.samples, start=2):
        record = sample.record
        status = "empty" if sample.outcome == "empty" else record.status
        row = [record.id, record.video_path, record.ground_truth, record.prediction]
        row += [round(sample.scores[name], 4) for name in result.metrics]
        form = sample.form
        verdict = f"{form.verdict_truth} → {form.verdict_predicted or 'none'}"
        row += ["yes" if sample.exercise_identified else "no", form.outcome, verdict, status, record.error]
        for column, value in enumerate(row, start=1):
            if value is not None:
                _set(sheet.cell(row=row_index, column=column), value)
        for offset, name in enumerate(result.metrics):
            band_name = sample_band(sample, name)
            if band_name:
                sheet.cell(row=row_index, column=first_metric_column + offset).fill = BAND_FILLS[band_name]
        exercise_cell = sheet.cell(row=row_index, column=first_metric_column + len(result.metrics))
        exercise_cell.fill = BAND_FILLS["green" if sample.exercise_identified else "red"]
        verdict_cell = sheet.cell(row=row_index, column=first_metric_column + len(result.metrics) + 2)
        verdict_cell.fill = BAND_FILLS["green" if form.verdict_correct else "red"]
        wrapped = (3, 4, len(headers))
        for column in range(1, len(headers) + 1):
            sheet.cell(row=row_index, column=column).alignment = TOP_WRAPPED if column in wrapped else TOP
        # Spreadsheet programs do not grow a row for wrapped text they did not lay out themselves; without a
        # height the wrapped lines print over the next row.
        lines = max(_wrapped_lines(record.ground_truth, TEXT_WIDTH), _wrapped_lines(record.prediction, TEXT_WIDTH),
                    _wrapped_lines(record.error, ERROR_WIDTH))  # fmt: skip
        sheet.row_dimensions[row_index].height = LINE_HEIGHT * lines + 3
    sheet.freeze_panes = "A2"
    sheet.auto_filter.ref = f"A1:{get_column_letter(len(headers))}{len(result.samples) + 1}"
    widths = {"ID": 6, "Video path": 26, "Ground truth": TEXT_WIDTH, "Prediction": TEXT_WIDTH, "Error": ERROR_WIDTH,
              "Outcome": 16, "Verdict": 13}  # fmt: skip
    sheet.row_dimensions[1].height = 2 * LINE_HEIGHT + 4
    for column, header in enumerate(headers, start=1):
        sheet.column_dimensions[get_column_letter(column)].width = widths.get(header, 10)
    _print_settings(sheet)
    sheet.print_title_rows = "1:1"  # the header on every printed page


def _print_settings(sheet) -> None:
    """Landscape, one page wide (as many tall as it takes), small margins."""
    sheet.page_setup.orientation = "landscape"
    sheet.page_setup.paperSize = sheet.PAPERSIZE_A4
    sheet.page_setup.fitToWidth = 1
    sheet.page_setup.fitToHeight = 0
    sheet.sheet_properties.pageSetUpPr.fitToPage = True
    sheet.page_margins.left = sheet.page_margins.right = 0.4
    sheet.page_margins.top = sheet.page_margins.bottom = 0.5
    sheet.print_options.gridLines = False


def _confusion_rows(confusion: Confusion) -> tuple[list[str], list[list[object]]]:
    headers = ["ground truth \\ answer", *confusion.predicted]
    return headers, [[label, *row] for label, row in zip(confusion.labels, confusion.counts)]


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
    sheet.cell(row=1, column=1, value=report_title(result)).font = TITLE_FONT
    _set(sheet.cell(row=2, column=1), subtitle(result))
    headline = [[row.label, row.value, row.detail] for row in headline_rows(result.to_json(), confusions=3)]
    row = _section(sheet, 4, "Headline", ["Metric", "Value", "Detail"], headline)
    row = _section(sheet, row, "Run", ["Item", "Value"], run_rows(result))
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
    row = _bands(sheet, row, result)
    for title, confusion in (
        ("Exercise confusion (ground truth by answer)", result.form.exercise_confusion),
        ("Form confusion: good form or the fault (ground truth by answer)", result.form.form_confusion),
    ):
        row = _section(sheet, row, title, *_confusion_rows(confusion))
    row = _section(sheet, row, "Exercise identification", *_exercise_rows(result))
    _section(sheet, row, "How the metrics were computed", ["Metric", "Definition"],
             [[key, text] for key, text in result.variants.items()])  # fmt: skip

    sheet.column_dimensions["A"].width = 40
    for column in "BCDEFGH":
        sheet.column_dimensions[column].width = 14
    _print_settings(sheet)


def _bands(sheet, row: int, result: EvaluationResult) -> int:
    """The band counts with their bar chart below them; returns the first free row after the chart."""
    band_start = row
    band_rows = [
        [
            f"{METRIC_LABELS[name]} (≥{BANDS[name][0]:g} / ≥{BANDS[name][1]:g})",
            *(counts_[b] for b in BAND_NAMES),
        ]
        for name, counts_ in result.band_counts.items()
    ]
    row = _section(sheet, row, "Score bands (never green for a wrong exercise)", ["Metric", "Green", "Yellow", "Red"],
                   band_rows)  # fmt: skip
    for offset, band_name in enumerate(BAND_NAMES):
        sheet.cell(row=band_start + 1, column=2 + offset).fill = BAND_FILLS[band_name]
        sheet.cell(row=band_start + 1, column=2 + offset).font = Font(bold=True)
    if not band_rows:
        return row
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
    chart.width, chart.height = 16, 7
    # Below the table, not beside it: the sheet stays one narrow page wide when printed.
    sheet.add_chart(chart, f"A{row - 1}")
    return row + 15


def _exercise_rows(result: EvaluationResult) -> tuple[list[str], list[list[object]]]:
    form = result.form
    headers = ["Exercise", "Samples", "Identified", "Accuracy", "Exact label", "Verdict right", "With a fault",
               "Faulty told good form"]  # fmt: skip
    rows: list[list[object]] = [
        ["(all)", form.samples, form.exercise_identified, round(form.exercise_accuracy, 4), form.exact,
         form.verdict_correct, form.faulty, form.faulty_told_good]
    ]  # fmt: skip
    rows += [
        [row["exercise"] or "(none)", row["samples"], row["identified"], round(row["accuracy"], 4), row["exact"],
         row["verdict_correct"], row["faulty"], row["faulty_told_good"]]
        for row in result.per_exercise
    ]  # fmt: skip
    return headers, rows


def write_workbook(result: EvaluationResult, path: str | os.PathLike) -> Path:
    """Write the evaluation workbook: sheet "Summary" (first, the one it opens on), then "Test Evaluation
    Results"."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    workbook = Workbook()
    summary_sheet = workbook.active
    summary_sheet.title = SUMMARY_SHEET
    _write_summary(summary_sheet, result)
    _write_results(workbook.create_sheet(RESULTS_SHEET), result)
    workbook.active = 0
    with atomic_path(path) as temporary:
        workbook.save(temporary)
    return path
