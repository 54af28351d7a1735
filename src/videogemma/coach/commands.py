"""`videogemma coach SOURCE`: live feedback over a whole workout.

    videogemma coach workout.mp4 --model outputs/demo/run --out feedback.jsonl
    videogemma coach /dev/video0 --model RUN_DIR --window 3 --stride 1 --out session.jsonl
    videogemma coach rtsp://camera.local/stream --model RUN_DIR --policy interval --interval 5

SOURCE is a video file (read as fast as it decodes, or paced with `--realtime`), a V4L2 camera
(`/dev/videoN`) or a stream URL (rtsp, rtmp, http(s), udp, tcp, srt). Every `--stride` seconds the model
answers on the last `--window` seconds; the emission policy decides what is said (`coach/policy.py`). Each
feedback said is a JSON Lines record in `--out`, flushed at once, and a line on stdout; a status line on
stderr shows the time, exercise, feedback, windows/s and how far behind real time the coach runs.
Ctrl-C ends the session cleanly (exit 0) with everything said kept. A source that cannot be opened, or
that fails or stalls mid-session, ends it with one line naming it and exit status 2 (what was said is kept).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from videogemma.coach.policy import POLICIES

DEFAULT_WINDOW_S = 3.0
DEFAULT_STRIDE_S = 1.0


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive seconds, got {text}")
    return value


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    from videogemma.constants import COACH_MAX_NEW_TOKENS
    from videogemma.inference.commands import add_generation_arguments, add_model_arguments

    coach = subparsers.add_parser(
        "coach",
        help="live coaching: timed feedback over a workout from a video file, a camera or a stream",
        description=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    coach.add_argument("source", help="video file, camera device (/dev/video0) or stream URL")
    coach.add_argument("--out", type=Path, default=None, help="JSON Lines file of what is said")
    written = coach.add_mutually_exclusive_group()
    written.add_argument("--append", action="store_true", help="add to an existing --out file")
    written.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    timing = coach.add_argument_group("windows")
    timing.add_argument(
        "--window",
        type=_positive_seconds,
        default=DEFAULT_WINDOW_S,
        help=f"seconds of video the model reads (default {DEFAULT_WINDOW_S:g})",
    )
    timing.add_argument(
        "--stride",
        type=_positive_seconds,
        default=DEFAULT_STRIDE_S,
        help=f"seconds between windows (default {DEFAULT_STRIDE_S:g})",
    )
    timing.add_argument(
        "--realtime",
        action="store_true",
        help="pace a file to real time (skipping windows that fall behind, as with a camera)",
    )
    timing.add_argument(
        "--stall-timeout",
        type=_positive_seconds,
        default=10.0,
        help="seconds without a frame before a camera or stream counts as lost",
    )
    timing.add_argument(
        "--no-feature-cache",
        action="store_true",
        help="run CLIP on every frame of every window (for comparison)",
    )
    policy = coach.add_argument_group("what is said")
    policy.add_argument(
        "--policy",
        choices=POLICIES,
        default="change",
        help="change: say an answer when it differs from the last one said; interval: say "
        "the answer every --interval seconds (default change)",
    )
    policy.add_argument(
        "--repeat-after",
        type=_positive_seconds,
        default=10.0,
        help="change policy: repeat an unchanged answer at most this often (s, default 10)",
    )
    policy.add_argument(
        "--confirm",
        type=_at_least_one,
        default=1,
        help="change policy: windows in a row that must give an answer before it is said (default 1: at once)",
    )
    policy.add_argument(
        "--interval",
        type=_positive_seconds,
        default=5.0,
        help="interval policy: seconds between feedbacks (default 5)",
    )
    coach.add_argument(
        "--prompt",
        default=None,
        help="the question each window answers (default: the "
        "processor's default prompt, QVED's form-evaluation question)",
    )
    coach.add_argument("--system", default=None, help="system text (folded into the first user turn)")
    coach.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    add_model_arguments(coach)
    add_generation_arguments(coach)
    coach.set_defaults(func=run_coach, max_new_tokens=COACH_MAX_NEW_TOKENS)


def _fail(message: str) -> int:
    print(f"videogemma coach: error: {message}", file=sys.stderr)
    return 2


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM ends a session as Ctrl-C does: cleanly, everything written


def run_coach(args: argparse.Namespace) -> int:
    import torch

    from videogemma.coach.console import Console
    from videogemma.coach.policy import make_policy
    from videogemma.coach.session import CoachSession, CoachSettings, FeedbackLog
    from videogemma.coach.source import VideoSource
    from videogemma.errors import VideoDecodeError
    from videogemma.inference.commands import load_from_args, settings_from_args

    if (
        args.out is not None
        and args.out.exists()
        and args.out.stat().st_size
        and not (args.append or args.overwrite)
    ):
        return _fail(f"--out {args.out} exists; pass --append to add to it or --overwrite to replace it")
    try:  # a bad source fails before the model loads
        VideoSource(args.source, read_timeout=args.stall_timeout).check()
    except VideoDecodeError as error:
        return _fail(str(error))
    if args.threads:
        torch.set_num_threads(args.threads)
    model, processor, _ = load_from_args(args)
    settings = CoachSettings(
        window=args.window,
        stride=args.stride,
        realtime=args.realtime,
        prompt=args.prompt,
        system=args.system,
        generation=settings_from_args(args),
        cache_features=not args.no_feature_cache,
        stall_timeout=args.stall_timeout,
    )
    console = Console()
    log = FeedbackLog(args.out, append=args.append) if args.out is not None else None
    session = CoachSession(
        model,
        processor,
        settings,
        make_policy(args.policy, args.repeat_after, args.interval, args.confirm),
        log,
        on_window=console.window,
    )
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        source = VideoSource(args.source, limits=processor.video_limits, read_timeout=args.stall_timeout)
        try:
            source.open()
        except VideoDecodeError as error:
            return _fail(str(error))
        try:
            stats = session.run(source)
        finally:
            source.close()
    finally:
        signal.signal(signal.SIGTERM, previous)
        if log is not None:
            log.close()
    console.finish(stats, str(args.out) if args.out is not None else None)
    if stats.error:
        return _fail(f"{stats.error} (what was said before is kept)")
    return 0
