"""The `videogemma` command line: one entry point, one subcommand family per area of the package.

Each area owns its subcommands in a `commands.py` module exposing `register(subparsers)`; heavy imports
(torch, transformers) happen inside the command functions so that `videogemma --help` stays quick.

Every command fails the same way: the package's own errors (bad input, each naming its file or record) and the
usual OS errors become one line on stderr, exit status 2 for bad input and 1 for a failure while running;
`--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import errno
import importlib
import sys
from collections.abc import Sequence
from typing import Any

from videogemma.errors import VideoGemmaError

# Modules that register subcommands, in the order `--help` lists them.
COMMAND_MODULES = (
    "videogemma.datasets.commands",
    "videogemma.evaluation.commands",
    "videogemma.train.commands",
    "videogemma.inference.commands",
    "videogemma.coach.commands",
    "videogemma.serve.commands",
    "videogemma.demo",
)
EXIT_BAD_INPUT = 2
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130

# OS errors caused by what the user asked for (a path), and those met while running, with what to do.
_INPUT_ERRNOS = {
    errno.ENOENT: "no such file or folder",
    errno.EISDIR: "is a folder, not a file",
    errno.ENOTDIR: "is not a folder",
    errno.ENAMETOOLONG: "the name is too long",
}
_RUNTIME_ERRNOS = {
    errno.ENOSPC: "the disk is full: free some space, or write elsewhere",
    errno.EROFS: "the file system is read-only: write elsewhere",
    errno.EACCES: "permission denied: check the file's and its folder's permissions",
    errno.EPERM: "operation not permitted: check the file's and its folder's permissions",
    errno.EFBIG: "the file is too large for this file system",
    errno.EDQUOT: "the disk quota is exceeded: free some space, or write elsewhere",
}


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """`--help` shows each option's default, unless its help already says it or there is none to show (None, a
    flag's False, an empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if _shows_default(action) and "default" not in help_text:
            help_text += (" " if help_text else "") + "(default: %(default)s)"
        return help_text

    def _format_action(self, action: argparse.Action) -> str:
        if not action.help and _shows_default(action):
            action = copy.copy(action)
            action.help = "(default: %(default)s)"
        return super()._format_action(action)


def _shows_default(action: argparse.Action) -> bool:
    default = action.default
    return (
        bool(action.option_strings)
        and default not in (None, False, [], argparse.SUPPRESS)
        and action.nargs != 0
    )


class CommandParser(argparse.ArgumentParser):
    """The parser of `videogemma` and of each subcommand (argparse builds subparsers of the parent's class): its
    help shows defaults, and an unknown option is reported by the command it was given to, with that command's
    usage and the nearest option names (argparse alone reports it with the top-level usage)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        formatter = kwargs.get("formatter_class", DefaultsHelpFormatter)
        if not issubclass(formatter, DefaultsHelpFormatter):  # e.g. a command's RawDescriptionHelpFormatter
            formatter = type(f"Defaults{formatter.__name__}", (DefaultsHelpFormatter, formatter), {})
        super().__init__(*args, **{**kwargs, "formatter_class": formatter})

    def parse_known_args(
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        namespace, extras = super().parse_known_args(args, namespace)
        if extras and self._subparsers is None:  # a command (not a family of commands): its own error
            self.error(f"unrecognized arguments: {' '.join(extras)}{self._suggest(extras)}")
        return namespace, extras

    def _suggest(self, extras: list[str]) -> str:
        options = list(self._option_string_actions)
        close = [
            match
            for extra in extras
            if extra.startswith("-")
            for match in difflib.get_close_matches(extra.split("=", 1)[0], options, n=1)
        ]
        return f" (did you mean {', '.join(close)}?)" if close else ""


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="videogemma",
        description="Video understanding with Gemma-3n-E2B in the Mobile-VideoGPT architecture.",
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def describe_error(error: BaseException) -> tuple[int, str]:
    """(exit status, one line) for an error a command ended with."""
    if isinstance(error, VideoGemmaError):
        return EXIT_BAD_INPUT, str(error)
    if isinstance(error, UnicodeDecodeError):
        return (
            EXIT_BAD_INPUT,
            f"a file is not valid {error.encoding} text ({error.reason} at byte {error.start})",
        )
    if isinstance(error, OSError):
        where = " → ".join(str(name) for name in (error.filename, error.filename2) if name) or "?"
        if error.errno in _INPUT_ERRNOS:
            return EXIT_BAD_INPUT, f"{where}: {_INPUT_ERRNOS[error.errno]}"
        reason = _RUNTIME_ERRNOS.get(error.errno, error.strerror or str(error))
        return EXIT_FAILURE, f"{where}: {reason}"
    return EXIT_FAILURE, f"unexpected {type(error).__name__}: {error} (rerun with --debug for the traceback)"


def main(argv: list[str] | None = None) -> int:
    from videogemma.console import quiet_third_party_logs

    quiet_third_party_logs()
    parser = build_parser()
    args = parser.parse_args(argv)
    name = " ".join(part for part in (args.command, getattr(args, "data_command", None)) if part)
    try:
        # Every subcommand sets `func` (via `set_defaults`) to a callable taking the parsed args.
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"videogemma {name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:
        if args.debug:
            raise
        status, message = describe_error(error)
        print(f"videogemma {name}: error: {message}", file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
