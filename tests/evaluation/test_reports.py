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
    assert workbook.sheetnames == ["Summary", "Test Evaluation Results"]
    sheet = workbook["Test Evaluation Results"]
    header = [cell.value for cell in sheet[1]]
    assert header[:4] == ["ID", "Video path", "Ground truth", "Prediction"]
    assert header[-5:] == ["Exercise identified", "Outcome", "Verdict", "Status", "Error"]
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
    assert sheet.cell(rows[1], column["Outcome"]).value == "exact"
    assert sheet.cell(rows[3], column["Outcome"]).value == "no answer"
    assert sheet.cell(rows[2], column["Verdict"]).value == "fault → fault"

    similarity = column["Sentence similarity"]
    assert sheet.cell(rows[1], similarity).value == pytest.approx(0.9)
    assert _fill(sheet.cell(rows[1], similarity)) == "C6EFCE"
    assert _fill(sheet.cell(rows[2], similarity)) == "FFEB9C"  # right exercise and verdict: by score
    assert _fill(sheet.cell(rows[3], similarity)) == "FFC7CE"
    assert _fill(sheet.cell(rows[1], column["ROUGE-L"])) == "C6EFCE"
    assert _fill(sheet.cell(rows[3], column["METEOR"])) == "FFC7CE"


def test_workbook_opens_on_its_summary_and_prints_on_few_pages(result, tmp_path):
    workbook = load_workbook(write_workbook(result, tmp_path / "evaluation.xlsx"))
    assert workbook.active.title == "Summary" and workbook.worksheets[0].title == "Summary"
    for sheet in workbook.worksheets:
        setup = sheet.page_setup
        assert setup.orientation == "landscape"
        assert sheet.sheet_properties.pageSetUpPr.fitToPage
        assert (setup.fitToWidth, setup.fitToHeight) == (1, 0)  # one page wide, as many tall as needed
    results = workbook["Test Evaluation Results"]
    assert results.print_title_rows.replace("$", "") == "1:1"  # the header on every page
    assert results.row_dimensions[2].height > 0  # wrapped text gets its height (it prints over the next row)


def test_workbook_summary_has_counts_statistics_bands_exercises_and_charts(result, tmp_path):
    sheet = load_workbook(write_workbook(result, tmp_path / "evaluation.xlsx"))["Summary"]
    rows = [[cell.value for cell in row] for row in sheet.iter_rows()]
    by_first = {row[0]: row for row in rows if row and row[0] is not None}
    assert rows[0][0].startswith("Form-feedback evaluation: videogemma-tiny on qved-synthetic")
    # The headline leads, coaching metrics first.
    firsts = [tuple(row[:3]) for row in rows]
    assert firsts.index(("Metric", "Value", "Detail")) < firsts.index(("Item", "Value", None))
    assert by_first["exercise identified"][1:3] == ["66.7%", "2 of 3"]
    assert by_first["exact label"][1] == "33.3%"
    assert by_first["Model"][1] == "videogemma-tiny" and by_first["Dataset"][1] == "qved-synthetic"
    counts_header = [row[:4] for row in rows].index(["Samples", "Success", "Error", "Empty prediction"])
    assert rows[counts_header + 1][:4] == [3, 2, 1, 0]
    assert by_first["ROUGE-L"][1] == pytest.approx(result.aggregates["rougeL"]["mean"], abs=1e-4)
    assert by_first["Corpus BLEU"][1] == pytest.approx(result.corpus_bleu, abs=1e-4)
    assert by_first["Sentence similarity (≥0.7 / ≥0.4)"][1:4] == [1, 1, 1]
    assert by_first["(all)"][1:8] == [3, 2, pytest.approx(2 / 3, abs=1e-4), 1, 2, 3, 0]
    assert by_first["mountain-climbers"][1:4] == [1, 1, 1.0]
    assert by_first["pushups"][1:4] == [1, 0, 0.0]
    assert len(sheet._charts) == 1  # the band chart


def test_html_has_rows_escaped_text_and_embedded_plots(result, plots):
    document = render_html(result, plots)
    assert document.count("<script>") == 1  # the report's own table script; the prediction's is escaped
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; hips" in document
    assert "cannot decode &lt;video&gt;" in document
    assert document.count("<tr>") >= 3 + 1  # at least the per-sample rows and their header
    for video in ("squats/00000001.mp4", "mountain-climbers/00000002.mp4", "pushups/00000003.mp4"):
        assert f"<div>{video}</div>" in document
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', document)
    assert len(images) == len(plots) == 5
    assert 'class="num green"' in document and 'class="num red"' in document
    assert "http://" not in document and "https://" not in document  # self-contained
    # The title and the headline lead, coaching metrics first.
    assert "<title>Form-feedback evaluation: videogemma-tiny on qved-synthetic</title>" in document
    assert document.index('id="headline"') < document.index("<h2>Run</h2>")
    assert document.index(">exercise identified<") < document.index(">ROUGE-L<")


def test_evaluation_plots_are_pngs(plots):
    assert set(plots) == {
        "metric_distributions",
        "exercise_accuracy",
        "score_bands",
        "exercise_confusion",
        "form_confusion",
    }
    for path in plots.values():
        assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5000


@pytest.fixture
def evaluated_run(tmp_path, write_clip, level_frames):
    """`eval` of a run laid out as infer-batch leaves it: videos, a run folder, predictions and their
    `_throughput.json` (decoding settings, video folder), all under tmp_path (machine paths)."""
    import json

    from videogemma.evaluation.commands import evaluate_file

    data = tmp_path / "data"
    answers = [
        (
            "squats/00000001.mp4",
            "squats - knees caving in; push the knees out",
            "squats - good form; keep it up",
        ),
        ("squats/00000002.mp4", "squats - good form; keep it up", "squats - good form; keep it up"),
        ("pushups/00000003.mp4", "pushups - hips sagging; brace", "squats - hips sagging; brace"),
        ("pushups/00000004.mp4", "pushups - good form; keep it up", "pushups - hips sagging; brace"),
    ]
    for video, _, _ in answers:
        (data / video).parent.mkdir(parents=True, exist_ok=True)
        write_clip(data / video, level_frames(8))
    run = tmp_path / "run"
    run.mkdir()
    (run / "train_config.yaml").write_text("stage: full\nmodel:\n  preset: tiny\nlearning_rate: 0.001\n")
    predictions = tmp_path / "predictions" / "predictions.jsonl"
    predictions.parent.mkdir()
    records = [
        {"id": i, "video_path": video, "ground_truth": truth, "prediction": said, "model": str(run),
         "dataset": str(data / "qved_test.json")}
        for i, (video, truth, said) in enumerate(answers)
    ]  # fmt: skip
    predictions.write_text("".join(json.dumps(record) + "\n" for record in records))
    sidecar = {"generation": {"max_new_tokens": 32, "do_sample": False}, "video_root": str(data),
               "finished_at": "2026-01-02 03:04 UTC", "batch_size": 2}  # fmt: skip
    (predictions.parent / "predictions_throughput.json").write_text(json.dumps(sidecar))
    out = tmp_path / "report"
    evaluate_file(predictions, out, similarity_model="none")
    return out


def test_report_names_the_run_without_machine_paths_and_shows_frames(evaluated_run, tmp_path):
    document = (evaluated_run / "report.html").read_text()
    assert str(tmp_path) not in document and str(tmp_path.resolve()) not in document
    assert not re.search(r"(?<![\w.])/(tmp|home|work|usr|root)/", document)  # no absolute path at all
    assert "<td>run</td>" in document  # the checkpoint by its name
    assert "run/train_config.yaml (preset tiny, stage full, learning_rate 0.001)" in document
    assert "greedy, at most 32 new tokens" in document and "2026-01-02 03:04 UTC" in document
    assert document.count('src="data:image/jpeg;base64,') == 4  # a strip of frames per clip
    assert len(document) < 200_000


def test_report_table_sorts_and_filters_in_a_browser(evaluated_run, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get((evaluated_run / "report.html").as_uri())

    def column(name: str) -> list[str]:
        headers = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#samples thead th")]
        index = headers.index(name) + 1
        cells = browser.find_elements(
            By.CSS_SELECTOR, f"#samples tbody tr:not([hidden]) td:nth-child({index})"
        )
        return [cell.text for cell in cells]

    # Worst first: the wrong exercise, the missed fault, the false fault, then the exact answer.
    assert column("Outcome") == ["wrong exercise", "fault missed", "fault on good form", "exact"]
    header = {cell.text: cell for cell in browser.find_elements(By.CSS_SELECTOR, "#samples thead th")}
    header["ID"].click()
    assert column("ID") == ["0", "1", "2", "3"]
    header["ID"].click()
    assert column("ID") == ["3", "2", "1", "0"]
    browser.find_element(By.ID, "sample-filter").send_keys("pushups")
    assert column("ID") == ["3", "2"]
    assert browser.find_element(By.ID, "sample-count").text == "2 of 4 clips shown"
    browser.find_element(By.ID, "sample-filter").clear()
    browser.execute_script("document.getElementById('sample-filter').dispatchEvent(new Event('input'))")
    Select(browser.find_element(By.ID, "outcome-filter")).select_by_value("fault missed")
    assert column("ID") == ["0"]
    strips = browser.find_elements(By.CSS_SELECTOR, "#samples img.strip")
    assert strips and all(browser.execute_script("return arguments[0].naturalWidth", s) > 0 for s in strips)
