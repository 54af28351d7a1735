"""The Excel workbook, the HTML report and the PNG plots built from an evaluation."""

from __future__ import annotations

import re

import pytest
from openpyxl import load_workbook

from videogemma.evaluation.metrics import evaluate_records
from videogemma.evaluation.plots import make_evaluation_plots
from videogemma.evaluation.report_excel import write_workbook
from videogemma.evaluation.report_html import render_html
from videogemma.inference.records import PredictionRecord

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class FixedSimilarity:
    """A stand-in similarity model returning chosen scores, to land samples in chosen bands."""

    def __init__(self, scores):
        self.scores = scores

    def pairwise(self, predictions, references):
        return self.scores[: len(predictions)]


@pytest.fixture(scope="module")
def result():
    records = [
        PredictionRecord(
            id=1,
            video_path="squats/00000001.mp4",
            ground_truth="squats - knees caving in",
            prediction="squats - knees caving in",
            model="videogemma-tiny",
            dataset="qved-synthetic",
        ),
        PredictionRecord(
            id=2,
            video_path="mountain-climbers/00000002.mp4",
            ground_truth="mountain-climbers - hips too high",
            prediction="mountain-climbers - <script>alert('x')</script> & hips",
        ),
        PredictionRecord(
            id=3,
            video_path="pushups/00000003.mp4",
            ground_truth="pushups - elbows flared",
            prediction="",
            status="error",
            error="VideoDecodeError: cannot decode <video>",
        ),
    ]
    # Similarity of the two samples with text: green and yellow; the error scores 0 (red).
    return evaluate_records(records, similarity=FixedSimilarity([0.9, 0.5]), progress=False)


@pytest.fixture(scope="module")
def plots(result, tmp_path_factory):
    return make_evaluation_plots(result, tmp_path_factory.mktemp("plots"))


def _fill(cell) -> str:
    return cell.fill.fgColor.rgb[-6:]


def test_workbook_rows_header_and_band_fills(result, tmp_path):
    path = write_workbook(result, tmp_path / "evaluation.xlsx")
    workbook = load_workbook(path)
    assert workbook.sheetnames == ["Test Evaluation Results", "Summary"]
    sheet = workbook["Test Evaluation Results"]
    header = [cell.value for cell in sheet[1]]
    assert header[:4] == ["ID", "Video path", "Ground truth", "Prediction"]
    assert header[-3:] == ["Exercise identified", "Status", "Error"]
    assert {"ROUGE-1", "ROUGE-2", "ROUGE-L", "BLEU", "METEOR", "Sentence similarity"} <= set(header)
    assert sheet.max_row == 4  # header + three samples
    assert sheet.freeze_panes == "A2"
    assert sheet["A1"].font.bold and _fill(sheet["A1"]) == "1F4E78"

    column = {name: index + 1 for index, name in enumerate(header)}
    rows = {sheet.cell(row=r, column=1).value: r for r in range(2, 5)}
    assert sheet.cell(rows[2], column["Prediction"]).value.startswith("mountain-climbers - <script>")
    assert sheet.cell(rows[3], column["Status"]).value == "error"
    assert sheet.cell(rows[3], column["Error"]).value == "VideoDecodeError: cannot decode <video>"
    assert sheet.cell(rows[1], column["Exercise identified"]).value == "yes"
    assert sheet.cell(rows[3], column["Exercise identified"]).value == "no"

    similarity = column["Sentence similarity"]
    assert sheet.cell(rows[1], similarity).value == pytest.approx(0.9)
    assert _fill(sheet.cell(rows[1], similarity)) == "C6EFCE"
    assert _fill(sheet.cell(rows[2], similarity)) == "FFEB9C"
    assert _fill(sheet.cell(rows[3], similarity)) == "FFC7CE"
    assert _fill(sheet.cell(rows[1], column["ROUGE-L"])) == "C6EFCE"
    assert _fill(sheet.cell(rows[3], column["METEOR"])) == "FFC7CE"


def test_workbook_summary_has_counts_statistics_bands_exercises_and_charts(result, tmp_path):
    sheet = load_workbook(write_workbook(result, tmp_path / "evaluation.xlsx"))["Summary"]
    rows = [[cell.value for cell in row] for row in sheet.iter_rows()]
    by_first = {row[0]: row for row in rows if row and row[0] is not None}
    assert by_first["Model"][1] == "videogemma-tiny" and by_first["Dataset"][1] == "qved-synthetic"
    counts_header = rows.index(["Samples", "Success", "Error", "Empty prediction", None, None])
    assert rows[counts_header + 1][:4] == [3, 2, 1, 0]
    assert by_first["ROUGE-L"][1] == pytest.approx(result.aggregates["rougeL"]["mean"], abs=1e-4)
    assert by_first["Corpus BLEU"][1] == pytest.approx(result.corpus_bleu, abs=1e-4)
    assert by_first["Sentence similarity (≥0.7 / ≥0.4)"][1:4] == [1, 1, 1]
    assert by_first["(all)"][1:4] == [3, 2, pytest.approx(2 / 3, abs=1e-4)]
    assert by_first["mountain-climbers"][1:4] == [1, 1, 1.0]
    assert by_first["pushups"][1:4] == [1, 0, 0.0]
    assert len(sheet._charts) == 1  # the band chart


def test_html_has_rows_escaped_text_and_embedded_plots(result, plots):
    document = render_html(result, plots)
    assert "<script>" not in document
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; hips" in document
    assert "cannot decode &lt;video&gt;" in document
    assert document.count("<tr>") >= 3 + 1  # at least the per-sample rows and their header
    for video in ("squats/00000001.mp4", "mountain-climbers/00000002.mp4", "pushups/00000003.mp4"):
        assert f"<td>{video}</td>" in document
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', document)
    assert len(images) == len(plots) == 3
    assert 'class="num green"' in document and 'class="num red"' in document
    assert "http://" not in document and "https://" not in document  # self-contained


def test_evaluation_plots_are_pngs(plots):
    assert set(plots) == {"metric_distributions", "exercise_accuracy", "score_bands"}
    for path in plots.values():
        assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5000
