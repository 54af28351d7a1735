"""`videogemma data ...`: the QVED tools and the synthetic dataset on the command line.

    videogemma data synth     --out DIR [--per-variant N] [--seed S] [--size 64] [--frames 36] [--fps 12]
    videogemma data synth-workouts | workout-windows   long workouts for live coaching (workout_commands.py)
    videogemma data prepare   --root DATASET [--out DIR] [--ratios 0.6 0.2 0.2] [--seed 42] [--max-per-class N]
    videogemma data validate  FILE_OR_DIR ... --root DATASET [--model tiny|DIR] [--report report.json]
    videogemma data clean     --root DATASET (--out DIR | --in-place) [thresholds ...]
    videogemma data augment   --root DATASET [--copies K] [--ops hflip,rotate,...] [--seed 0]
    videogemma data stats     --root DATASET [--out DIR]

Each command prints a table of what it did; the work itself lives in `synthetic.py` and `qved_*.py`.
Bad input (a record outside the dataset root, a malformed manifest, a root that is not a folder) ends the
command with one line on stderr naming the file and record, and exit status 2.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from videogemma.errors import VideoGemmaDataError


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table: left-aligned text, right-aligned numbers, a rule under the header."""
    cells = [[str(h) for h in headers]] + [[_cell(value) for value in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [all(_is_number(row[i]) for row in rows) and rows for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if numeric[i] else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))
        )

    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths), *(line(r) for r in cells[1:])])


def _cell(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# ---- synth -------------------------------------------------------------------------------------------------


def _synth(args: argparse.Namespace) -> int:
    from videogemma.datasets.synthetic.exercises import EXERCISES, find_exercise
    from videogemma.datasets.synthetic.generate import generate_dataset

    exercises = tuple(find_exercise(name) for name in args.exercises) if args.exercises else EXERCISES
    summary = generate_dataset(
        args.out,
        per_variant=args.per_variant,
        seed=args.seed,
        size=args.size,
        num_frames=args.frames,
        fps=args.fps,
        workers=args.workers,
        exercises=exercises,
    )
    rows = [[e.class_name, len(e.variants), len(e.variants) * args.per_variant] for e in exercises]
    rows.append(["TOTAL", summary["variants"], summary["clips"]])
    print(format_table(["class", "variants", "clips"], rows))
    print(f"wrote {summary['written']} new clips ({summary['clips']} in all) to {args.out}")
    return 0


# ---- prepare -----------------------------------------------------------------------------------------------


def _prepare(args: argparse.Namespace) -> int:
    from videogemma.datasets.qved.prepare import SPLITS, prepare_splits

    result = prepare_splits(
        args.root,
        out_dir=args.out,
        ratios=tuple(args.ratios),
        seed=args.seed,
        max_per_class=args.max_per_class,
        stratify=args.stratify,
    )
    classes = sorted({c for split in SPLITS for c in result.counts[split]})
    rows = [[c, *(result.counts[s].get(c, 0) for s in SPLITS), sum(result.counts[s].get(c, 0) for s in SPLITS)]
            for c in classes]  # fmt: skip
    totals = [sum(result.counts[s].values()) for s in SPLITS]
    rows.append(["TOTAL", *totals, sum(totals)])
    print(format_table(["class", *SPLITS, "total"], rows))
    for family in result.families:
        print(
            f"{family}: {result.no_feedback[family]} records without a label answered 'No feedback available.', "
            f"{result.duplicate_labels[family]} duplicate records ignored, "
            f"{result.labels_without_video[family]} labels without a video"
        )
    print(
        f"{result.videos_without_labels} videos without labels left out; {result.capped} dropped by the cap"
    )
    for path in result.files.values():
        print(f"wrote {path}")
    return 0


# ---- validate ----------------------------------------------------------------------------------------------


def _validate(args: argparse.Namespace) -> int:
    from collections import Counter

    from videogemma.datasets.qved.validate import load_processor, validate_split_files

    if args.root is not None and not Path(args.root).is_dir():  # before the processor is built
        raise VideoGemmaDataError(f"--root {args.root}: the dataset root is not a folder")
    report = validate_split_files(
        args.paths,
        root=args.root,
        min_frames=args.min_frames,
        min_duration=args.min_duration,
        processor=load_processor(args.model),
    )
    for problem in report.problems:
        print(problem, file=sys.stderr)
    kinds = sorted({p.kind for p in report.problems})
    rows = []
    for file_report in report.files:
        by_kind = Counter(p.kind for p in file_report.problems)
        rows.append(
            [file_report.file, file_report.records, file_report.ok_records, *(by_kind[k] for k in kinds)]
        )
    print(format_table(["file", "records", "ok", *kinds], rows))
    if args.report:
        report.write(args.report)
        print(f"wrote {args.report}")
    print("OK" if report.ok else f"FAILED: {len(report.problems)} problems")
    return 0 if report.ok else 1


# ---- clean -------------------------------------------------------------------------------------------------


def _clean(args: argparse.Namespace) -> int:
    from videogemma.datasets.qved.clean import SUMMARY_HEADER, CleanThresholds, clean_dataset

    if (args.out is None) == (not args.in_place):
        raise SystemExit("videogemma data clean: give exactly one of --out DIR and --in-place")
    thresholds = CleanThresholds(
        min_width=args.min_width,
        min_height=args.min_height,
        min_brightness=args.min_brightness,
        max_brightness=args.max_brightness,
        min_sharpness=args.min_sharpness,
        frame_step=args.frame_step,
        max_samples=args.max_samples,
        motion_classes=tuple(args.motion_classes),
        min_frames=args.min_frames,
        min_duration=args.min_duration,
        min_fps=args.min_fps,
    )
    result = clean_dataset(args.root, args.out, thresholds, delete_rejected=args.delete_rejected)
    rows = result.summary_rows()
    used = [i for i, name in enumerate(SUMMARY_HEADER) if i < 4 or rows[-1][i]]  # reasons that occurred
    print(format_table([SUMMARY_HEADER[i] for i in used], [[row[i] for i in used] for row in rows]))
    for path in result.files.values():
        print(f"wrote {path}")
    return 0


# ---- augment -----------------------------------------------------------------------------------------------


def _augment(args: argparse.Namespace) -> int:
    from collections import Counter

    from videogemma.datasets.qved.augment import augment_dataset

    operations = args.ops.split(",") if args.ops else None
    result = augment_dataset(args.root, args.copies, operations, args.seed, args.classes)
    counts = Counter(job.operation for job in result.written)
    print(format_table(["operation", "clips"], [*sorted(counts.items()), ["TOTAL", len(result.written)]]))
    print(f"label files and manifest in {args.root} now list the augmented clips; run `prepare` again")
    for job, reason in result.failed:
        print(f"not augmented: {job.source} (copy {job.target}): {reason}", file=sys.stderr)
    if result.failed:
        print(f"{len(result.failed)} copies not written (listed above)", file=sys.stderr)
        return 1
    return 0


# ---- stats -------------------------------------------------------------------------------------------------


def _stats(args: argparse.Namespace) -> int:

    from videogemma.datasets.qved.stats import collect_stats, write_stats

    stats = collect_stats(args.root, args.splits)
    print(format_table(stats.table_header(), stats.table_rows()))
    print(format_table(["resolution", "videos"], list(stats.resolutions().items())))
    unreadable = [v for v in stats.videos if v.error]
    for video in unreadable:
        print(f"unreadable: {video.path}: {video.error}", file=sys.stderr)
    plot, table = write_stats(stats, args.out or args.root)
    print(f"wrote {plot} and {table}")
    return 0


# ---- registration -----------------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {text}")
    return value


def _reporting_bad_input(name: str, command: Callable[[argparse.Namespace], int]) -> Callable:
    """The command, with bad input (the package's data errors, each naming its file and record) reported as
    one line on stderr and exit status 2 instead of a traceback."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except VideoGemmaDataError as error:
            print(f"videogemma data {name}: error: {error}", file=sys.stderr)
            return 2

    return run


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="QVED tools and the synthetic dataset")
    commands = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")

    synth = commands.add_parser("synth", help="write a QVED-shaped dataset of synthetic exercise clips")
    synth.add_argument("--out", required=True, help="dataset folder to write")
    synth.add_argument("--per-variant", type=int, default=20, help="clips per exercise form variant")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--size", type=int, default=64, help="frame width and height in pixels")
    synth.add_argument("--frames", type=int, default=36, help="frames per clip")
    synth.add_argument("--fps", type=float, default=12.0)
    synth.add_argument("--workers", type=int, default=1, help="processes rendering clips in parallel")
    synth.add_argument("--exercises", nargs="+", help="class names to generate (default: all)")
    synth.set_defaults(func=_reporting_bad_input("synth", _synth))

    from videogemma.datasets import workout_commands  # synth-workouts, workout-windows (live coaching)

    workout_commands.register(commands)

    prepare = commands.add_parser("prepare", help="label files + manifest → the six conversation split files")
    prepare.add_argument(
        "--root", required=True, help="dataset folder (manifest.json, label files, class folders)"
    )
    prepare.add_argument("--out", help="where the split files go (default: --root)")
    prepare.add_argument(
        "--ratios", type=float, nargs=3, default=[0.6, 0.2, 0.2], metavar=("TRAIN", "VAL", "TEST")
    )
    prepare.add_argument("--seed", type=int, default=42)
    prepare.add_argument("--max-per-class", type=int, help="keep at most this many source videos per class")
    prepare.add_argument("--stratify", action="store_true", help="split every class by the ratios")
    prepare.set_defaults(func=_reporting_bad_input("prepare", _prepare))

    validate = commands.add_parser("validate", help="check split files: schema, videos, frames, duration")
    validate.add_argument("paths", nargs="+", help="split files, or folders holding the six")
    validate.add_argument(
        "--root",
        "--dataset-root",
        dest="root",
        help="dataset root the video paths are relative to (default: each file's folder)",
    )
    validate.add_argument(
        "--model",
        default="tiny",
        help="whose processor's checks apply (chat template, context length, video limits): `tiny` or a "
        "saved model / training run folder (default: tiny)",
    )
    validate.add_argument(
        "--min-frames", type=_positive_int, help="frames a clip needs (default: what the model reads)"
    )
    validate.add_argument("--min-duration", type=_non_negative_float, default=0.0, help="seconds")
    validate.add_argument("--report", help="write the full report here (JSON)")
    validate.set_defaults(func=_reporting_bad_input("validate", _validate))

    clean = commands.add_parser(
        "clean", help="reject dark, bright, blurry, low-resolution, still or broken clips"
    )
    clean.add_argument("--root", required=True, help="dataset folder")
    clean.add_argument("--out", help="write a cleaned copy here (videos hard-linked)")
    clean.add_argument(
        "--in-place", action="store_true", help="filter the files in --root (backups as *.bak)"
    )
    clean.add_argument("--delete-rejected", action="store_true", help="delete rejected videos from --root")
    clean.add_argument("--min-width", type=int, default=640)
    clean.add_argument("--min-height", type=int, default=360)
    clean.add_argument("--min-brightness", type=float, default=35.0, help="mean grey level")
    clean.add_argument("--max-brightness", type=float, default=190.0)
    clean.add_argument("--min-sharpness", type=float, default=50.0, help="variance of the Laplacian")
    clean.add_argument("--frame-step", type=int, default=15, help="measure every N-th frame")
    clean.add_argument("--max-samples", type=int, default=20)
    clean.add_argument("--motion-classes", nargs="*", default=[], help="classes that must show motion")
    clean.add_argument("--min-frames", type=int, default=8, help="frames the sampler needs")
    clean.add_argument("--min-duration", type=float, default=0.0, help="seconds")
    clean.add_argument("--min-fps", type=float, default=0.0)
    clean.set_defaults(func=_reporting_bad_input("clean", _clean))

    augment = commands.add_parser("augment", help="write <stem>_aug<k>.mp4 copies with their labels")
    augment.add_argument("--root", required=True, help="dataset folder (updated in place)")
    augment.add_argument("--copies", type=int, default=1, help="augmented clips per source video")
    augment.add_argument("--ops", help="comma-separated operations (default: all), e.g. hflip,rotate,salt")
    augment.add_argument("--seed", type=int, default=0)
    augment.add_argument("--classes", nargs="*", help="only these classes")
    augment.set_defaults(func=_reporting_bad_input("augment", _augment))

    stats = commands.add_parser(
        "stats", help="videos per class and split, durations, resolutions (table + plot)"
    )
    stats.add_argument("--root", required=True, help="dataset folder")
    stats.add_argument("--splits", help="folder holding the split files (default: --root)")
    stats.add_argument("--out", help="where dataset_stats.png/.json go (default: --root)")
    stats.set_defaults(func=_reporting_bad_input("stats", _stats))


def main(argv: list[str] | None = None) -> int:  # `python -m videogemma.datasets.commands` for debugging
    parser = argparse.ArgumentParser(prog="videogemma")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
