"""`videogemma data synth`: the synthetic exercise dataset on the command line.

videogemma data synth --out DIR [--per-variant N] [--seed S] [--size 64] [--frames 36] [--fps 12]
"""

from __future__ import annotations

import argparse

from videogemma.datasets.commands import format_table


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


def register(commands: argparse._SubParsersAction) -> None:
    """The synthetic dataset's commands, under `videogemma data`."""
    synth = commands.add_parser("synth", help="write a QVED-shaped dataset of synthetic exercise clips")
    synth.add_argument("--out", required=True, help="dataset folder to write")
    synth.add_argument("--per-variant", type=int, default=20, help="clips per exercise form variant")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--size", type=int, default=64, help="frame width and height in pixels")
    synth.add_argument("--frames", type=int, default=36, help="frames per clip")
    synth.add_argument("--fps", type=float, default=12.0)
    synth.add_argument("--workers", type=int, default=1, help="processes rendering clips in parallel")
    synth.add_argument("--exercises", nargs="+", help="class names to generate (default: all)")
    synth.set_defaults(func=_synth)
