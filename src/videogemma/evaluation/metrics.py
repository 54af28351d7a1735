"""Text metrics of predictions against ground truth, per sample and aggregated (docs/EVALUATION.md).

ROUGE-1/2/L (rouge_score F-measure, stemming), BLEU (NLTK, lower-cased whitespace tokens, smoothing
method 1, plus corpus BLEU), METEOR (NLTK; WordNet synonyms only where WordNet is installed), optional
sentence similarity and BERTScore F1, and beside them the coaching metrics of `form_metrics` (exercise
identified, exact label, verdict, fault detection, confusion matrices). Errors and empty predictions score 0
on every metric and are counted.
"""

from __future__ import annotations

import functools
import os
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from videogemma.evaluation.form_metrics import (
    FormMetrics,
    FormOutcome,
    FormRules,
    form_metrics,
    read_answer,
    split_label,
)
from videogemma.inference.records import PredictionRecord, PredictionRecordError

# Display names, in report column order. Optional metrics appear only when they ran.
METRIC_LABELS = {
    "rouge1": "ROUGE-1",
    "rouge2": "ROUGE-2",
    "rougeL": "ROUGE-L",
    "bleu": "BLEU",
    "meteor": "METEOR",
    "similarity": "Sentence similarity",
    "bertscore_f1": "BERTScore F1",
}
# (green at or above, yellow at or above); below is red. `sample_band` caps these by the answer's coaching value.
BANDS = {"similarity": (0.7, 0.4), "meteor": (0.5, 0.2), "rougeL": (0.5, 0.2)}
BAND_NAMES = ("green", "yellow", "red")
BAND_RULE = (
    "by score, then capped: an answer naming the wrong exercise (or none) is red, one with the wrong verdict "
    "(good form vs a fault) at most yellow, whatever the text overlap"
)


def exercise_name(text: str | None) -> str:
    """The exercise a label names: the text before the first " - ", lower-cased and trimmed.

    Splitting on space-hyphen-space keeps hyphenated names whole (`mountain-climbers`, `cat-cow pose`).
    """
    return split_label(text)[0]


def band(metric: str, value: float) -> str | None:
    """ "green" / "yellow" / "red" for a banded metric, None for metrics without bands."""
    if metric not in BANDS:
        return None
    green, yellow = BANDS[metric]
    if value >= green:
        return "green"
    return "yellow" if value >= yellow else "red"


def sample_band(sample: SampleScore, metric: str) -> str | None:
    """A sample's band for `metric` (BAND_RULE): never green for an answer a coach would call wrong."""
    by_score = band(metric, sample.scores[metric])
    if by_score is None:
        return None
    if not sample.exercise_identified:
        return "red"
    if not sample.form.verdict_correct and by_score == "green":
        return "yellow"
    return by_score


def tokenize(text: str) -> list[str]:
    """BLEU and METEOR tokens: lower-cased, split on whitespace."""
    return text.lower().split()


def sentence_bleu(prediction: str, reference: str) -> float:
    from nltk.translate.bleu_score import SmoothingFunction
    from nltk.translate.bleu_score import sentence_bleu as nltk_sentence_bleu

    hypothesis, reference_tokens = tokenize(prediction), tokenize(reference)
    if not hypothesis or not reference_tokens:
        return 0.0
    return float(
        nltk_sentence_bleu([reference_tokens], hypothesis, smoothing_function=SmoothingFunction().method1)
    )


def corpus_bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    from nltk.translate.bleu_score import SmoothingFunction
    from nltk.translate.bleu_score import corpus_bleu as nltk_corpus_bleu

    hypotheses = [tokenize(text) for text in predictions]
    if not any(hypotheses):
        return 0.0
    return float(
        nltk_corpus_bleu(
            [[tokenize(text)] for text in references],
            hypotheses,
            smoothing_function=SmoothingFunction().method1,
        )
    )


class CachedPorterStemmer:
    """NLTK's Porter stemmer (its default mode, what rouge_score and METEOR use) with a cache: the same words
    come back in every sample, and stemming was over half the time of scoring. Same stems, so same scores."""

    def __init__(self, cache_size: int = 200_000) -> None:
        from nltk.stem.porter import PorterStemmer

        self.stem = functools.lru_cache(maxsize=cache_size)(PorterStemmer().stem)


class _NoSynonyms:
    """Stands in for the WordNet reader: no synsets, so NLTK's METEOR matches exact words and stems only."""

    def synsets(self, *args: Any, **kwargs: Any) -> list:
        return []


def wordnet_available() -> bool:
    """True when the WordNet corpus is installed locally (it is never downloaded)."""
    import nltk

    try:
        nltk.data.find("corpora/wordnet")
    except LookupError:
        try:
            nltk.data.find("corpora/wordnet.zip")
        except LookupError:
            return False
    try:
        from nltk.corpus import wordnet

        wordnet.synsets("exercise")
    except (LookupError, OSError):
        return False
    return True


class Meteor:
    """NLTK METEOR with WordNet synonyms where WordNet is installed, else exact + Porter-stem matching."""

    def __init__(self, use_wordnet: bool | None = None) -> None:
        self._stemmer = CachedPorterStemmer()
        self.uses_wordnet = wordnet_available() if use_wordnet is None else use_wordnet
        if self.uses_wordnet:
            from nltk.corpus import wordnet

            self._wordnet = wordnet
        else:
            self._wordnet = _NoSynonyms()

    @property
    def variant(self) -> str:
        if self.uses_wordnet:
            return "nltk meteor_score: exact, Porter-stem and WordNet synonym matching"
        return "nltk meteor_score: exact and Porter-stem matching only (WordNet not installed)"

    def __call__(self, prediction: str, reference: str) -> float:
        from nltk.translate.meteor_score import meteor_score

        hypothesis, reference_tokens = tokenize(prediction), tokenize(reference)
        if not hypothesis or not reference_tokens:
            return 0.0
        return float(
            meteor_score([reference_tokens], hypothesis, stemmer=self._stemmer, wordnet=self._wordnet)
        )


class Rouge:
    """ROUGE-1/2/L F-measures from `rouge_score` with Porter stemming."""

    names = ("rouge1", "rouge2", "rougeL")
    variant = "rouge_score F-measure with Porter stemming"

    def __init__(self) -> None:
        from rouge_score import rouge_scorer

        self._scorer = rouge_scorer.RougeScorer(list(self.names), tokenizer=_RougeTokenizer())

    def __call__(self, prediction: str, reference: str) -> dict[str, float]:
        scores = self._scorer.score(target=reference, prediction=prediction)
        return {name: float(scores[name].fmeasure) for name in self.names}


class _RougeTokenizer:
    """rouge_score's default tokenizer with stemming (`use_stemmer=True`), its stems cached."""

    def __init__(self) -> None:
        self._stemmer = CachedPorterStemmer()

    def tokenize(self, text: str) -> list[str]:
        from rouge_score import tokenize

        return tokenize.tokenize(text, self._stemmer)


class BertScore:
    """BERTScore F1 (`bert_score`) with a local model folder; never downloads.

    `bert_score` knows layer choices only for hub model names, so for a local folder the layer is
    `num_layers` or else the model's last hidden layer.
    """

    def __init__(self, model_path: str | os.PathLike, num_layers: int | None = None, batch_size: int = 32):
        import json

        import bert_score  # noqa: F401 (fail here, before any work, when it is not installed)

        self.model_path = Path(model_path)
        config_path = self.model_path / "config.json"
        if not config_path.is_file():
            raise FileNotFoundError(f"{self.model_path}: not a model folder (no config.json)")
        self.num_layers = num_layers or int(json.loads(config_path.read_text())["num_hidden_layers"])
        self.batch_size = batch_size

    @property
    def variant(self) -> str:
        return f"bert_score F1, model {self.model_path.name}, layer {self.num_layers}, no baseline rescaling"

    def pairwise(self, predictions: list[str], references: list[str]) -> list[float]:
        import bert_score

        if not predictions:
            return []
        _, _, f1 = bert_score.score(
            predictions,
            references,
            model_type=str(self.model_path),
            num_layers=self.num_layers,
            batch_size=self.batch_size,
            verbose=False,
        )
        return [float(value) for value in f1]


class PairwiseScorer(Protocol):
    """What evaluate_records needs from an optional model-based metric (SentenceSimilarity, BertScore)."""

    def pairwise(self, predictions: list[str], references: list[str]) -> list[float]: ...


@dataclass
class SampleScore:
    record: PredictionRecord
    outcome: str  # "success", "error" or "empty"
    scores: dict[str, float]
    form: FormOutcome

    @property
    def exercise_truth(self) -> str:
        return self.form.exercise_truth

    @property
    def exercise_predicted(self) -> str:
        return self.form.exercise_predicted

    @property
    def exercise_identified(self) -> bool:
        return self.outcome == "success" and self.form.exercise_identified


@dataclass
class EvaluationResult:
    samples: list[SampleScore]
    metrics: list[str]
    aggregates: dict[str, dict[str, float]]
    band_counts: dict[str, dict[str, int]]
    counts: dict[str, int]
    corpus_bleu: float
    exercise_accuracy: float
    per_exercise: list[dict[str, Any]]
    variants: dict[str, str]
    form: FormMetrics
    identifiers: dict[str, Any] = field(default_factory=dict)
    throughput: dict[str, Any] | None = None
    run: dict[str, Any] = field(default_factory=dict)  # checkpoint, config, decoding, dates (`eval`)

    def to_json(self) -> dict[str, Any]:
        return {
            "identifiers": self.identifiers,
            "run": self.run,
            "counts": self.counts,
            "form_feedback": self.form.to_json(),
            "metrics": {
                name: {"label": METRIC_LABELS[name], **self.aggregates[name]} for name in self.metrics
            },
            "corpus_bleu": self.corpus_bleu,
            "bands": {
                "thresholds": {
                    name: dict(zip(("green", "yellow"), BANDS[name])) for name in self.band_counts
                },
                "counts": self.band_counts,
                "rule": BAND_RULE,
            },
            "exercise_identification": {
                "accuracy": self.exercise_accuracy,
                "identified": sum(sample.exercise_identified for sample in self.samples),
                "samples": len(self.samples),
                "per_exercise": self.per_exercise,
            },
            "metric_variants": self.variants,
            "throughput": self.throughput,
        }


def aggregate(values: Sequence[float]) -> dict[str, float]:
    """Mean, median, population standard deviation, min and max."""
    if not values:
        return {"mean": 0.0, "median": 0.0, "std": 0.0, "min": 0.0, "max": 0.0}
    return {
        "mean": statistics.fmean(values),
        "median": float(statistics.median(values)),
        "std": statistics.pstdev(values),
        "min": float(min(values)),
        "max": float(max(values)),
    }


def _outcome(record: PredictionRecord) -> str:
    if record.is_error:
        return "error"
    return "empty" if record.is_empty else "success"


TEXT_METRICS = ("rouge1", "rouge2", "rougeL", "bleu", "meteor")


def evaluate_records(
    records: Iterable[PredictionRecord],
    similarity: PairwiseScorer | None = None,
    bertscore: PairwiseScorer | None = None,
    meteor: Meteor | None = None,
    variants: dict[str, str] | None = None,
    identifiers: dict[str, Any] | None = None,
    progress: bool = True,
    form_rules: FormRules | None = None,
) -> EvaluationResult:
    """Score every record against its ground truth and aggregate.

    `variants` adds notes on how optional metrics ran or why they were skipped; `form_rules` says which
    feedback reads as good form (default: `form_metrics.GOOD_FORM_PHRASES`).
    """
    records = list(records)
    _check_labelled(records)
    meteor = meteor or Meteor()
    form_rules = form_rules or FormRules()
    samples = _text_scores(records, meteor, form_rules, progress)
    metrics = list(TEXT_METRICS)
    for name, scorer in (("similarity", similarity), ("bertscore_f1", bertscore)):
        if scorer is not None:
            _model_scores(samples, name, scorer)
            metrics.append(name)
    all_variants = {
        "rouge": Rouge.variant,
        "bleu": "nltk sentence_bleu and corpus_bleu, lower-cased whitespace tokens, smoothing method1",
        "meteor": meteor.variant,
        "exercise": "text before the first ' - ', lower-cased and trimmed, equal to the ground truth's",
        "verdict": form_rules.description,
        "bands": BAND_RULE,
        **(variants or {}),
    }
    form = form_metrics([sample.form for sample in samples], form_rules)
    return _aggregate(samples, metrics, all_variants, identifiers or record_identifiers(records), form)


def _check_labelled(records: list[PredictionRecord]) -> None:
    if not records:
        raise PredictionRecordError("no prediction records to evaluate")
    unlabeled = [record.id for record in records if record.ground_truth is None]
    if unlabeled:
        shown = ", ".join(repr(record_id) for record_id in unlabeled[:5])
        more = f" and {len(unlabeled) - 5} more" if len(unlabeled) > 5 else ""
        raise PredictionRecordError(
            f"records without ground_truth cannot be evaluated: id {shown}{more} "
            "(predictions on an unlabeled folder can only be exported)"
        )


def _text_scores(
    records: list[PredictionRecord], meteor: Meteor, rules: FormRules, progress: bool
) -> list[SampleScore]:
    """Each record's n-gram scores and coaching reading (0 and no answer for an error or an empty answer)."""
    from tqdm.auto import tqdm

    rouge = Rouge()
    samples = []
    for record in tqdm(records, desc="scoring", unit="sample", disable=not progress):
        outcome = _outcome(record)
        scores = dict.fromkeys(TEXT_METRICS, 0.0)
        if outcome == "success":
            scores.update(rouge(record.prediction, record.ground_truth))
            scores["bleu"] = sentence_bleu(record.prediction, record.ground_truth)
            scores["meteor"] = meteor(record.prediction, record.ground_truth)
        samples.append(
            SampleScore(
                record=record,
                outcome=outcome,
                scores=scores,
                form=read_answer(
                    record.ground_truth, record.prediction if outcome == "success" else None, rules
                ),
            )
        )
    return samples


def _model_scores(samples: list[SampleScore], name: str, scorer: PairwiseScorer) -> None:
    """A model-based metric, batched over the samples that produced text; the rest score 0."""
    scored = [sample for sample in samples if sample.outcome == "success"]
    values = scorer.pairwise(
        [sample.record.prediction for sample in scored], [sample.record.ground_truth for sample in scored]
    )
    for sample in samples:
        sample.scores[name] = 0.0
    for sample, value in zip(scored, values):
        sample.scores[name] = float(value)


def _aggregate(
    samples: list[SampleScore],
    metrics: list[str],
    variants: dict[str, str],
    identifiers: dict[str, Any],
    form: FormMetrics,
) -> EvaluationResult:
    band_counts = {
        name: {
            band_name: sum(sample_band(sample, name) == band_name for sample in samples)
            for band_name in BAND_NAMES
        }
        for name in metrics
        if name in BANDS
    }
    outcomes = ("success", "error", "empty")
    counts = {"total": len(samples), **{o: sum(s.outcome == o for s in samples) for o in outcomes}}
    return EvaluationResult(
        samples=samples,
        metrics=metrics,
        aggregates={name: aggregate([sample.scores[name] for sample in samples]) for name in metrics},
        band_counts=band_counts,
        counts=counts,
        corpus_bleu=corpus_bleu(
            [sample.record.prediction if sample.outcome == "success" else "" for sample in samples],
            [sample.record.ground_truth for sample in samples],
        ),
        exercise_accuracy=sum(sample.exercise_identified for sample in samples) / len(samples),
        per_exercise=_per_exercise(samples, metrics),
        variants=variants,
        form=form,
        identifiers=identifiers,
    )


def _per_exercise(samples: list[SampleScore], metrics: list[str]) -> list[dict[str, Any]]:
    """One row per ground-truth exercise: samples, identified, accuracy, the coaching counts and each metric's
    mean."""
    groups: dict[str, list[SampleScore]] = {}
    for sample in samples:
        groups.setdefault(sample.exercise_truth, []).append(sample)
    rows = []
    for exercise in sorted(groups):
        group = groups[exercise]
        identified = sum(sample.exercise_identified for sample in group)
        rows.append(
            {
                "exercise": exercise,
                "samples": len(group),
                "identified": identified,
                "accuracy": identified / len(group),
                "exact": sum(sample.form.exact for sample in group),
                "verdict_correct": sum(sample.form.verdict_correct for sample in group),
                "faulty": sum(sample.form.has_fault for sample in group),
                "faulty_told_good": sum(sample.form.faulty_told_good for sample in group),
                "errors": sum(sample.outcome == "error" for sample in group),
                "empty": sum(sample.outcome == "empty" for sample in group),
                **{f"mean_{name}": statistics.fmean(s.scores[name] for s in group) for name in metrics},
            }
        )
    return rows


def record_identifiers(records: list[PredictionRecord]) -> dict[str, Any]:
    """The model and dataset names the records carry (all distinct values, usually one each)."""

    def distinct(values: Iterable[str | None]) -> list[str]:
        return sorted({value for value in values if value})

    return {
        "model": distinct(record.model for record in records),
        "dataset": distinct(record.dataset for record in records),
    }
