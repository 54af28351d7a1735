"""Every `torchrun` example of the README passes its own batch-size check: the effective batch divides evenly
over per-device batch × processes, and the QVED recipe keeps its effective batch of 64."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from videogemma.cli import build_parser
from videogemma.train.commands import config_from_args

README = Path(__file__).resolve().parents[2] / "README.md"
QVED_EFFECTIVE_BATCH = 64


def torchrun_examples(text: str) -> list[list[str]]:
    """The README's torchrun command lines, continuation lines joined and `# comments` dropped."""
    commands, current = [], None
    for raw in text.splitlines():
        line = re.sub(r"\s+#.*$", "", raw.strip())
        if current is None and line.startswith("torchrun "):
            current = []
        if current is None:
            continue
        current.append(line.removesuffix("\\").strip())
        if not line.endswith("\\"):
            commands.append(shlex.split(" ".join(current)))
            current = None
    return commands


def world_size(command: list[str]) -> int:
    def option(name: str) -> int:
        return int(command[command.index(name) + 1]) if name in command else 1

    return option("--nproc_per_node") * option("--nnodes")


EXAMPLES = torchrun_examples(README.read_text(encoding="utf-8"))


def test_the_readme_has_single_and_multi_node_examples() -> None:
    assert len(EXAMPLES) >= 3
    assert any("--nnodes" in command for command in EXAMPLES)


@pytest.mark.parametrize("command", EXAMPLES, ids=[" ".join(c[1:6]) for c in EXAMPLES])
def test_each_torchrun_example_passes_its_batch_size_check(command: list[str]) -> None:
    cli = command[command.index("videogemma.cli") + 1 :]
    config = config_from_args(build_parser().parse_args(cli), validate=False)
    processes = world_size(command)
    accumulation = config.gradient_accumulation_steps(processes)  # raises when it does not divide
    assert accumulation * config.per_device_train_batch_size * processes == config.effective_batch_size
    if "qved" in cli[cli.index("--config") + 1]:
        assert config.effective_batch_size == QVED_EFFECTIVE_BATCH


def test_a_wrong_example_would_fail() -> None:
    # The multi-node example as it once was: 16 processes × 8 per device = 128 samples for a batch of 64.
    command = shlex.split(
        "torchrun --nnodes 2 --nproc_per_node 8 -m videogemma.cli train --config qved_finetune"
    )
    config = config_from_args(
        build_parser().parse_args(command[command.index("videogemma.cli") + 1 :]), False
    )
    with pytest.raises(ValueError, match="must be a multiple"):
        config.gradient_accumulation_steps(world_size(command))
