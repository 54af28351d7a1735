"""The coaching metrics of `eval`: answers read as a coach would, on hand-made records with known values."""

from __future__ import annotations

import pytest

from videogemma.errors import VideoGemmaError
from videogemma.evaluation.form_metrics import (
    GOOD_FORM,
    NO_ANSWER,
    OTHER,
    FormRules,
    confusion,
    form_metrics,
    read_answer,
)
from videogemma.evaluation.metrics import evaluate_records, sample_band
from videogemma.inference.records import PredictionRecord

GOOD_LUNGE = "alternating forward lunges - good form; keep it up"
SHALLOW_LUNGE = "alternating forward lunges - too shallow; lower the back knee towards the floor"
CAVING_SQUAT = "squats - knees caving in; push the knees out over the toes"
SHALLOW_SQUAT = "squats - not deep enough; lower the hips until the thighs are parallel to the floor"
GOOD_SQUAT = "squats - good form; keep it up"


@pytest.mark.parametrize(
    ("truth", "answer", "outcome"),
    [
        (CAVING_SQUAT, "Squats - knees caving in;  push the knees out over the toes.", "exact"),
        (GOOD_LUNGE, "jumping jacks - good form; keep it up", "wrong exercise"),
        (CAVING_SQUAT, GOOD_SQUAT, "fault missed"),
        (GOOD_SQUAT, CAVING_SQUAT, "fault on good form"),
        (SHALLOW_SQUAT, CAVING_SQUAT, "wrong fault"),
        (CAVING_SQUAT, "squats - knees caving in; keep the knees over the toes", "right, other wording"),
        (CAVING_SQUAT, "squats", "no verdict"),
        (CAVING_SQUAT, None, "no answer"),
        (CAVING_SQUAT, "   ", "no answer"),
    ],
)
def test_each_answer_gets_the_outcome_a_coach_would_give(truth, answer, outcome):
    assert read_answer(truth, answer).outcome == outcome


def test_the_parts_of_an_answer():
    read = read_answer(SHALLOW_SQUAT, GOOD_SQUAT)
    assert (read.exercise_truth, read.exercise_predicted) == ("squats", "squats")
    assert (read.verdict_truth, read.verdict_predicted) == ("fault", "good")
    assert (read.form_truth, read.form_predicted) == ("not deep enough", GOOD_FORM)
    assert read.faulty_told_good and not read.fault_named and not read.exact
    # Hyphenated names stay whole; the form is the first clause of the feedback.
    read = read_answer(
        "mountain-climbers - hips too high; keep the hips level", "mountain-climbers - hips too high"
    )
    assert read.exercise_identified and read.fault_named and not read.exact


def test_good_form_phrases_whole_words_not_negated_and_configurable():
    rules = FormRules()
    assert rules.is_good_form("Good form") and rules.is_good_form("the user shows correct form")
    assert not rules.is_good_form("not good form") and not rules.is_good_form("perfect formation")
    assert not rules.is_good_form("knees caving in")
    # A QVED-style label says it another way: the phrase set is the user's to give.
    qved = "tricep stretch (right arm) - User is holding the stretch"
    assert read_answer(qved, qved).verdict_truth == "fault"
    holding = FormRules(("holding the stretch",))
    assert read_answer(qved, qved, holding).verdict_truth == "good"
    with pytest.raises(VideoGemmaError, match="non-empty"):
        FormRules(("good form", "  "))


def test_aggregates_on_hand_made_answers():
    pairs = [
        (CAVING_SQUAT, CAVING_SQUAT),  # exact: fault detected and named
        (CAVING_SQUAT, GOOD_SQUAT),  # faulty clip told good form
        (SHALLOW_SQUAT, CAVING_SQUAT),  # fault detected, wrong one named
        (GOOD_SQUAT, CAVING_SQUAT),  # a fault said on good form (false positive)
        (GOOD_SQUAT, GOOD_SQUAT),  # exact
        (GOOD_LUNGE, "jumping jacks - good form; keep it up"),  # wrong exercise, right verdict
        (SHALLOW_LUNGE, None),  # no answer: a missed fault, but not "told good form"
    ]
    metrics = form_metrics([read_answer(truth, answer) for truth, answer in pairs])
    assert metrics.samples == 7
    assert metrics.exercise_identified == 5 and metrics.exact == 2
    assert metrics.verdict_correct == 4  # rows 1, 3, 5, 6
    assert (metrics.faulty, metrics.fault_said, metrics.fault_detected) == (4, 3, 2)
    assert metrics.fault_precision == pytest.approx(2 / 3)
    assert metrics.fault_recall == pytest.approx(2 / 4)
    assert metrics.fault_f1 == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert metrics.fault_named == 1 and metrics.fault_named_rate == pytest.approx(0.25)
    assert metrics.faulty_told_good == 1
    assert metrics.outcomes == {
        "no answer": 1,
        "wrong exercise": 1,
        "fault missed": 1,
        "fault on good form": 1,
        "wrong fault": 1,
        "exact": 2,
    }
    exercises = metrics.exercise_confusion
    assert exercises.labels == ["alternating forward lunges", "squats"]
    assert exercises.predicted == ["alternating forward lunges", "squats", OTHER, NO_ANSWER]
    assert exercises.counts == [[0, 0, 1, 1], [0, 5, 0, 0]]
    assert exercises.top_confusions() == [
        ("alternating forward lunges", NO_ANSWER, 1, 2),
        ("alternating forward lunges", OTHER, 1, 2),
    ]
    forms = metrics.form_confusion
    assert forms.labels == [GOOD_FORM, "knees caving in", "not deep enough", "too shallow"]
    row = dict(zip(forms.predicted, forms.counts[forms.labels.index("knees caving in")]))
    assert row[GOOD_FORM] == 1 and row["knees caving in"] == 1


def test_confusion_gives_frequent_outside_answers_a_column_and_caps_the_classes():
    truths = ["a", "a", "b", "c"]
    answers = ["x", "x", "y", None]
    matrix = confusion(truths, answers, max_classes=2)
    assert matrix.labels == ["a", "b", OTHER]  # "c" is beyond the two most frequent classes
    assert matrix.predicted == ["a", "b", "x", OTHER, NO_ANSWER]  # "x" twice gets a column, "y" once does not
    assert matrix.counts == [[0, 0, 2, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1]]


def test_bands_never_colour_a_wrong_exercise_green():
    records = [
        # The case: ROUGE-L 0.667 by text, but the wrong exercise.
        PredictionRecord(id=1, ground_truth=GOOD_LUNGE, prediction="jumping jacks - good form; keep it up"),
        # Right exercise, but a faulty clip told good form: text overlap high, at most yellow.
        PredictionRecord(id=2, ground_truth="squats - knees caving in; keep it up", prediction=GOOD_SQUAT),
        PredictionRecord(id=3, ground_truth=GOOD_SQUAT, prediction=GOOD_SQUAT),
    ]
    result = evaluate_records(records, progress=False)
    wrong, missed, exact = result.samples
    assert wrong.scores["rougeL"] == pytest.approx(0.6667, abs=1e-3)
    assert {sample_band(wrong, name) for name in ("rougeL", "meteor")} == {"red"}
    assert missed.scores["rougeL"] >= 0.5 and sample_band(missed, "rougeL") == "yellow"
    assert sample_band(exact, "rougeL") == "green"
    assert result.band_counts["rougeL"] == {"green": 1, "yellow": 1, "red": 1}
    assert result.form.faulty_told_good == 1
    saved = result.to_json()
    assert saved["form_feedback"]["faulty_told_good_form"] == 1
    assert saved["form_feedback"]["exact_label"]["count"] == 1
    rows = {row["exercise"]: row for row in result.per_exercise}
    assert rows["squats"]["faulty_told_good"] == 1 and rows["squats"]["exact"] == 1
