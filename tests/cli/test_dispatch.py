"""The dispatcher builds the parser of the command a command line names, importing only its module."""

import argparse
import importlib
import subprocess
import sys

import pytest

from pipelines.cli import COMMANDS, Parser, build_parser, command_named, main


@pytest.mark.parametrize("module_name", list(COMMANDS))
def test_each_module_adds_the_commands_listed_for_it(module_name: str) -> None:
    subparsers = Parser(prog="backstop").add_subparsers()
    importlib.import_module(module_name).register(subparsers)
    assert tuple(subparsers.choices) == COMMANDS[module_name]


@pytest.mark.parametrize(("argv", "command"), [
    (["backtest", "--jobs", "2"], "backtest"),
    (["--config", "settings.toml", "worker", "--hedged", "a"], "worker"),
    (["--config=settings.toml", "replay"], "replay"),
    (["--conf", "backtest", "demo"], "demo"),  # a prefix of --config takes the next argument too
    (["--config", "backtest"], None),
    (["-h", "backtest"], None),
    (["--version"], None),
    (["--", "backtest"], None),
    (["bogus", "backtest"], None),
    ([], None),
])
def test_the_command_named_is_the_first_argument_after_backstops_own_options(argv: list[str],
                                                                            command: str | None) -> None:
    assert command_named(argv) == command


def commands(parser: argparse.ArgumentParser) -> list[str]:
    return [name for action in parser._subparsers._group_actions for name in action.choices]


def test_a_named_command_gets_its_own_parser_and_anything_else_all_of_them() -> None:
    every = [name for names in COMMANDS.values() for name in names]
    assert commands(build_parser(["--config", "x.toml", "audit", "migrate"])) == ["audit", "audit-sink", "incident"]
    assert commands(build_parser(["bogus"])) == commands(build_parser()) == every


def test_a_command_imports_no_other_commands_module() -> None:
    code = ("import sys\nfrom pipelines.cli import COMMANDS, build_parser\nbuild_parser(['backtest', '--jobs', '2'])\n"
            "print(' '.join(m for m in COMMANDS if m in sys.modules))")
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert imported == ["pipelines.backtest.cli"]


def test_the_processs_own_command_leaves_its_objects_frozen_for_the_exit_and_a_call_does_not() -> None:
    code = ("import gc, sys\nfrom pipelines.cli import main\nassert main(['scenarios', 'list']) == 0\n"
            "before = gc.get_freeze_count()\nsys.argv = ['backstop', 'scenarios', 'list']\nassert main() == 0\n"
            "print(before, gc.get_freeze_count() > 0, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stderr.split() == ["0", "True"]


def test_ctrl_c_while_the_commands_module_imports_is_exit_130_and_nothing_printed(monkeypatch, capsys) -> None:
    def interrupted(name: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib, "import_module", interrupted)
    assert main(["backtest", "--scenario", "october-2025"]) == 130
    assert capsys.readouterr() == ("", "")
