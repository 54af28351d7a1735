"""Synthetic clip generation rate: clips per second written (render + H.264 encode), against 10 clips/s.

    python benchmarks/synthetic.py [--per-variant 4] [--size 64] [--workers 1 2]

For each worker count, a fresh dataset is written into a temporary folder and timed end to end (the
label files and manifest included). The target is ≥ 10 clips/s at 64 px on 2 cores; the ratio printed
is the measured rate over that target, for each worker count side by side.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

from videogemma.data.synthetic import EXERCISES, generate_dataset

TARGET_CLIPS_PER_SECOND = 10.0


def measure(per_variant: int, size: int, num_frames: int, workers: int) -> tuple[int, float]:
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        summary = generate_dataset(
            folder,
            per_variant=per_variant,
            seed=0,
            size=size,
            num_frames=num_frames,
            workers=workers,
            progress=False,
        )
        return summary["clips"], time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--per-variant", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--frames", type=int, default=36)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)

    print(f"{sum(len(e.variants) for e in EXERCISES) * args.per_variant} clips of {args.frames} frames at "
          f"{args.size}×{args.size} px; {os.cpu_count()} CPUs visible")  # fmt: skip
    print(f"{'workers':>7}  {'clips':>5}  {'seconds':>7}  {'clips/s':>7}  {'vs 10/s':>7}")
    best = 0.0
    for workers in args.workers:
        clips, seconds = measure(args.per_variant, args.size, args.frames, workers)
        rate = clips / seconds
        best = max(best, rate)
        print(
            f"{workers:>7}  {clips:>5}  {seconds:>7.2f}  {rate:>7.1f}  {rate / TARGET_CLIPS_PER_SECOND:>6.2f}x"
        )
    print(f"best: {best:.1f} clips/s = {best / TARGET_CLIPS_PER_SECOND:.2f}x the target of 10 clips/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
