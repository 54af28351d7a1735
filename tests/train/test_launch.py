"""`videogemma train --processes N`: the command each DDP rank runs, and how torchrun is started."""

from __future__ import annotations

import argparse
import sys

from videogemma.cli import main
from videogemma.train import commands
from videogemma.train.launch import torchrun_command


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers())
    return parser.parse_args(argv)


def test_each_rank_runs_the_same_train_command_without_processes() -> None:
    args = _parse(["train", "--config", "demo_tiny", "--processes", "2", "--resume", "--dtype", "float32",
                   "--max_steps", "5", "--data.train_file", "x.json"])  # fmt: skip
    assert args.processes == 2
    argv = commands.rank_argv(args)
    assert argv == ["train", "--config", "demo_tiny", "--resume", "--dtype", "float32", "--max_steps", "5",
                    "--data.train_file", "x.json"]  # fmt: skip
    assert _parse(argv).processes == 1  # a rank trains itself; it does not launch again


def test_torchrun_starts_the_ranks_on_a_free_local_port_with_this_python() -> None:
    command = torchrun_command(["train", "--config", "demo_tiny"], 2)
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--standalone" in command and command[command.index("--nproc_per_node") + 1] == "2"
    assert command[-5:] == ["-m", "videogemma.cli", "train", "--config", "demo_tiny"]


def test_fewer_than_one_process_is_refused_in_one_line(capsys) -> None:
    assert main(["train", "--config", "demo_tiny", "--processes", "0"]) == 2
    assert "--processes must be at least 1" in capsys.readouterr().err
