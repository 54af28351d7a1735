"""`videogemma data prepare | validate | clean | augment | stats`: the QVED tools on the command line.

    videogemma data prepare   --root DATASET [--out DIR] [--ratios 0.6 0.2 0.2] [--seed 42] [--max-per-class N]
    videogemma data validate  FILE_OR_DIR ... --root DATASET [--model tiny|DIR] [--report report.json]
    videogemma data clean     --root DATASET (--out DIR | --in-place) [--model tiny|DIR] [thresholds ...]
    videogemma data augment   --root DATASET [--copies K] [--ops hflip,rotate,...] [--seed 0]
    videogemma data stats     --root DATASET [--out DIR]

Each command prints a table of what it did; the work itself lives in this package's modules. Bad input ends
the command with one line naming the file and record (the `videogemma` entry point reports it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from videogemma.datasets.commands import format_table, non_negative_float, positive_int
from videogemma.datasets.qved.clean import CleanThresholds
from videogemma.errors import VideoGemmaDataError
from videogemma.settings import add_dataclass_arguments, dataclass_from_args


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


def _validate(args: argparse.Namespace) -> int:
    from collections import Counter

    from videogemma.datasets.qved.validate import validate_split_files
    from videogemma.loading import load_processor

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


def _clean(args: argparse.Namespace) -> int:
    from videogemma.datasets.qved.clean import SUMMARY_HEADER, clean_dataset
    from videogemma.loading import load_processor

    if (args.out is None) == (not args.in_place):
        raise VideoGemmaDataError("give exactly one of --out DIR and --in-place")
    min_frames = args.min_frames if args.min_frames is not None else load_processor(args.model).num_frames
    thresholds = dataclass_from_args(CleanThresholds, args, min_frames=min_frames)
    result = clean_dataset(args.root, args.out, thresholds, delete_rejected=args.delete_rejected)
    rows = result.summary_rows()
    used = [i for i, name in enumerate(SUMMARY_HEADER) if i < 4 or rows[-1][i]]  # reasons that occurred
    print(format_table([SUMMARY_HEADER[i] for i in used], [[row[i] for i in used] for row in rows]))
    for path in result.files.values():
        print(f"wrote {path}")
    return 0


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


def register(commands: argparse._SubParsersAction) -> None:
    """The QVED tools, under `videogemma data`."""
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
    prepare.set_defaults(func=_prepare)

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
        "--min-frames", type=positive_int, help="frames a clip needs (default: what the model reads)"
    )
    validate.add_argument("--min-duration", type=non_negative_float, default=0.0, help="seconds")
    validate.add_argument("--report", help="write the full report here (JSON)")
    validate.set_defaults(func=_validate)

    clean = commands.add_parser(
        "clean", help="reject dark, bright, blurry, low-resolution, still or broken clips"
    )
    clean.add_argument("--root", required=True, help="dataset folder")
    clean.add_argument("--out", help="write a cleaned copy here (videos hard-linked)")
    clean.add_argument(
        "--in-place",
        action="store_true",
        help="filter the files in --root (backups: *.bak, then *.bak.1, *.bak.2, ... never overwritten)",
    )
    clean.add_argument("--delete-rejected", action="store_true", help="delete rejected videos from --root")
    clean.add_argument(
        "--model",
        default="tiny",
        help="whose processor sets --min-frames' default (what it reads): `tiny` or a saved model / run folder",
    )
    add_dataclass_arguments(clean, CleanThresholds, title="thresholds", exclude=("min_frames",))
    clean.add_argument(
        "--min-frames", type=positive_int, help="frames a clip needs (default: what the --model reads)"
    )
    clean.set_defaults(func=_clean)

    augment = commands.add_parser("augment", help="write <stem>_aug<k>.mp4 copies with their labels")
    augment.add_argument("--root", required=True, help="dataset folder (updated in place)")
    augment.add_argument("--copies", type=int, default=1, help="augmented clips per source video")
    augment.add_argument("--ops", help="comma-separated operations (default: all), e.g. hflip,rotate,salt")
    augment.add_argument("--seed", type=int, default=0)
    augment.add_argument("--classes", nargs="*", help="only these classes")
    augment.set_defaults(func=_augment)

    stats = commands.add_parser(
        "stats", help="videos per class and split, durations, resolutions (table + plot)"
    )
    stats.add_argument("--root", required=True, help="dataset folder")
    stats.add_argument("--splits", help="folder holding the split files (default: --root)")
    stats.add_argument("--out", help="where dataset_stats.png/.json go (default: --root)")
    stats.set_defaults(func=_stats)
