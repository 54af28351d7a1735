"""The headline of an evaluation: the coaching metrics first, then the text metrics, one row each.

Built from metrics.json's content (`EvaluationResult.to_json()`), so `videogemma eval`, the demo and the HTML
report print the same rows with the same figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from videogemma.evaluation.form_metrics import Confusion

# The text metrics the headline shows after the coaching metrics, when they ran.
HEADLINE_TEXT_METRICS = ("rougeL", "meteor", "similarity")


@dataclass(frozen=True)
class HeadlineRow:
    label: str
    value: str
    detail: str = ""
    tone: str = ""  # "good" / "bad" / "" for the report's colouring

    def line(self, width: int = 30) -> str:
        detail = f"  ({self.detail})" if self.detail else ""
        return f"{self.label + ':':<{width}}{self.value}{detail}"


def _share(count: int, total: int) -> str:
    return f"{count} of {total}"


def _clips(count: int) -> str:
    return f"{count} clip{'' if count == 1 else 's'}"


def headline_rows(metrics: dict[str, Any], confusions: int = 2) -> list[HeadlineRow]:
    """The headline rows of one evaluation's metrics.json content."""
    form = metrics["form_feedback"]
    total = form["samples"]
    detection = form["fault_detection"]
    faulty = detection["clips_with_fault"]
    rows = [
        HeadlineRow(
            "exercise identified",
            f"{form['exercise_identified']['rate']:.1%}",
            _share(form["exercise_identified"]["count"], total),
        ),
        HeadlineRow(
            "exact label", f"{form['exact_label']['rate']:.1%}", _share(form["exact_label"]["count"], total)
        ),
        HeadlineRow(
            "verdict (good form or fault)",
            f"{form['verdict']['accuracy']:.1%}",
            _share(form["verdict"]["correct"], total),
        ),
        HeadlineRow(
            "fault detection F1",
            f"{detection['f1']:.3f}",
            f"precision {detection['precision']:.3f}, recall {detection['recall']:.3f}; {_clips(faulty)} with a fault",
        ),
        HeadlineRow(
            "fault named",
            f"{form['fault_named']['rate_of_faulty']:.1%}",
            f"{form['fault_named']['count']} of {_clips(faulty)} with a fault",
        ),
        HeadlineRow(
            "faulty clips told good form",
            str(form["faulty_told_good_form"]),
            f"of {_clips(faulty)} with a fault",
            "bad" if form["faulty_told_good_form"] else "good",
        ),
    ]
    worst = Confusion(**form["confusion"]["exercise"]).top_confusions(confusions)
    if worst:
        text = "; ".join(f"{truth} → {answer} {count} of {clips}" for truth, answer, count, clips in worst)
        rows.append(HeadlineRow("exercises most confused", text))
    for name in HEADLINE_TEXT_METRICS:
        if name in metrics["metrics"]:
            entry = metrics["metrics"][name]
            rows.append(HeadlineRow(entry["label"], f"{entry['mean']:.3f}", "mean"))
    return rows


def format_headline_rows(rows: list[HeadlineRow]) -> str:
    width = max(len(row.label) for row in rows) + 2
    return "\n".join(row.line(width) for row in rows)


def report_title(result: Any) -> str:
    """ "Form-feedback evaluation: <model> on <dataset>" from the result's identifiers."""
    model = ", ".join(result.identifiers.get("model") or []) or "unknown model"
    dataset = ", ".join(result.identifiers.get("dataset") or []) or "unknown data"
    return f"Form-feedback evaluation: {model} on {dataset}"


def subtitle(result: Any) -> str:
    """The line under the title: how many clips, how they ended, when they were evaluated."""
    counts = result.counts
    text = f"{counts['total']} clips: {counts['success']} answered, {counts['error']} errors, {counts['empty']} empty"
    evaluated = result.run.get("evaluated_at")
    return text + (f" · evaluated {evaluated}" if evaluated else "")
