"""Coaching metrics of answers to a form-feedback question, from the `"<exercise> - <feedback>"` form of labels.

Text overlap cannot tell a coach's answer right from wrong: "jumping jacks - good form" scores ROUGE-L 0.667
against "alternating forward lunges - good form". These metrics read an answer as a coach would:

- exercise identified: the name before the first " - " equals the ground truth's (`metrics.exercise_name`);
- exact label: the whole answer equals the ground truth (lower-cased, whitespace collapsed, final "." dropped);
- verdict: "good" when the feedback's first clause (before ";") holds a good-form phrase (`FormRules`),
  else "fault"; an answer without feedback (an error, an empty answer, no " - ") gives no verdict;
- fault detection, a fault being the positive class: precision (of the answers that said a fault, the clips
  that had one), recall (of the clips with a fault, those told a fault) and F1;
- fault named: of the clips with a fault, the answers whose fault (the first clause) equals the ground truth's;
- faulty told good form: the clips with a fault whose answer says good form (the failure that hurts a user);
- confusion matrices of exercises and of forms ("good form" or the fault), ground truth by answer.

These are the label-based metrics of `videogemma eval`; `coach_metrics` scores live coaching timelines.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from videogemma.constants import EXERCISE_SEPARATOR
from videogemma.errors import VideoGemmaError

# The first clause of a label's feedback reads as good form when it holds one of these (whole words, any case).
# The synthetic dataset writes "good form" (`datasets.synthetic.exercises`); the others are wordings QVED-style
# labels and models use. Pass your own with `FormRules(good_form_phrases=...)` or `eval --good-form-phrase`.
GOOD_FORM_PHRASES = (
    "good form",
    "correct form",
    "proper form",
    "great form",
    "perfect form",
    "form is good",
    "form is correct",
    "performed correctly",
    "no mistakes",
    "no corrections needed",
)
GOOD_FORM = "good form"  # the class name of good form in the form confusion matrix
VERDICTS = ("good", "fault")
NO_ANSWER = "(no answer)"  # an error, an empty answer or one without the label's form
OTHER = "(other)"  # an answer outside the ground truth's classes, or a class beyond the matrix's size
# Classes a confusion matrix shows, the most frequent first; the rest are counted as OTHER.
MAX_CONFUSION_CLASSES = 24
# Answers outside the ground truth's classes that get a column of their own (the rest count as OTHER).
MAX_EXTRA_ANSWERS = 6


def normalize(text: str | None) -> str:
    """Lower-cased, whitespace collapsed, a final full stop dropped: how labels are compared."""
    return " ".join((text or "").lower().split()).rstrip(". ")


def split_label(text: str | None) -> tuple[str, str]:
    """(exercise, feedback) of `"<exercise> - <feedback>"`: the exercise lower-cased and trimmed, the feedback
    normalised ("" without a separator). Splitting on space-hyphen-space keeps hyphenated names whole
    (`mountain-climbers`, `cat-cow pose`)."""
    head, separator, tail = (text or "").partition(EXERCISE_SEPARATOR)
    return " ".join(head.lower().split()), normalize(tail) if separator else ""


@dataclass(frozen=True)
class FormRules:
    """What reads as good form: a feedback whose first clause holds one of `good_form_phrases` as whole words,
    not right after "not" or "no"."""

    good_form_phrases: tuple[str, ...] = GOOD_FORM_PHRASES
    _pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        phrases = tuple(normalize(phrase) for phrase in self.good_form_phrases)
        if not phrases or not all(phrases):
            raise VideoGemmaError(f"good-form phrases must be non-empty text, got {self.good_form_phrases!r}")
        object.__setattr__(self, "good_form_phrases", phrases)
        pattern = "|".join(re.escape(phrase) for phrase in phrases)
        # Whole words, and not negated: "not good form" is no verdict of good form.
        object.__setattr__(self, "_pattern", re.compile(rf"(?<!\w)(?<!not )(?<!no )(?:{pattern})(?!\w)"))

    def is_good_form(self, clause: str) -> bool:
        return bool(self._pattern.search(normalize(clause)))

    @property
    def description(self) -> str:
        listed = ", ".join(f"'{phrase}'" for phrase in self.good_form_phrases)
        return (
            f"good form when the feedback's first clause (before ';') holds one of {listed} (whole words, not after "
            "'not' or 'no'); else a fault"
        )


@dataclass(frozen=True)
class FormOutcome:
    """One answer read against its ground truth. `verdict_predicted` is None for an answer with no verdict."""

    exercise_truth: str
    exercise_predicted: str  # "" when there is no answer
    exact: bool
    verdict_truth: str  # "good" or "fault"
    verdict_predicted: str | None
    form_truth: str  # GOOD_FORM or the fault, e.g. "knees caving in"
    form_predicted: str | None  # GOOD_FORM, the fault said, or None

    @property
    def exercise_identified(self) -> bool:
        return bool(self.exercise_predicted) and self.exercise_predicted == self.exercise_truth

    @property
    def verdict_correct(self) -> bool:
        return self.verdict_predicted == self.verdict_truth

    @property
    def has_fault(self) -> bool:
        return self.verdict_truth == "fault"

    @property
    def fault_named(self) -> bool:
        return self.has_fault and self.form_predicted == self.form_truth

    @property
    def faulty_told_good(self) -> bool:
        return self.has_fault and self.verdict_predicted == "good"

    @property
    def outcome(self) -> str:
        """The worst thing about the answer, in words (the report's filter and its worst-first order)."""
        if self.verdict_predicted is None and not self.exercise_predicted:
            return "no answer"
        if not self.exercise_identified:
            return "wrong exercise"
        if self.faulty_told_good:
            return "fault missed"
        if not self.verdict_correct:
            return "no verdict" if self.verdict_predicted is None else "fault on good form"
        if self.has_fault and not self.fault_named:
            return "wrong fault"
        return "exact" if self.exact else "right, other wording"


# Worst first: the order of `FormOutcome.outcome`'s values in the report.
OUTCOME_SEVERITY = {
    name: rank
    for rank, name in enumerate(
        (
            "no answer",
            "wrong exercise",
            "fault missed",
            "fault on good form",
            "no verdict",
            "wrong fault",
            "right, other wording",
            "exact",
        )
    )
}


def _form(feedback: str, rules: FormRules) -> tuple[str | None, str | None]:
    """(verdict, form) of a normalised feedback: the form is GOOD_FORM or the first clause (the fault)."""
    clause = feedback.split(";", 1)[0].strip()
    if not clause:
        return None, None
    if rules.is_good_form(clause):
        return "good", GOOD_FORM
    return "fault", clause


def read_answer(ground_truth: str, prediction: str | None, rules: FormRules | None = None) -> FormOutcome:
    """`prediction` (None for an error or an empty answer) read against `ground_truth`."""
    rules = rules or FormRules()
    exercise_truth, feedback_truth = split_label(ground_truth)
    verdict_truth, form_truth = _form(feedback_truth, rules)
    answered = bool(prediction and prediction.strip())
    exercise_predicted, feedback_predicted = split_label(prediction) if answered else ("", "")
    verdict_predicted, form_predicted = _form(feedback_predicted, rules)
    return FormOutcome(
        exercise_truth=exercise_truth,
        exercise_predicted=exercise_predicted,
        exact=answered and normalize(prediction) == normalize(ground_truth),
        # A label without feedback says no fault: counted as good form.
        verdict_truth=verdict_truth or "good",
        verdict_predicted=verdict_predicted,
        form_truth=form_truth or GOOD_FORM,
        form_predicted=form_predicted,
    )


@dataclass
class Confusion:
    """Counts of (ground truth, answer) pairs: `counts[i][j]` clips of class `labels[i]` answered `predicted[j]`."""

    labels: list[str]
    predicted: list[str]
    counts: list[list[int]]

    def to_json(self) -> dict[str, Any]:
        return {"labels": self.labels, "predicted": self.predicted, "counts": self.counts}

    def top_confusions(self, limit: int = 3) -> list[tuple[str, str, int, int]]:
        """The largest off-diagonal cells: (truth, answer, count, clips of that truth), largest first."""
        cells = [
            (truth, answer, count, sum(row))
            for truth, row in zip(self.labels, self.counts)
            for answer, count in zip(self.predicted, row)
            if count and answer != truth
        ]
        return sorted(cells, key=lambda cell: (-cell[2], cell[0], cell[1]))[:limit]


def confusion(
    truths: Sequence[str],
    answers: Sequence[str | None],
    max_classes: int = MAX_CONFUSION_CLASSES,
    max_extra: int = MAX_EXTRA_ANSWERS,
) -> Confusion:
    """Ground-truth classes (the most frequent `max_classes`, then OTHER) by answer: the same classes, then the
    answers outside them given at least twice (the most frequent `max_extra`), OTHER and NO_ANSWER."""
    frequency = Counter(truths)
    ranked = sorted(frequency, key=lambda name: (-frequency[name], name))
    kept = sorted(ranked[:max_classes])
    said = Counter(answer for answer in answers if answer and answer not in frequency)
    extra = [name for name, count in sorted(said.items(), key=lambda item: (-item[1], item[0])) if count >= 2]
    labels = kept + ([OTHER] if len(ranked) > max_classes else [])
    predicted = [*kept, *extra[:max_extra], OTHER, NO_ANSWER]
    counts = [[0] * len(predicted) for _ in labels]
    for truth, answer in zip(truths, answers):
        row = labels.index(truth) if truth in kept else len(labels) - 1
        column = NO_ANSWER if not answer else answer if answer in predicted else OTHER
        counts[row][predicted.index(column)] += 1
    return Confusion(labels, predicted, counts)


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


@dataclass
class FormMetrics:
    """The coaching metrics of a set of answers (module docstring); rates are fractions of `samples`
    unless named otherwise."""

    samples: int
    exercise_identified: int
    exact: int
    verdict_correct: int
    faulty: int  # clips whose ground truth names a fault
    fault_said: int  # answers that name a fault
    fault_detected: int  # clips with a fault told a fault (true positives)
    fault_named: int
    faulty_told_good: int
    exercise_confusion: Confusion
    form_confusion: Confusion
    rules: str
    outcomes: dict[str, int] = field(default_factory=dict)

    @property
    def exercise_accuracy(self) -> float:
        return _ratio(self.exercise_identified, self.samples)

    @property
    def exact_accuracy(self) -> float:
        return _ratio(self.exact, self.samples)

    @property
    def verdict_accuracy(self) -> float:
        return _ratio(self.verdict_correct, self.samples)

    @property
    def fault_precision(self) -> float:
        return _ratio(self.fault_detected, self.fault_said)

    @property
    def fault_recall(self) -> float:
        return _ratio(self.fault_detected, self.faulty)

    @property
    def fault_f1(self) -> float:
        precision, recall = self.fault_precision, self.fault_recall
        return 2 * precision * recall / (precision + recall) if precision + recall else 0.0

    @property
    def fault_named_rate(self) -> float:
        """Of the clips with a fault, the fraction whose answer names that fault."""
        return _ratio(self.fault_named, self.faulty)

    def to_json(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "exercise_identified": {"count": self.exercise_identified, "rate": self.exercise_accuracy},
            "exact_label": {"count": self.exact, "rate": self.exact_accuracy},
            "verdict": {"correct": self.verdict_correct, "accuracy": self.verdict_accuracy},
            "fault_detection": {
                "clips_with_fault": self.faulty,
                "answers_saying_fault": self.fault_said,
                "true_positives": self.fault_detected,
                "precision": self.fault_precision,
                "recall": self.fault_recall,
                "f1": self.fault_f1,
            },
            "fault_named": {"count": self.fault_named, "rate_of_faulty": self.fault_named_rate},
            "faulty_told_good_form": self.faulty_told_good,
            "outcomes": self.outcomes,
            "confusion": {
                "exercise": self.exercise_confusion.to_json(),
                "form": self.form_confusion.to_json(),
            },
            "rules": self.rules,
        }


def form_metrics(outcomes: Sequence[FormOutcome], rules: FormRules | None = None) -> FormMetrics:
    """Aggregate the answers read by `read_answer`."""
    rules = rules or FormRules()
    counted = Counter(outcome.outcome for outcome in outcomes)
    return FormMetrics(
        samples=len(outcomes),
        exercise_identified=sum(o.exercise_identified for o in outcomes),
        exact=sum(o.exact for o in outcomes),
        verdict_correct=sum(o.verdict_correct for o in outcomes),
        faulty=sum(o.has_fault for o in outcomes),
        fault_said=sum(o.verdict_predicted == "fault" for o in outcomes),
        fault_detected=sum(o.has_fault and o.verdict_predicted == "fault" for o in outcomes),
        fault_named=sum(o.fault_named for o in outcomes),
        faulty_told_good=sum(o.faulty_told_good for o in outcomes),
        exercise_confusion=confusion(
            [o.exercise_truth for o in outcomes], [o.exercise_predicted or None for o in outcomes]
        ),
        form_confusion=confusion([o.form_truth for o in outcomes], [o.form_predicted for o in outcomes]),
        rules=rules.description,
        outcomes={name: counted[name] for name in OUTCOME_SEVERITY if counted[name]},
    )
