"""`eval` time per record at 1,000, 10,000 and 50,000 records, side by side in one run (goal: the largest
within 1.5× of the smallest's time per record).

    python benchmarks/eval_scaling.py [--sizes 1000 10000 50000] [--similarity none|auto|DIR]
                                      [--similarity-sizes 1000 10000] [--profile N]

Each size gets a synthetic prediction file shaped like a QVED test run: the ground truths are the synthetic
dataset's descriptive labels, every prediction is distinct (a label of the right or a wrong exercise with
words changed, dropped or added, so no cache of repeated texts helps), with 3 % error records and 2 % empty
answers. `evaluate_file` (what `videogemma eval` runs: reading, ROUGE-1/2/L, BLEU, METEOR, exercise
identification, metrics.json, the workbook, the HTML report, the CSV and the plots) is timed on each.

The model-based metrics are timed apart: sentence similarity (MiniLM, batched, each distinct text embedded
once) costs several ms per distinct prediction on 2 shared cores, too much for 50,000 distinct ones in a few
minutes, so it is timed alone at the `--similarity-sizes` (default 1,000 and 10,000; `--similarity none`
skips it). BERTScore needs a local model and is not run. `--profile N` prints the 25 costliest functions of
`eval` at N records instead.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import random
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_SIZES = (1_000, 10_000, 50_000)
DEFAULT_SIMILARITY_SIZES = (1_000, 10_000)
TARGET_RATIO = 1.5
WARM_UP = 200  # records of an untimed first run
ERROR_SHARE, EMPTY_SHARE = 0.03, 0.02
FILLER = tuple(
    [
        "slightly",
        "more",
        "slowly",
        "the",
        "left",
        "right",
        "side",
        "keep",
        "your",
        "back",
        "straight",
        "try",
        "again",
        "next",
        "rep",
    ]
)


def synthetic_records(count: int, seed: int = 0) -> list[dict]:
    """`count` distinct prediction records over the synthetic dataset's exercises and variants."""
    from videogemma.datasets.synthetic.generate import EXERCISES

    rng = random.Random(seed)
    labels = [(e, e.descriptive_label(v)) for e in EXERCISES for v in e.variants]
    records = []
    for index in range(count):
        exercise, truth = rng.choice(labels)
        wrong_exercise = rng.random() < 0.2
        base = (
            rng.choice(labels)[1] if wrong_exercise else rng.choice([t for e, t in labels if e is exercise])
        )
        words = base.split()
        for _ in range(rng.randint(1, 4)):  # change, drop or add words
            position = rng.randrange(len(words))
            action = rng.random()
            if action < 0.4:
                words[position] = rng.choice(FILLER)
            elif action < 0.6 and len(words) > 4:
                del words[position]
            else:
                words.insert(position, rng.choice(FILLER))
        words.append(f"(take {index})")  # every prediction distinct
        record = {
            "id": index,
            "video_path": f"{exercise.class_name}/{index:08d}.mp4",
            "prompt": "Please evaluate the exercise form shown.",
            "ground_truth": truth,
            "prediction": " ".join(words),
            "status": "success",
            "error": None,
            "generated_tokens": len(words) + 2,
            "generation_time": 0.5 + rng.random(),
            "tokens_per_second": 20 + 10 * rng.random(),
            "model": "synthetic",
        }
        draw = rng.random()
        if draw < ERROR_SHARE:
            record.update(status="error", prediction="", error="VideoDecodeError: cannot decode video")
        elif draw < ERROR_SHARE + EMPTY_SHARE:
            record["prediction"] = ""
        records.append(record)
    return records


def write_predictions(path: Path, count: int) -> Path:
    with open(path, "w", encoding="utf-8") as file:
        for record in synthetic_records(count):
            file.write(json.dumps(record) + "\n")
    return path


def time_eval(work: Path, count: int) -> tuple[float, list[str]]:
    """Seconds `evaluate_file` takes on `count` records (no model-based metric), and the metrics that ran."""
    from videogemma.evaluation.commands import evaluate_file

    predictions = write_predictions(work / f"preds_{count}.jsonl", count)
    start = time.perf_counter()
    result, _ = evaluate_file(predictions, work / f"report_{count}", similarity_model="none")
    return time.perf_counter() - start, list(result.metrics)


def time_similarity(option: str, counts: list[int]) -> list[tuple[int, float]]:
    """Seconds the sentence-similarity metric takes on the answered records of each size (what `eval` adds
    with it), or nothing when its model is not available."""
    from videogemma.evaluation.commands import _similarity_scorer

    scorer, note = _similarity_scorer(option)
    if scorer is None:
        print(f"sentence similarity: {note}")
        return []
    rows = []
    for count in counts:
        answered = [r for r in synthetic_records(count) if r["prediction"]]
        start = time.perf_counter()
        scorer.pairwise([r["prediction"] for r in answered], [r["ground_truth"] for r in answered])
        rows.append((count, time.perf_counter() - start))
        print(f"{count:>7} records: sentence similarity {rows[-1][1]:.1f} s", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--similarity", default="auto", help="as eval's --similarity-model (default auto)")
    parser.add_argument("--similarity-sizes", type=int, nargs="*", default=list(DEFAULT_SIMILARITY_SIZES))
    parser.add_argument("--profile", type=int, default=None, metavar="N", help="profile one run at N records")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        if args.profile:
            profiler = cProfile.Profile()
            profiler.runcall(time_eval, work, args.profile)
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
            return 0
        time_eval(work, WARM_UP)  # imports and first-use set-up are not the per-record cost
        rows = []
        for count in args.sizes:
            seconds, metrics = time_eval(work, count)
            rows.append((count, seconds))
            print(f"{count:>7} records: eval {seconds:.1f} s", flush=True)
    similarity = time_similarity(args.similarity, args.similarity_sizes) if args.similarity != "none" else []
    print(format_rows("eval (" + ", ".join(metrics) + ", exercise; every report)", rows))
    if similarity:
        print(format_rows("sentence similarity alone (MiniLM; added to eval when installed)", similarity))
    return 0


def format_rows(title: str, rows: list[tuple[int, float]]) -> str:
    """A table of time per record and its ratio to the smallest size's, and the verdict for the largest."""
    lines = [title, f"{'records':>8}{'seconds':>9}{'ms/record':>11}{'ratio':>7}"]
    smallest = rows[0][1] / rows[0][0]
    for count, seconds in rows:
        lines.append(
            f"{count:>8}{seconds:>9.1f}{1e3 * seconds / count:>11.3f}{seconds / count / smallest:>7.2f}"
        )
    count, seconds = rows[-1]
    ratio = seconds / count / smallest
    verdict = "meets" if ratio <= TARGET_RATIO else "misses"
    lines.append(
        f"per-record time at {count:,} over {rows[0][0]:,} records: {ratio:.2f} ({verdict} the {TARGET_RATIO}× target)"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
