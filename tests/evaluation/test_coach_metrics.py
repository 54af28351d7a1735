"""QEVD-FIT-COACH's temporal matching on hand-made timelines, the summed T-F score, prediction files and
`videogemma eval-coach` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from videogemma.cli import main
from videogemma.datasets.workouts import load_workouts
from videogemma.errors import RecordError
from videogemma.evaluation.coach_metrics import (
    evaluate_coaching,
    f_score,
    read_predictions,
    temporal_matches,
)


def match(truth: list[float], said: list[float], texts: list[str] | None = None, tolerance: float = 3.0):
    return temporal_matches(truth, said, texts or ["x"] * len(said), tolerance)


# ---- the matching rule ------------------------------------------------------------------------------------


def test_each_feedback_takes_its_nearest_prediction_within_half_the_tolerance():
    assert match([5.0, 20.0], [5.4, 18.6]) == [(0, 0), (1, 1)]
    # ±1.5 s is strict: 1.5 s away is not a match, 1.49 s is.
    assert match([10.0], [11.5]) == []
    assert match([10.0], [11.49]) == [(0, 0)]
    assert match([10.0], [8.51]) == [(0, 0)]
    # The tolerance is the whole window: 1.0 s gives ±0.5 s.
    assert match([10.0], [10.6], tolerance=1.0) == []


def test_a_tie_goes_to_the_earlier_prediction():
    # 10.0 lies 1.0 s from both: the earlier one is taken; the later is free for the next feedback.
    assert match([10.0, 11.2], [9.0, 11.0]) == [(0, 0), (1, 1)]
    # Two feedbacks equally near one prediction: the first feedback takes it, the second finds it taken.
    assert match([9.0, 11.0], [10.0]) == [(0, 0)]


def test_only_the_nearest_prediction_is_a_candidate():
    # 10.5's nearest prediction (10.2) is already 10.0's: 10.5 stays unmatched although 11.2 lies within
    # 1.5 s (QEVD's rule looks no further than the nearest).
    assert match([10.0, 10.5], [10.2, 11.2]) == [(0, 0)]


def test_a_match_must_come_after_the_previous_match():
    # The second feedback's nearest prediction lies before the first feedback's match: not a match.
    assert match([10.0, 10.4], [10.3, 9.9]) == [(0, 1)]


def test_empty_predictions_and_empty_texts_match_nothing():
    assert match([1.0, 2.0], []) == []
    assert match([1.0, 5.0], [1.1, 5.1], texts=["", "keep going"]) == [(1, 1)]


def test_precision_matches_with_the_roles_swapped():
    # Two predictions around one feedback: recall 1 / 1, but only one prediction finds it.
    truth, said = [10.0], [9.5, 10.8]
    assert match(truth, said) == [(0, 0)]
    assert temporal_matches(said, truth, ["feedback"]) == [(0, 0)]
    counts = {"ground_truth": 1, "predictions": 2, "matched_ground_truth": 1, "matched_predictions": 1}
    assert f_score(counts) == pytest.approx({"precision": 0.5, "recall": 1.0, "t_f_score": 2 / 3})
    zero = {"ground_truth": 3, "predictions": 0, "matched_ground_truth": 0, "matched_predictions": 0}
    assert f_score(zero) == {"precision": 0.0, "recall": 0.0, "t_f_score": 0.0}


# ---- workouts on disk ---------------------------------------------------------------------------------------


def write_workouts(root: Path, workouts: list[dict]) -> Path:
    """Workouts in QEVD-FIT-COACH's layout from {"name", "frames", "fps", "feedbacks": [(text, first, last,
    transition)]}."""
    (root / "long_range_videos").mkdir(parents=True, exist_ok=True)
    records = []
    for workout in workouts:
        texts = [""] * workout["frames"]
        for text, first, last, _ in workout["feedbacks"]:
            texts[first : last + 1] = [text] * (last - first + 1)
        name = workout["name"]
        np.save(
            root / f"long_range_videos/{name}_timestamps.npy", np.arange(workout["frames"]) / workout["fps"]
        )
        (root / f"long_range_videos/{name}.mp4").write_bytes(b"not decoded by the evaluation")
        records.append(
            {
                "long_range_video_file": f"./long_range_videos/{name}.mp4",
                "video_timestamps": f"./long_range_videos/{name}_timestamps.npy",
                "feedbacks": texts,
                "feedback_timestamps": [first / workout["fps"] for _, first, _, _ in workout["feedbacks"]],
                "is_transition": [flag for *_, flag in workout["feedbacks"]],
            }
        )
    (root / "feedbacks_long_range.json").write_text(json.dumps(records))
    return root


# One workout, 10 fps, 40 s: squats (transition at 0 s, feedback at 5 s and 12 s), pushups (transition at
# 20 s, feedback at 25 s), the end at 38 s. Episodes: squats 0 → 20.5 s, pushups 20 → 38.5 s.
WORKOUT = {
    "name": "0000",
    "frames": 400,
    "fps": 10.0,
    "feedbacks": [
        ("First up are squats!", 0, 10, True),
        ("squats - knees caving in; push the knees out", 50, 65, False),
        ("squats - good form; keep it up", 120, 135, False),
        ("Moving on to pushups!", 200, 210, True),
        ("pushups - hips sagging; brace the core", 250, 265, False),
        ("That's the end of the workout!", 380, 390, True),
    ],
}


@pytest.fixture
def ground_truth(tmp_path) -> Path:
    return write_workouts(tmp_path / "truth", [WORKOUT])


def test_counts_are_summed_over_episodes_before_the_ratios(ground_truth):
    workouts = load_workouts(ground_truth)
    # squats: both feedbacks said on time; pushups: nothing on time, three predictions said late or early.
    said = [
        (5.5, "squats - knees caving in; push the knees out"),
        (12.4, "squats - good form; keep it up"),
        (22.0, "pushups - good form"),
        (29.0, "pushups - good form"),
        (33.0, "pushups - good form"),
    ]
    evaluation = evaluate_coaching(workouts, {"0000": said})
    squats, pushups = evaluation.episodes
    assert (squats.exercise, pushups.exercise) == ("squats", "pushups")
    assert squats.counts() == {
        "ground_truth": 2,
        "predictions": 2,
        "matched_ground_truth": 2,
        "matched_predictions": 2,
    }
    assert pushups.counts() == {
        "ground_truth": 1,
        "predictions": 3,
        "matched_ground_truth": 0,
        "matched_predictions": 0,
    }
    overall = evaluation.overall()
    # Summed: recall 2/3, precision 2/5 (not the mean of the episodes' 1.0 and 0.0).
    assert overall["recall"] == pytest.approx(2 / 3) and overall["precision"] == pytest.approx(2 / 5)
    assert overall["t_f_score"] == pytest.approx(2 * (2 / 3) * (2 / 5) / (2 / 3 + 2 / 5))
    # Text metrics over the two matched pairs only: both said word for word.
    assert (
        overall["matched_pairs"] == 2 and overall["meteor"] > 0.9 and overall["rougeL"] == pytest.approx(1.0)
    )


def test_predictions_fall_into_the_episode_whose_span_holds_them(ground_truth):
    workouts = load_workouts(ground_truth)
    # 20.2 s lies in both episodes' spans (squats runs to 20.5 s, pushups starts at 20 s): both see it.
    evaluation = evaluate_coaching(workouts, {"0000": [(20.2, "hello"), (0.0, "at the very start")]})
    squats, pushups = evaluation.episodes
    assert [t for t, _ in squats.predictions] == [20.2]  # a prediction at the start time itself is outside
    assert [t for t, _ in pushups.predictions] == [20.2]
    whole = evaluate_coaching(workouts, {"0000": [(20.2, "hello"), (0.0, "x")]}, mode="full_workout")
    (episode,) = whole.episodes
    assert len(episode.references) == 6 and [t for t, _ in episode.predictions] == [0.0, 20.2]


def test_a_workout_without_predictions_counts_as_silent(ground_truth):
    evaluation = evaluate_coaching(load_workouts(ground_truth), {})
    assert evaluation.missing_predictions == ["0000"]
    assert evaluation.overall()["t_f_score"] == 0.0 and evaluation.overall()["ground_truth"] == 3


def test_prediction_files_out_of_order_score_as_sorted(ground_truth, tmp_path):
    records = [
        {"time": t, "text": "squats - good form; keep it up", "source": "videos/0000.mp4"}
        for t in (12.4, 5.5, 30.0)
    ]
    log = tmp_path / "coach.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    predictions = read_predictions([log])
    assert [t for t, _ in predictions["0000"]] == [5.5, 12.4, 30.0]
    unsorted = evaluate_coaching(
        load_workouts(ground_truth), {"0000": [(t, x) for t, x in ((12.4, "a"), (5.5, "b"), (30.0, "c"))]}
    )
    assert unsorted.overall()["matched_ground_truth"] == 2


def test_challenge_format_and_bad_prediction_files(ground_truth, tmp_path):
    challenge = tmp_path / "model.json"
    challenge.write_text(
        json.dumps(
            [
                {
                    "video_path": "0000.mp4",
                    "predicted_feedback": ["a", "b"],
                    "predicted_timestamps": [5.0, 12.0],
                }
            ]
        )
    )
    assert read_predictions([challenge]) == {"0000": [(5.0, "a"), (12.0, "b")]}

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"time": 1.0, "text": "ok"}\n{"time": -2, "text": "before the start"}\n')
    with pytest.raises(RecordError, match=r"bad\.jsonl, line 2: 'time' must be a non-negative"):
        read_predictions([bad])
    bad.write_text('{"time": 1.0, "text": "ok"}\nnot json\n')
    with pytest.raises(RecordError, match="line 2: invalid JSON"):
        read_predictions([bad])
    challenge.write_text(
        json.dumps(
            [{"video_path": "0000.mp4", "predicted_feedback": ["a"], "predicted_timestamps": [5.0, 12.0]}]
        )
    )
    with pytest.raises(RecordError, match="record 0: 'predicted_feedback' and 'predicted_timestamps'"):
        read_predictions([challenge])
    other = tmp_path / "9999.jsonl"
    other.write_text('{"time": 1.0, "text": "x"}\n')
    with pytest.raises(RecordError, match="ground truth does not hold"):
        evaluate_coaching(load_workouts(ground_truth), read_predictions([other]))


def test_eval_coach_writes_metrics_and_a_report_with_timelines(ground_truth, tmp_path, capsys):
    log = tmp_path / "0000.jsonl"
    said = [
        (5.5, "squats - knees caving in; push the knees out"),
        (26.0, "pushups - hips sagging; brace the core"),
    ]
    log.write_text("".join(json.dumps({"time": t, "text": x, "source": "0000.mp4"}) + "\n" for t, x in said))
    out = tmp_path / "report"
    argv = [
        "eval-coach",
        str(log),
        "--ground-truth",
        str(ground_truth),
        "--out",
        str(out),
        "--similarity-model",
        "none",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["overall"]["matched_ground_truth"] == 2 and metrics["overall"]["ground_truth"] == 3
    assert metrics["overall"]["t_f_score"] == pytest.approx(2 * 1.0 * (2 / 3) / (1 + 2 / 3))
    assert [row["exercise"] for row in metrics["per_episode"]] == ["squats", "pushups"]
    assert {p["ground_truth_time"] for p in metrics["matched_pairs"]} == {5.0, 25.0}
    assert "T-F score 0.800" in printed
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 1 and "Workout 0000" in html and "squats" in html
    assert (out / "timelines" / "0000.png").stat().st_size > 1000

    # A bad ground truth is one line naming it, exit 2.
    (ground_truth / "feedbacks_long_range.json").write_text("[{}]")
    assert main(argv) == 2
    assert "record 0: 'long_range_video_file' must be a non-empty string" in capsys.readouterr().err
