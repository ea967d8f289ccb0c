"""The one console entry point, ``backstop``.

Each stage of the pipeline owns its sub-commands: a module listed in ``COMMANDS`` exposes
``register(subparsers)``, which adds its parsers and sets ``func`` on them. ``func(args)``
returns the process exit code. Errors a user can fix (a bad flag, ``UserError``) print one
line on stderr and exit 2; they never show a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

from pipelines import __version__
from pipelines.errors import UserError

COMMANDS: tuple[str, ...] = (
    "pipelines.topics_cli",
    "pipelines.events.cli",
    "pipelines.audit.cli",
    "pipelines.execution.cli",
    "pipelines.worker.cli",
    "pipelines.risk.whatif",
    "pipelines.scenarios.cli",
    "pipelines.replay.cli",
    "pipelines.backtest.cli",
    "pipelines.demo",
)


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block); sub-parsers inherit it."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="backstop",
        description="Streaming risk backstop for crypto options and derivatives.",
    )
    parser.add_argument("--version", action="version", version=f"backstop {__version__}")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="TOML settings file (default: $BACKSTOP_CONFIG); environment variables override it",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module_name in COMMANDS:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `backstop ... | head` ends quietly
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"backstop: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader left (`| head`) while a library ignored SIGPIPE (chdb does)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 128 + signal.SIGPIPE


if __name__ == "__main__":  # pragma: no cover - exercised through the console script
    sys.exit(main())
