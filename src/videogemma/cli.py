"""The `videogemma` command line: one entry point, one subcommand family per area of the package.

Each area owns its subcommands in a `commands.py` module exposing `register(subparsers)`; heavy imports
(torch, transformers) happen inside the command functions so that `videogemma --help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules that register subcommands, in the order `--help` lists them.
COMMAND_MODULES = (
    "videogemma.datasets.commands",
    "videogemma.evaluation.commands",
    "videogemma.train.commands",
    "videogemma.inference.commands",
    "videogemma.coach.commands",
    "videogemma.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="videogemma",
        description="Video understanding with Gemma-3n-E2B in the Mobile-VideoGPT architecture.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Every subcommand sets `func` (via `set_defaults`) to a callable taking the parsed args.
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
