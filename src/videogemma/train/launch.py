"""`videogemma train` as several DDP processes on this machine (torchrun), from Python.

    status = launch_training(["train", "--config", "demo_tiny", ...], processes=2)

The demo trains this way on a CPU: one rank per core, each with one torch thread and its own share of every
batch (gloo all-reduces the gradients). Every rank builds the same initial weights from the run's seed and
the Trainer's distributed sampler deals out the same seeded order, so the same command gives the same weights.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence


def torchrun_command(argv: Sequence[str], processes: int) -> list[str]:
    """The command line running `videogemma <argv>` as `processes` ranks (a free local port: --standalone)."""
    if processes < 1:
        raise ValueError(f"processes must be at least 1, got {processes}")
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
            "-m", "videogemma.cli", *argv]  # fmt: skip


def launch_training(argv: Sequence[str], processes: int) -> int:
    """Run `videogemma <argv>` (a `train` command) as `processes` DDP ranks; returns torchrun's exit status.

    Each rank runs one torch thread (OMP_NUM_THREADS=1): the ranks are the parallelism.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(torchrun_command(argv, processes), env=env).returncode
