"""The one console entry point, ``backstop``.

Each stage of the pipeline owns its sub-commands: a module listed in ``COMMANDS`` (with the
names of the commands it adds) exposes ``register(subparsers)``, which adds its parsers and sets
``func`` on them. ``func(args)`` returns the process exit code. A command line naming a command
imports only the module that owns it (the others import Kafka clients, the audit store...).
Errors a user can fix (a bad flag, ``UserError``) print one line on stderr and exit 2; they
never show a traceback."""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

from pipelines import __version__
from pipelines.errors import UserError

#: module -> the commands its ``register`` adds
COMMANDS: dict[str, tuple[str, ...]] = {
    "pipelines.topics_cli": ("topics",),
    "pipelines.events.cli": ("schemas",),
    "pipelines.audit.cli": ("audit", "audit-sink", "incident"),
    "pipelines.execution.cli": ("executor",),
    "pipelines.worker.cli": ("worker",),
    "pipelines.risk.whatif": ("margin",),
    "pipelines.scenarios.cli": ("scenarios",),
    "pipelines.replay.cli": ("record", "replay"),
    "pipelines.backtest.cli": ("backtest",),
    "pipelines.demo": ("demo",),
}


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block); sub-parsers inherit it."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or only of the command ``argv`` names (``command_named``)."""
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
    command = None if argv is None else command_named(argv)
    for module_name, names in COMMANDS.items():
        if command is None or command in names:
            importlib.import_module(module_name).register(subparsers)
    return parser


def command_named(argv: Sequence[str]) -> str | None:
    """The command ``argv`` runs, when it is one of ``COMMANDS`` and comes first or after
    ``--config FILE`` only (``--config=FILE``, or a prefix of the flag as argparse takes); else
    None: no command, ``--help``, ``--version``, a typo, for the parser of every command."""
    takes_value = False
    for arg in argv:
        if takes_value:
            takes_value = False
        elif arg.startswith("--config="):
            continue
        elif len(arg) > 2 and "--config".startswith(arg):
            takes_value = True
        elif arg.startswith("-"):
            return None
        else:
            return arg if any(arg in names for names in COMMANDS.values()) else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command of ``argv`` (None: the process's own command line) and returns its exit
    code. The process's own command leaves its objects frozen (``gc.freeze``) on the way out:
    the interpreter's exit then skips collecting them (about 0.25 s of CPU once the engine and
    its compiled kernels are loaded); a command closes what it opens itself."""
    own = argv is None
    try:
        return _run(sys.argv[1:] if argv is None else argv)
    finally:
        if own:
            gc.freeze()


def _run(argv: Sequence[str]) -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `backstop ... | head` ends quietly
    try:
        args = build_parser(argv).parse_args(argv)  # imports the command's module: Ctrl-C may come here
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
