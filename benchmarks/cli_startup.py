"""How long `videogemma --help` and each subcommand's `--help` take, whole process, against the 1 s goal.

    python benchmarks/cli_startup.py                  # 5 runs of each, medians
    python benchmarks/cli_startup.py --runs 9 --against ../main/src   # and side by side with another checkout

The command line imports torch and transformers only inside the commands (and `import videogemma` not at
all), so `--help` costs the Python start-up, argparse and the command modules. Each run is a fresh process
(`python -m videogemma.cli ... --help`); the two source trees run in turn, so that a change in the machine's
load hits both. Also timed: `python -c "import videogemma"` and, for scale, `python -c pass`.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
COMMANDS = (
    [],
    ["data"],
    ["data", "prepare"],
    ["eval"],
    ["train"],
    ["infer"],
    ["infer-batch"],
    ["coach"],
    ["serve"],
    ["demo"],
)
GOAL_S = 1.0


def seconds(argv: list[str], src: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of one run; CPU (user + system) hardly moves with the machine's load, wall does."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--against", type=Path, default=None, help="another checkout's src/ to compare with")
    args = parser.parse_args()
    trees = {"this": SRC} | ({"against": args.against.resolve()} if args.against else {})
    cases = [
        (" ".join(["videogemma", *c, "--help"]), [sys.executable, "-m", "videogemma.cli", *c, "--help"])
        for c in COMMANDS
    ]
    cases += [
        ("import videogemma", [sys.executable, "-c", "import videogemma"]),
        ("python -c pass", [sys.executable, "-c", "pass"]),
    ]
    header = " ".join(f"{name + ' wall':>13s} {name + ' cpu':>12s}" for name in trees)
    print(f"{'command':34s} {header}   (medians, s)")
    slowest = 0.0
    for label, argv in cases:
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
        for _ in range(args.runs):
            for name, src in trees.items():
                runs[name].append(seconds(argv, src))
        cells = []
        for name, values in runs.items():
            wall, cpu = (statistics.median(column) for column in zip(*values))
            cells.append(f"{wall:13.3f} {cpu:12.3f}")
            if name == "this":
                slowest = max(slowest, wall)
        print(f"{label:34s} " + " ".join(cells))
    verdict = "met" if slowest < GOAL_S else "NOT met"
    print(
        f"slowest median wall time here: {slowest:.3f} s; the {GOAL_S:.0f} s goal is {verdict} "
        f"(1-minute load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: wall grows with it, CPU does not)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
