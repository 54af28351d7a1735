"""`videogemma eval-coach`: score a live-coaching run, write `metrics.json`, timelines and an HTML report.

    videogemma eval-coach feedback.jsonl --ground-truth data/workouts --out report/coach
    videogemma eval-coach runs/coach/ --ground-truth QEVD-FIT-COACH-Benchmark --episodes full_workout

PREDICTIONS are coach logs (`videogemma coach --out`, one per workout, matched to the ground truth by the
video's name), challenge-format JSON files, or folders of them (`coach_metrics.read_predictions`).
`--ground-truth` is a folder holding `feedbacks_long_range.json` (synthetic or QEVD-FIT-COACH) or that file.
The report shows, per workout, the ground truth and what the coach said on one time axis: matched pairs
joined by a line, a feedback the coach missed as a hollow marker, a feedback said when none was due in
orange, exercises as shaded bands; then every episode's scores and every matched pair.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from videogemma.constants import EXERCISE_SEPARATOR
from videogemma.errors import VideoGemmaDataError
from videogemma.evaluation.coach_metrics import DEFAULT_TOLERANCE_S, TEXT_METRICS, CoachEvaluation

_LABEL_CHARS = 26  # text shown beside a marker on the timeline
_COLOURS = {"truth": "#1f77b4", "matched": "#2ca02c", "unmatched": "#ff7f0e", "transition": "#7f7f7f"}


def plot_timeline(evaluation: CoachEvaluation, workout_name: str, path: Path) -> Path:
    """One workout's ground truth (top row) and predictions (bottom row) on one time axis."""
    from videogemma.plotting import figure_canvas, save_png

    workout = next(w for w in evaluation.workouts if w.name == workout_name)
    scores = [e for e in evaluation.episodes if e.workout == workout_name]
    width = min(max(workout.duration * 0.16, 9.0), 26.0)
    with figure_canvas(width, 3.6) as figure:
        axis = figure.subplots()
        for number, episode in enumerate(scores):
            if episode.exercise is not None:
                axis.axvspan(
                    episode.start, episode.end, color="#000000", alpha=0.04 + 0.04 * (number % 2), lw=0
                )
                axis.text((episode.start + episode.end) / 2, 1.55, episode.exercise, ha="center", fontsize=8)
        for feedback in workout.feedbacks:  # transitions are not scored in single-exercise episodes
            if feedback.is_transition:
                axis.plot(feedback.time, 1, marker="D", color=_COLOURS["transition"], ms=5, ls="none")
        matched_truth, matched_predictions = set(), set()
        for episode in scores:
            for i, j in episode.matches:
                (t_truth, _), (t_pred, _) = episode.references[i], episode.predictions[j]
                axis.plot([t_truth, t_pred], [1, 0], color=_COLOURS["matched"], lw=1, alpha=0.7)
                matched_truth.add((episode.name, i))
                matched_predictions.add((episode.name, j))
            for i, (time, text) in enumerate(episode.references):
                hit = (episode.name, i) in matched_truth
                axis.plot(
                    time,
                    1,
                    marker="o",
                    ms=7,
                    ls="none",
                    color=_COLOURS["truth"],
                    markerfacecolor=_COLOURS["truth"] if hit else "white",
                )
                _label(axis, time, 1.08 + 0.12 * (i % 2), text)
            for j, (time, text) in enumerate(episode.predictions):
                hit = (episode.name, j) in matched_predictions
                axis.plot(
                    time,
                    0,
                    marker="s",
                    ms=6,
                    ls="none",
                    color=_COLOURS["matched"] if hit else _COLOURS["unmatched"],
                )
                _label(axis, time, -0.12 - 0.12 * (j % 2), text)
        axis.set_yticks([0, 1], ["coach", "ground truth"])
        axis.set_ylim(-0.6, 1.75)
        axis.set_xlim(0, max(workout.duration, 1.0))
        axis.set_xlabel("seconds")
        axis.grid(axis="x", alpha=0.3)
        axis.set_title(
            f"{workout_name}: filled = matched (±{evaluation.tolerance / 2:g} s), hollow = missed, "
            "orange = said when nothing was due, ◆ = transition",
            fontsize=9,
        )
        return save_png(figure, path)


def _label(axis: Any, time: float, y: float, text: str) -> None:
    """The text beside a marker: what follows the exercise's name (the band above names it), shortened."""
    text = text.split(EXERCISE_SEPARATOR, 1)[-1]
    short = text if len(text) <= _LABEL_CHARS else text[: _LABEL_CHARS - 1] + "…"
    axis.text(time, y, short, fontsize=6, rotation=20, ha="left", va="center")


def render_report(evaluation: CoachEvaluation, timelines: dict[str, Path], title: str) -> str:
    from videogemma.evaluation.report_html import REPORT_STYLE, escape

    sections = [
        f"<h1>{escape(title)}</h1>",
        *_overall_section(evaluation),
        *_run_section(evaluation),
        *_episodes_section(evaluation),
        *_workout_sections(evaluation, timelines),
    ]
    body = "\n".join(sections)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(title)}</title>\n<style>{REPORT_STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _metric_names(evaluation: CoachEvaluation) -> list[str]:
    return [TEXT_METRICS[m] for m in evaluation.metrics]


def _overall_section(evaluation: CoachEvaluation) -> list[str]:
    from videogemma.evaluation.report_html import html_table

    overall = evaluation.overall()
    header = [
        "T-F score",
        "Precision",
        "Recall",
        "Ground truth",
        "Said",
        "Matched ground truth",
        "Matched said",
    ]
    keys = ["t_f_score", "precision", "recall", "ground_truth", "predictions", "matched_ground_truth"]
    keys += ["matched_predictions", *evaluation.metrics]
    return [
        "<h2>Overall</h2>",
        html_table([*header, *_metric_names(evaluation)], [[overall[k] for k in keys]]),
    ]


def _run_section(evaluation: CoachEvaluation) -> list[str]:
    from videogemma.evaluation.report_html import html_table

    notes = [
        ["Tolerance", f"{evaluation.tolerance:g} s (a match lies within ±{evaluation.tolerance / 2:g} s)"],
        ["Episodes", evaluation.mode],
        *[[f"{k} variant", v] for k, v in evaluation.variants.items()],
    ]
    if evaluation.missing_predictions:
        notes.append(["Workouts without predictions", ", ".join(evaluation.missing_predictions)])
    return ["<h2>Run</h2>", html_table(["Item", "Value"], notes)]


def _episodes_section(evaluation: CoachEvaluation) -> list[str]:
    from videogemma.evaluation.report_html import html_table

    header = ["Episode", "Exercise", "Start", "End", "Ground truth", "Said", "T-F", "Precision", "Recall"]
    keys = ("start", "end", "ground_truth", "predictions", "t_f_score", "precision", "recall")
    rows = [
        [
            row["episode"],
            row["exercise"] or "(whole workout)",
            *(row[k] for k in keys),
            *(row[m] for m in evaluation.metrics),
        ]
        for row in (evaluation.episode_row(e) for e in evaluation.episodes)
    ]
    return ["<h2>Episodes</h2>", html_table([*header, *_metric_names(evaluation)], rows)]


def _workout_sections(evaluation: CoachEvaluation, timelines: dict[str, Path]) -> list[str]:
    """Per workout: its timeline plot and its matched (ground truth, said) pairs with their scores."""
    from videogemma.evaluation.report_html import embedded_image, escape, html_table

    sections = []
    for workout in evaluation.workouts:
        sections.append(f"<h2>Workout {escape(workout.name)}</h2>")
        if workout.name in timelines:
            sections.append(embedded_image(timelines[workout.name], f"timeline of {workout.name}"))
        pairs = [
            [
                e.name,
                round(e.references[i][0], 2),
                round(e.predictions[j][0], 2),
                e.references[i][1],
                e.predictions[j][1],
                *(s[m] for m in evaluation.metrics),
            ]
            for e in evaluation.episodes
            if e.workout == workout.name
            for (i, j), s in zip(e.matches, e.pair_scores)
        ]
        if pairs:
            header = ["Episode", "Truth at", "Said at", "Ground truth", "Said", *_metric_names(evaluation)]
            sections.append(html_table(header, pairs))
    return sections


def write_coach_report(evaluation: CoachEvaluation, out_dir: Path, title: str) -> dict[str, Path]:
    """metrics.json, one timeline PNG per workout and report.html in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    timelines = {
        w.name: plot_timeline(evaluation, w.name, out_dir / "timelines" / f"{w.name}.png")
        for w in evaluation.workouts
    }
    metrics = out_dir / "metrics.json"
    metrics.write_text(
        json.dumps(evaluation.to_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    html = out_dir / "report.html"
    html.write_text(render_report(evaluation, timelines, title), encoding="utf-8")
    return {"metrics": metrics, "html": html, **{f"timeline {k}": v for k, v in timelines.items()}}


def format_summary(evaluation: CoachEvaluation, outputs: dict[str, Path]) -> str:
    overall = evaluation.overall()
    lines = [
        f"T-F score {overall['t_f_score']:.3f} (precision {overall['precision']:.3f}, recall {overall['recall']:.3f};"
        f" ±{evaluation.tolerance / 2:g} s): {overall['matched_ground_truth']} of {overall['ground_truth']} "
        f"ground-truth feedbacks matched, {overall['matched_predictions']} of {overall['predictions']} said",
        *(
            f"{TEXT_METRICS[m]} over {overall['matched_pairs']} matched pairs: {overall[m]:.3f}"
            for m in evaluation.metrics
        ),
    ]
    if evaluation.missing_predictions:
        lines.append(f"no predictions for: {', '.join(evaluation.missing_predictions)} (scored as silent)")
    lines += [f"wrote {outputs['metrics']}", f"wrote {outputs['html']}"]
    return "\n".join(lines)


def register(subparsers: argparse._SubParsersAction) -> None:
    from videogemma.datasets.workouts import EPISODE_MODES

    parser = subparsers.add_parser(
        "eval-coach",
        help="score live-coaching feedback against timed ground truth (QEVD-FIT-COACH's T-F score)",
        description=__doc__.split("\n\n", 2)[2],
    )
    parser.add_argument(
        "predictions", nargs="+", type=Path, help="coach logs (.jsonl), challenge JSON, folders"
    )
    parser.add_argument(
        "--ground-truth", type=Path, required=True, help="folder with feedbacks_long_range.json, or the file"
    )
    parser.add_argument("--out", type=Path, required=True, help="report folder (created)")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE_S,
        help="matching window in seconds; a match lies within ± half of it (default 3.0)",
    )
    parser.add_argument(
        "--episodes",
        choices=EPISODE_MODES,
        default=EPISODE_MODES[0],
        help="score single exercises (QEVD's default) or whole workouts",
    )
    parser.add_argument(
        "--similarity-model",
        default="auto",
        help="sentence-similarity model: auto (the bundled MiniLM when installed), none, or a folder",
    )
    parser.add_argument(
        "--bertscore-model", type=Path, default=None, help="local model folder for BERTScore F1"
    )
    parser.add_argument("--title", default=None, help="report title")
    parser.add_argument(
        "--quiet", action="store_true", help="print only the files written, not the metrics summary"
    )
    parser.set_defaults(func=run_eval_coach)


def run_eval_coach(args: argparse.Namespace) -> int:
    from videogemma.datasets.workouts import load_workouts
    from videogemma.evaluation.coach_metrics import evaluate_coaching, read_predictions
    from videogemma.evaluation.commands import bertscore_scorer, similarity_scorer

    try:
        if not args.tolerance > 0:
            raise VideoGemmaDataError(f"--tolerance must be positive seconds, got {args.tolerance}")
        workouts = load_workouts(args.ground_truth)
        predictions = read_predictions(args.predictions)
        similarity, similarity_note = similarity_scorer(args.similarity_model)
        bertscore, bertscore_note = bertscore_scorer(args.bertscore_model, None)
        variants = {
            "similarity": similarity_note,
            **({"bertscore": bertscore_note} if bertscore_note else {}),
        }
        evaluation = evaluate_coaching(
            workouts, predictions, args.tolerance, args.episodes, similarity, bertscore, variants
        )
    except (VideoGemmaDataError, FileNotFoundError) as error:
        print(f"videogemma eval-coach: error: {error}", file=sys.stderr)
        return 2
    title = args.title or f"VideoGemma live coaching: {', '.join(p.name for p in args.predictions)}"
    outputs = write_coach_report(evaluation, args.out, title)
    if args.quiet:
        print("\n".join(f"wrote {path}" for path in outputs.values()))
    else:
        print(format_summary(evaluation, outputs))
    return 0
