"""Scoring live coaching as QEVD-FIT-COACH's evaluator does: a temporal F-score, then text metrics over the
temporally matched (ground truth, prediction) pairs; per episode and overall.

Matching (QEVD's rule, reimplemented from its description): for each ground-truth feedback in time order,
take the prediction nearest to it in time, over all predictions (the earliest of two equally near); it is
a match when it lies strictly within half the tolerance (3.0 s → ±1.5 s), comes after the previous match
(in time order) and has non-empty text. The nearest prediction is the only candidate: when it is already
taken, the feedback stays unmatched even if another prediction lies within the tolerance. Recall counts
the ground-truth feedbacks matched this way; precision counts the predictions matched by the same rule
with the roles swapped (each prediction looks for its nearest ground-truth feedback). Counts are summed
over all episodes before the ratios: precision = matched predictions / predictions, recall = matched
ground truth / ground truth, T-F = 2PR / (P + R), each 0 when its denominator is (QEVD adds 1e-12 to them).

Text metrics (METEOR, ROUGE-L, sentence similarity, BERTScore F1 where a local model is given) score the
pairs of the recall matching, with the package's own scorers (`metrics.py`, `similarity.py`); an episode's
value is the mean over its pairs, the overall value the mean over all pairs (0 without pairs), as QEVD
averages them.

Predictions are sorted by time first (a file written out of order scores as the sorted one). Episodes come
from `datasets/workouts.py`: single exercises (a prediction belongs to an episode when start < time ≤ end)
or full workouts.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from videogemma.datasets.workouts import Episode, Workout, episodes
from videogemma.errors import RecordError

DEFAULT_TOLERANCE_S = 3.0
TEXT_METRICS = {
    "meteor": "METEOR",
    "rougeL": "ROUGE-L",
    "similarity": "Sentence similarity",
    "bertscore_f1": "BERTScore F1",
}

Timed = tuple[float, str]  # (seconds from the workout's first frame, text)


def temporal_matches(
    reference_times: Sequence[float],
    candidate_times: Sequence[float],
    candidate_texts: Sequence[str],
    tolerance: float = DEFAULT_TOLERANCE_S,
) -> list[tuple[int, int]]:
    """(reference index, candidate index) pairs by QEVD's rule (module docstring); both in time order."""
    if len(candidate_times) == 0:
        return []
    candidates = np.asarray(candidate_times, dtype=np.float64)
    matches: list[tuple[int, int]] = []
    last = -1
    for index, time in enumerate(reference_times):
        nearest = int(np.argmin((candidates - time) ** 2))  # argmin: the first of equally near ones
        if (
            abs(time - candidates[nearest]) < tolerance / 2
            and nearest > last
            and candidate_texts[nearest] != ""
        ):
            matches.append((index, nearest))
            last = nearest
    return matches


@dataclass
class EpisodeScore:
    """One episode's matching and the text scores of its matched pairs."""

    name: str
    workout: str
    exercise: str | None
    start: float
    end: float
    references: list[Timed]
    predictions: list[Timed]
    matches: list[tuple[int, int]]  # recall direction: (reference, prediction)
    matched_predictions: int  # precision direction's count
    pair_scores: list[dict[str, float]] = field(default_factory=list)

    @property
    def matched_references(self) -> int:
        return len(self.matches)

    def counts(self) -> dict[str, int]:
        return {
            "ground_truth": len(self.references),
            "predictions": len(self.predictions),
            "matched_ground_truth": self.matched_references,
            "matched_predictions": self.matched_predictions,
        }

    def pairs(self) -> list[tuple[str, str]]:
        """(ground truth, prediction) texts of the matched pairs."""
        return [(self.references[i][1], self.predictions[j][1]) for i, j in self.matches]


def score_episode(episode: Episode, predictions: Sequence[Timed], tolerance: float) -> EpisodeScore:
    """Match the episode's ground truth with the predictions that fall in it (text metrics come later)."""
    inside = sorted(((t, text) for t, text in predictions if episode.contains(t)), key=lambda p: p[0])
    references = [(f.time, f.text) for f in episode.feedbacks]
    reference_times, reference_texts = [t for t, _ in references], [x for _, x in references]
    prediction_times, prediction_texts = [t for t, _ in inside], [x for _, x in inside]
    recall = temporal_matches(reference_times, prediction_times, prediction_texts, tolerance)
    precision = temporal_matches(prediction_times, reference_times, reference_texts, tolerance)
    return EpisodeScore(
        episode.name,
        episode.workout.name,
        episode.exercise,
        episode.start,
        episode.end,
        references,
        inside,
        recall,
        len(precision),
    )


def f_score(counts: dict[str, int]) -> dict[str, float]:
    """Precision, recall and T-F from (summed) counts; 0 where a denominator is 0."""
    precision = counts["matched_predictions"] / counts["predictions"] if counts["predictions"] else 0.0
    recall = counts["matched_ground_truth"] / counts["ground_truth"] if counts["ground_truth"] else 0.0
    total = precision + recall
    return {
        "precision": precision,
        "recall": recall,
        "t_f_score": 2 * precision * recall / total if total else 0.0,
    }


@dataclass
class CoachEvaluation:
    episodes: list[EpisodeScore]
    tolerance: float
    mode: str
    metrics: list[str]  # text metrics that ran, in TEXT_METRICS order
    variants: dict[str, str]
    workouts: list[Workout]
    missing_predictions: list[str]  # workouts without any prediction file

    def counts(self) -> dict[str, int]:
        total = dict.fromkeys(
            ("ground_truth", "predictions", "matched_ground_truth", "matched_predictions"), 0
        )
        for episode in self.episodes:
            for key, value in episode.counts().items():
                total[key] += value
        return total

    def overall(self) -> dict[str, Any]:
        counts = self.counts()
        scores = [score for episode in self.episodes for score in episode.pair_scores]
        return {
            **counts,
            **f_score(counts),
            **{m: _mean([s[m] for s in scores]) for m in self.metrics},
            "matched_pairs": len(scores),
        }

    def episode_row(self, episode: EpisodeScore) -> dict[str, Any]:
        return {
            "episode": episode.name,
            "workout": episode.workout,
            "exercise": episode.exercise,
            "start": round(episode.start, 3),
            "end": round(episode.end, 3),
            **episode.counts(),
            **f_score(episode.counts()),
            **{m: _mean([s[m] for s in episode.pair_scores]) for m in self.metrics},
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "tolerance_s": self.tolerance,
            "matching": "QEVD-FIT-COACH: nearest prediction within ±tolerance/2, after the previous match",
            "episodes_mode": self.mode,
            "overall": self.overall(),
            "per_episode": [self.episode_row(e) for e in self.episodes],
            "matched_pairs": [
                {
                    "episode": e.name,
                    "ground_truth_time": round(e.references[i][0], 3),
                    "prediction_time": round(e.predictions[j][0], 3),
                    "ground_truth": e.references[i][1],
                    "prediction": e.predictions[j][1],
                    **scores,
                }
                for e in self.episodes
                for (i, j), scores in zip(e.matches, e.pair_scores)
            ],
            "metric_variants": self.variants,
            "workouts_without_predictions": self.missing_predictions,
        }


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


def evaluate_coaching(
    workouts: list[Workout],
    predictions: dict[str, list[Timed]],
    tolerance: float = DEFAULT_TOLERANCE_S,
    mode: str = "single_exercise",
    similarity: Any = None,
    bertscore: Any = None,
    variants: dict[str, str] | None = None,
) -> CoachEvaluation:
    """Score the predictions (workout name → timed texts) against the workouts' ground truth."""
    from videogemma.evaluation.metrics import Meteor, Rouge

    if not tolerance > 0:
        raise ValueError(f"the tolerance must be positive seconds, got {tolerance}")
    unknown = sorted(set(predictions) - {w.name for w in workouts})
    if unknown:
        raise RecordError(
            unknown[0],
            None,
            "predictions for a workout the ground truth does not hold "
            f"(it holds {sorted(w.name for w in workouts)})",
        )
    scored = [
        score_episode(e, predictions.get(w.name, []), tolerance) for w in workouts for e in episodes(w, mode)
    ]
    meteor, rouge = Meteor(), Rouge()
    metrics = (
        ["meteor", "rougeL"]
        + ["similarity"] * (similarity is not None)
        + ["bertscore_f1"] * (bertscore is not None)
    )
    pairs = [pair for episode in scored for pair in episode.pairs()]
    extra = {}
    if similarity is not None:
        extra["similarity"] = similarity.pairwise([p for _, p in pairs], [g for g, _ in pairs])
    if bertscore is not None:
        extra["bertscore_f1"] = bertscore.pairwise([p for _, p in pairs], [g for g, _ in pairs])
    position = 0
    for episode in scored:
        for truth, prediction in episode.pairs():
            scores = {"meteor": meteor(prediction, truth), "rougeL": rouge(prediction, truth)["rougeL"]}
            scores |= {name: float(values[position]) for name, values in extra.items()}
            episode.pair_scores.append(scores)
            position += 1
    all_variants = {"meteor": meteor.variant, "rougeL": rouge.variant, **(variants or {})}
    missing = [w.name for w in workouts if w.name not in predictions]
    return CoachEvaluation(scored, tolerance, mode, metrics, all_variants, workouts, missing)


# ---- reading predictions ---------------------------------------------------------------------------------


def read_predictions(paths: Sequence[str | os.PathLike]) -> dict[str, list[Timed]]:
    """Timed predictions per workout name (the video's stem) from coach logs and challenge-format files.

    - `.jsonl` (what `videogemma coach --out` writes): `{"time": s, "text": ..., "source": video}` per line;
      the workout is the stem of `source` (of the file's name when a record has none).
    - `.json`: a list of `{"video_path": ..., "predicted_feedback": [...], "predicted_timestamps": [...]}`
      (the AI Coach challenge's format), one per workout.
    A folder stands for the `.jsonl` and `.json` files in it. A workout predicted in two files is an error.
    """
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix in (".jsonl", ".json") and p.is_file())
        elif path.is_file():
            files.append(path)
        else:
            raise RecordError(path, None, "file not found")
    found: dict[str, list[Timed]] = {}
    origin: dict[str, Path] = {}
    for file in files:
        for name, items in (_read_challenge(file) if file.suffix == ".json" else _read_log(file)).items():
            if name in origin:
                raise RecordError(file, None, f"workout {name!r} is also predicted in {origin[name]}")
            origin[name] = file
            found[name] = sorted(items, key=lambda item: item[0])
    return found


def _stem(path: str) -> str:
    return PurePosixPath(str(path).replace("\\", "/")).stem


def _timed(file: Path, where: str, time: Any, text: Any) -> Timed:
    if isinstance(time, bool) or not isinstance(time, int | float) or not math.isfinite(time) or time < 0:
        raise RecordError(file, where, f"'time' must be a non-negative number of seconds, got {time!r}")
    if not isinstance(text, str):
        raise RecordError(file, where, f"'text' must be a string, got {type(text).__name__}")
    return float(time), text


def _read_log(file: Path) -> dict[str, list[Timed]]:
    found: dict[str, list[Timed]] = {}
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise RecordError(file, None, f"cannot read the file ({error})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise RecordError(
                file, where, f"invalid JSON ({error.msg}); a coach log has one record per line"
            ) from None
        if not isinstance(record, dict) or "time" not in record or "text" not in record:
            raise RecordError(
                file, where, "expected an object with 'time' and 'text' (a `videogemma coach` record)"
            )
        name = _stem(record["source"]) if isinstance(record.get("source"), str) else file.stem
        found.setdefault(name, []).append(_timed(file, where, record["time"], record["text"]))
    return found


def _read_challenge(file: Path) -> dict[str, list[Timed]]:
    try:
        records = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RecordError(file, None, f"not a readable JSON file ({error})") from None
    if not isinstance(records, list):
        raise RecordError(
            file, None, "expected a JSON list of {video_path, predicted_feedback, predicted_timestamps}"
        )
    found: dict[str, list[Timed]] = {}
    for index, record in enumerate(records):
        where = f"record {index}"
        if not isinstance(record, dict) or not isinstance(record.get("video_path"), str):
            raise RecordError(file, where, "expected an object with a 'video_path'")
        texts, times = record.get("predicted_feedback"), record.get("predicted_timestamps")
        if not isinstance(texts, list) or not isinstance(times, list) or len(texts) != len(times):
            raise RecordError(
                file,
                where,
                "'predicted_feedback' and 'predicted_timestamps' must be lists of the same length",
            )
        name = _stem(record["video_path"])
        if name in found:
            raise RecordError(file, where, f"workout {name!r} appears twice")
        found[name] = [_timed(file, f"{where}, item {k}", t, x) for k, (t, x) in enumerate(zip(times, texts))]
    return found
