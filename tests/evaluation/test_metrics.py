"""Metric values on hand-checked examples, exercise identification, and how failures are scored."""

from __future__ import annotations

import math

import pytest

from videogemma.evaluation.metrics import (
    Meteor,
    band,
    corpus_bleu,
    evaluate_records,
    exercise_name,
    sentence_bleu,
)
from videogemma.inference.records import PredictionRecord, PredictionRecordError


def _bleu_by_hand(precisions: list[float]) -> float:
    # Brevity penalty 1 (equal lengths): the geometric mean of the four n-gram precisions.
    return math.exp(sum(math.log(p) for p in precisions) / 4)


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("squats - knees caving in", "squats"),
        ("Mountain-Climbers - hips too high - slow down", "mountain-climbers"),
        ("  Cat-Cow Pose  - good form", "cat-cow pose"),
        ("tricep stretch (right arm) - User is holding the stretch", "tricep stretch (right arm)"),
        ("pushups", "pushups"),
        ("", ""),
        (None, ""),
    ],
)
def test_exercise_name_splits_on_spaced_hyphen_only(text, name):
    assert exercise_name(text) == name


def test_scores_of_a_close_paraphrase_match_hand_computation():
    records = [
        PredictionRecord(
            id=1,
            ground_truth="mountain-climbers - hips too high",
            prediction="mountain-climbers - hips are high",
        )
    ]
    (sample,) = evaluate_records(records, progress=False).samples
    # ROUGE tokens: mountain climbers hips too|are high -> 4 of 5 unigrams, 2 of 4 bigrams shared.
    assert sample.scores["rouge1"] == pytest.approx(0.8)
    assert sample.scores["rouge2"] == pytest.approx(0.5)
    assert sample.scores["rougeL"] == pytest.approx(0.8)
    # BLEU tokens: [mountain-climbers, -, hips, are|too, high]: 4/5, 2/4, 1/3 and 0/2 (smoothed to 0.1/2).
    assert sample.scores["bleu"] == pytest.approx(_bleu_by_hand([4 / 5, 2 / 4, 1 / 3, 0.1 / 2]))
    # METEOR: P = R = 0.8, two chunks over four matches: 0.8 * (1 - 0.5 * 0.5**3).
    assert sample.scores["meteor"] == pytest.approx(0.75)
    assert sample.exercise_identified


def test_rouge_uses_stemming_and_bleu_uses_raw_lowercase_tokens():
    records = [
        PredictionRecord(
            id=1, ground_truth="Squats - knees caving in", prediction="squats - knee caved inward"
        )
    ]
    (sample,) = evaluate_records(records, progress=False).samples
    # Stemmed: squat knee cave in | squat knee cave inward -> 3/4 unigrams, 2/3 bigrams, LCS 3.
    assert sample.scores["rouge1"] == pytest.approx(0.75)
    assert sample.scores["rouge2"] == pytest.approx(2 / 3)
    assert sample.scores["rougeL"] == pytest.approx(0.75)
    # Unstemmed BLEU tokens share only "squats" and "-": 2/5, 1/4, 0/3 -> 0.1/3, 0/2 -> 0.1/2.
    assert sentence_bleu("squats - knee caved inward", "Squats - knees caving in") == pytest.approx(
        _bleu_by_hand([2 / 5, 1 / 4, 0.1 / 3, 0.1 / 2])
    )


def test_exact_match_scores_one_except_meteor_fragmentation_penalty():
    records = [
        PredictionRecord(id=1, ground_truth="squats - knees caving in", prediction="Squats - knees caving in")
    ]
    (sample,) = evaluate_records(records, progress=False).samples
    assert sample.scores["rouge1"] == sample.scores["rougeL"] == sample.scores["bleu"] == pytest.approx(1.0)
    # One chunk over five matches: 1 - 0.5 * (1/5)**3.
    assert sample.scores["meteor"] == pytest.approx(0.996)


def test_meteor_without_wordnet_matches_exact_words_and_stems_only():
    meteor = Meteor(use_wordnet=False)
    assert "exact and Porter-stem matching only" in meteor.variant
    # All four tokens match (two by stem: knee/knees, caved/caving) in one chunk: 1 - 0.5 * (1/4)**3.
    assert meteor("squats - knee caved", "squats - knees caving") == pytest.approx(1 - 0.5 / 64)
    # Synonyms do not match without WordNet: only "squats" and "-" of four tokens.
    # P = R = 0.5, one chunk of two matches: 0.5 * (1 - 0.5 * (1/2)**3).
    assert meteor("squats - fast tempo", "squats - quick pace") == pytest.approx(0.5 * (1 - 0.5 / 8))


def test_empty_and_error_records_score_zero_and_are_counted():
    records = [
        PredictionRecord(
            id=1, ground_truth="squats - knees caving in", prediction="squats - knees caving in"
        ),
        PredictionRecord(id=2, ground_truth="pushups - elbows flared", prediction="   "),
        PredictionRecord(
            id=3, ground_truth="cat-cow pose - good", prediction="", status="error", error="boom"
        ),
        # An error record keeps whatever partial text it has, and still scores 0.
        PredictionRecord(
            id=4, ground_truth="squats - ok", prediction="squats - ok", status="error", error="late"
        ),
    ]
    result = evaluate_records(records, progress=False)
    assert result.counts == {"total": 4, "success": 1, "error": 2, "empty": 1}
    for sample in result.samples[1:]:
        assert set(sample.scores.values()) == {0.0}
        assert not sample.exercise_identified
    assert result.aggregates["rouge1"]["mean"] == pytest.approx(0.25)
    assert result.aggregates["rouge1"]["median"] == pytest.approx(0.0)
    assert result.aggregates["rouge1"]["std"] == pytest.approx(math.sqrt(0.1875))  # population std of 1,0,0,0
    assert (result.aggregates["rouge1"]["min"], result.aggregates["rouge1"]["max"]) == (0.0, 1.0)
    assert result.exercise_accuracy == pytest.approx(0.25)
    assert result.band_counts["rougeL"] == {"green": 1, "yellow": 0, "red": 3}


def test_per_exercise_table_groups_by_ground_truth_exercise():
    records = [
        PredictionRecord(
            id=1, ground_truth="mountain-climbers - hips high", prediction="mountain-climbers - ok"
        ),
        PredictionRecord(id=2, ground_truth="Mountain-Climbers - slow", prediction="squats - slow"),
        PredictionRecord(id=3, ground_truth="cat-cow pose - good", prediction="cat-cow pose - good"),
        PredictionRecord(id=4, ground_truth="cat-cow pose - good", prediction="", status="error", error="x"),
    ]
    result = evaluate_records(records, progress=False)
    table = {row["exercise"]: row for row in result.per_exercise}
    assert list(table) == ["cat-cow pose", "mountain-climbers"]
    assert (table["mountain-climbers"]["samples"], table["mountain-climbers"]["identified"]) == (2, 1)
    assert table["cat-cow pose"]["accuracy"] == pytest.approx(0.5)
    assert table["cat-cow pose"]["errors"] == 1
    assert result.exercise_accuracy == pytest.approx(0.5)


def test_corpus_bleu_counts_failed_samples_against_the_corpus():
    five_tokens = ["squats - knees caving in", "pushups - hips sagging down"]
    # Two exact matches and one missing prediction: c = 10, r = 15, so BP = exp(1 - 15/10). NLTK counts
    # an empty hypothesis as one n-gram of each order in the precision denominators: 10/11, 8/9, 6/7, 4/5.
    value = corpus_bleu([*five_tokens, ""], [*five_tokens, "lunges - knee past toes"])
    assert value == pytest.approx(math.exp(-0.5) * _bleu_by_hand([10 / 11, 8 / 9, 6 / 7, 4 / 5]))
    assert corpus_bleu(five_tokens, five_tokens) == pytest.approx(1.0)
    assert corpus_bleu(["", ""], five_tokens) == 0.0


@pytest.mark.parametrize(
    ("metric", "value", "expected"),
    [
        ("similarity", 0.7, "green"),
        ("similarity", 0.69, "yellow"),
        ("similarity", 0.4, "yellow"),
        ("similarity", 0.39, "red"),
        ("meteor", 0.5, "green"),
        ("rougeL", 0.2, "yellow"),
        ("rougeL", 0.19, "red"),
        ("bleu", 0.9, None),
    ],
)
def test_bands(metric, value, expected):
    assert band(metric, value) == expected


def test_model_based_scores_run_only_on_samples_with_text():
    class FixedScorer:
        def __init__(self):
            self.calls = []

        def pairwise(self, predictions, references):
            self.calls.append((predictions, references))
            return [0.55] * len(predictions)

    scorer = FixedScorer()
    records = [
        PredictionRecord(id=1, ground_truth="squats - a", prediction="squats - b"),
        PredictionRecord(id=2, ground_truth="squats - a", prediction="", status="error", error="x"),
    ]
    result = evaluate_records(records, similarity=scorer, progress=False)
    assert scorer.calls == [(["squats - b"], ["squats - a"])]
    assert [s.scores["similarity"] for s in result.samples] == [0.55, 0.0]
    assert result.band_counts["similarity"] == {"green": 0, "yellow": 1, "red": 1}
    assert "similarity" in result.metrics and "bertscore_f1" not in result.metrics


def test_records_without_ground_truth_are_refused_by_name():
    records = [PredictionRecord(id="clip_a", prediction="squats - x")]
    with pytest.raises(PredictionRecordError, match=r"without ground_truth.*'clip_a'"):
        evaluate_records(records, progress=False)
