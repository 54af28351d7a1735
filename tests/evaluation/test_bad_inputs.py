"""Bad input in `eval` and the exports: damaged lines anywhere cost only themselves, text that a spreadsheet
would run as a formula stays text, no report overwrites its input, and the workbook writer stays linear."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from openpyxl import load_workbook
from openpyxl.worksheet.worksheet import Worksheet

from videogemma import cli
from videogemma.evaluation.metrics import evaluate_records
from videogemma.evaluation.report_excel import RESULTS_SHEET, write_workbook
from videogemma.inference.records import PredictionRecord, export_csv, read_prediction_file

FORMULAS = ['=HYPERLINK("http://example.com","click")', "+1+2", "-3+4", "@SUM(A1:A2)"]


@pytest.fixture
def run_cli(monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("videogemma.evaluation.commands",))
    return cli.main


def _record(index: int, **changes) -> dict:
    record = {
        "id": index,
        "video_path": f"squats/{index:08d}.mp4",
        "prompt": "Form?",
        "ground_truth": "squats - knees caving in",
        "prediction": "squats - knees caving in" if index % 2 else "squats - good form",
        "status": "success",
    }
    record.update(changes)
    return record


def test_damaged_lines_anywhere_are_skipped_and_named(run_cli, tmp_path, capsys):
    path = tmp_path / "preds.jsonl"
    lines = [json.dumps(_record(k)) for k in range(6)]
    lines[1] = lines[1][:25]  # cut by a concurrent writer
    lines[3] = '{"id": 3, "prediction": 7}'  # JSON, but not a record
    path.write_text("\n".join(lines) + "\n")
    assert run_cli(["eval", str(path), "--out", str(tmp_path / "report"), "--similarity-model", "none"]) == 0
    error = capsys.readouterr().err
    assert f"videogemma eval: warning: {path}: skipped 2 unreadable lines" in error
    assert "line 2: invalid JSON" in error and "line 4 (id 3): 'prediction' must be a string" in error
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["counts"]["total"] == 4 and metrics["identifiers"]["skipped_lines"] == [2, 4]


def test_a_file_with_no_readable_record_is_an_error_naming_its_lines(run_cli, tmp_path, capsys):
    path = tmp_path / "preds.jsonl"
    path.write_text("{oops\n[1, 2]\n")
    assert run_cli(["eval", str(path), "--out", str(tmp_path / "report"), "--similarity-model", "none"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"videogemma eval: error: {path}: skipped 2 unreadable lines")
    assert "line 1: invalid JSON" in error and "line 2: expected a JSON object" in error
    assert not (tmp_path / "report").exists()


def test_a_report_never_overwrites_its_predictions(run_cli, tmp_path, capsys):
    report = tmp_path / "report"
    report.mkdir()
    predictions = report / "metrics.json"  # a JSON list export, named like the report's metrics file
    predictions.write_text(json.dumps([_record(0), _record(1)]))
    before = predictions.read_bytes()
    assert run_cli(["eval", str(predictions), "--out", str(report), "--similarity-model", "none"]) == 2
    assert "metrics.json would overwrite the predictions" in capsys.readouterr().err
    assert predictions.read_bytes() == before


def test_formulas_are_text_in_the_workbook_and_escaped_in_the_csv(tmp_path):
    records = [PredictionRecord.from_dict(_record(k, prediction=text)) for k, text in enumerate(FORMULAS)]
    records.append(PredictionRecord.from_dict(_record(9, ground_truth="=1+1", error="@oops", status="error")))
    result = evaluate_records(records, progress=False)
    workbook = write_workbook(result, tmp_path / "evaluation.xlsx")
    sheet = load_workbook(workbook)[RESULTS_SHEET]
    header = [cell.value for cell in sheet[1]]
    cells = {(row[0].value, header[k]): row[k] for row in sheet.iter_rows(min_row=2) for k in range(len(row))}
    for index, text in enumerate(FORMULAS):
        cell = cells[index, "Prediction"]
        assert cell.data_type == "s" and cell.value == text  # shown as the text it is, never run
    assert cells[9, "Ground truth"].value == "=1+1" and cells[9, "Ground truth"].data_type == "s"
    assert cells[9, "Error"].value == "@oops" and cells[9, "Error"].data_type == "s"

    with open(export_csv(records, tmp_path / "preds.csv"), newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert [row["prediction"] for row in rows[:4]] == ["'" + text for text in FORMULAS]
    assert rows[4]["ground_truth"] == "'=1+1" and rows[4]["error"] == "'@oops"
    assert rows[0]["ground_truth"] == "squats - knees caving in"  # other text as it is


def test_unlabelled_csv_escapes_formulas_too(tmp_path):
    records = [PredictionRecord(id=0, video_path="a/=cmd.mp4", prediction="=1+1")]
    text = export_csv(records, tmp_path / "preds.csv").read_text()
    assert text.splitlines()[1] == "'=cmd.mp4,'=1+1"


def test_the_workbook_writer_does_not_rescan_the_sheet_per_row(tmp_path, monkeypatch):
    """`Worksheet.max_row` scans every cell; read once per row it made eval quadratic in the records."""
    reads = []
    original = Worksheet.max_row

    def counted(sheet):
        reads.append(1)
        return original.fget(sheet)

    monkeypatch.setattr(Worksheet, "max_row", property(counted))
    for count in (10, 200):
        reads.clear()
        records = [PredictionRecord.from_dict(_record(k)) for k in range(count)]
        write_workbook(evaluate_records(records, progress=False), tmp_path / f"e{count}.xlsx")
        assert len(reads) <= 5, f"{len(reads)} reads of max_row for {count} records"


def test_a_prediction_file_read_twice_gives_the_same_records(tmp_path):
    path = tmp_path / "preds.jsonl"
    path.write_text("".join(json.dumps(_record(k)) + "\n" for k in range(3)) + '{"id": 3, "pred')
    first, second = read_prediction_file(path), read_prediction_file(path)
    assert [r.id for _, r in first.entries] == [r.id for _, r in second.entries] == [0, 1, 2]
    assert first.torn_tail is not None and first.torn_tail.number == 4
    assert Path(path).read_text().endswith('"pred')  # reading never changes the file
