"""`videogemma data ...`: the dataset commands, the QVED tools (`qved/commands.py`), the synthetic dataset
(`synthetic/commands.py`) and long workouts for live coaching (`workout_commands.py`), and the plain-text table
they print."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any


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


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {text}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    from videogemma.datasets import workout_commands
    from videogemma.datasets.qved import commands as qved_commands
    from videogemma.datasets.synthetic import commands as synthetic_commands

    data = subparsers.add_parser("data", help="QVED tools and the synthetic dataset")
    commands = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    synthetic_commands.register(commands)
    workout_commands.register(commands)  # synth-workouts, workout-windows (live coaching)
    qved_commands.register(commands)
    _register_captions(commands)


def _register_captions(commands: argparse._SubParsersAction) -> None:
    from videogemma.datasets.captions import DEFAULT_VIDEO_TEMPLATE, FORMATS

    captions = commands.add_parser(
        "captions",
        help="convert captioned videos (LLaVA-style JSON, WebVid CSV) into projector-pretraining split files",
        description="Write pretrain_train.json / pretrain_val.json (what the video-proj and image-proj configs "
        "read) from a LLaVA / Valley-style JSON or a WebVid CSV; see docs/REAL_WEIGHTS.md.",
    )
    captions.add_argument("--format", choices=FORMATS, required=True, help="the input's format")
    captions.add_argument("--input", required=True, help="the captions file (.json / .jsonl / .csv)")
    captions.add_argument("--out", required=True, help="folder for the split files")
    captions.add_argument(
        "--video-template",
        default=DEFAULT_VIDEO_TEMPLATE,
        help="webvid: a video's path from its row's columns",
    )
    captions.add_argument("--val-fraction", type=non_negative_float, default=0.01, help="share held out")
    captions.set_defaults(func=_captions)


def _captions(args: argparse.Namespace) -> int:
    from videogemma.datasets.captions import convert_captions

    summary = convert_captions(
        args.input, args.out, args.format, video_template=args.video_template, val_fraction=args.val_fraction
    )
    rows = [[split, count] for split, count in summary.records.items()]
    print(format_table(["split", "records"], rows))
    if summary.without_video:
        print(f"{summary.without_video} records without a video left out")
    for path in summary.files.values():
        print(f"wrote {path}")
    return 0
