"""`videogemma data synth-workouts` and `videogemma data workout-windows`: long workouts for live coaching.

    videogemma data synth-workouts  --out DIR [--count 4] [--seed 0] [--min-duration 30] [--max-duration 120]
                                    [--size 64] [--fps 12] [--workers 1]
    videogemma data workout-windows --root WORKOUTS --out DIR [--window 3] [--stride 1] [--prompt TEXT]
                                    [--ratios 0.6 0.2 0.2] [--seed 42] [--empty-fraction 1.0]

`synth-workouts` writes QEVD-FIT-COACH's layout (`datasets/synthetic/workouts.py`); `workout-windows` reads
that layout (synthetic or a downloaded QEVD-FIT-COACH folder) and cuts the coach's windows into
conversation records for `videogemma train` (`datasets/workout_windows.py`).
"""

from __future__ import annotations

import argparse

from videogemma.datasets.commands import format_table, non_negative_float, positive_int
from videogemma.errors import VideoGemmaDataError


def _synth_workouts(args: argparse.Namespace) -> int:
    from videogemma.datasets.synthetic.workouts import WorkoutSettings, generate_workouts

    settings = WorkoutSettings(
        min_duration=args.min_duration, max_duration=args.max_duration, size=args.size, fps=args.fps
    )
    try:
        settings.check()
    except ValueError as error:
        raise VideoGemmaDataError(str(error)) from None
    summary = generate_workouts(
        args.out, count=args.count, seed=args.seed, settings=settings, workers=args.workers
    )
    rows = [[f"{index:04d}", round(seconds, 1)] for index, seconds in enumerate(summary["durations"])]
    rows.append(["TOTAL", round(summary["seconds"], 1)])
    print(format_table(["workout", "seconds"], rows))
    print(
        f"wrote {summary['workouts']} workouts ({summary['segments']} exercise segments, "
        f"{summary['feedbacks']} timed feedbacks) to {args.out}"
    )
    return 0


def _workout_windows(args: argparse.Namespace) -> int:
    from videogemma.datasets.workout_windows import SPLITS, cut_workout_windows

    summary = cut_workout_windows(
        args.root,
        args.out,
        window=args.window,
        stride=args.stride,
        prompt=args.prompt,
        ratios=tuple(args.ratios),
        seed=args.seed,
        empty_fraction=args.empty_fraction,
    )
    rows = [[s, summary.workouts[s], summary.windows[s], summary.with_feedback[s]] for s in SPLITS]
    rows.append(
        [
            "TOTAL",
            *(sum(column.values()) for column in (summary.workouts, summary.windows, summary.with_feedback)),
        ]
    )
    print(format_table(["split", "workouts", "windows", "with feedback due"], rows))
    print(
        f"{summary.dropped_empty} windows without feedback left out (--empty-fraction); "
        f"{summary.crowded} windows had two or more feedbacks due (the earliest is the answer)"
    )
    for path in summary.files.values():
        print(f"wrote {path}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add both commands to `videogemma data`'s subcommands."""
    from videogemma.constants import DEFAULT_PROMPT

    synth = commands.add_parser(
        "synth-workouts", help="write synthetic long workouts with timed feedback (QEVD-FIT-COACH layout)"
    )
    synth.add_argument("--out", required=True, help="dataset folder to write")
    synth.add_argument("--count", type=positive_int, default=4, help="workouts")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--min-duration", type=float, default=30.0, help="seconds")
    synth.add_argument("--max-duration", type=float, default=120.0, help="seconds")
    synth.add_argument("--size", type=int, default=64, help="frame width and height in pixels")
    synth.add_argument("--fps", type=float, default=12.0)
    synth.add_argument("--workers", type=positive_int, default=1, help="processes rendering workouts")
    synth.set_defaults(func=_synth_workouts)

    windows = commands.add_parser(
        "workout-windows",
        help="cut long workouts into the live coach's windows: clips + conversation records for training",
    )
    windows.add_argument("--root", required=True, help="workouts folder (feedbacks_long_range.json)")
    windows.add_argument("--out", required=True, help="where the clips and split files go")
    windows.add_argument("--window", type=float, default=3.0, help="seconds of video per window")
    windows.add_argument("--stride", type=float, default=1.0, help="seconds between windows")
    windows.add_argument("--prompt", default=DEFAULT_PROMPT, help="the question of every record")
    windows.add_argument(
        "--ratios", type=float, nargs=3, default=[0.6, 0.2, 0.2], metavar=("TRAIN", "VAL", "TEST")
    )
    windows.add_argument("--seed", type=int, default=42, help="seeds the split by workout")
    windows.add_argument(
        "--empty-fraction",
        type=non_negative_float,
        default=1.0,
        help="share of the windows without feedback due that are kept (seeded; default all)",
    )
    windows.set_defaults(func=_workout_windows)
