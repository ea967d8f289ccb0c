"""The demo's last lines: commands that run as printed, from where the demo ran, with short output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pipelines import demo

SCRIPT = Path(sys.executable).with_name("backstop")


def test_backstop_command_is_what_a_shell_here_can_run(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # not on PATH: its path, relative under the current folder
    monkeypatch.chdir(SCRIPT.parent.parent)
    assert demo.backstop_command() == f"{SCRIPT.parent.name}/backstop"
    monkeypatch.chdir(tmp_path)
    assert demo.backstop_command() == str(SCRIPT)
    monkeypatch.setenv("PATH", str(SCRIPT.parent))  # on PATH: the bare name
    assert demo.backstop_command() == "backstop"


def test_follow_up_commands_quote_the_store_and_carry_the_range(tmp_path) -> None:
    store = tmp_path / "a store"
    commands = demo.follow_up_commands(store, "2020-03-12T12:00:00.000Z", "2020-03-12T12:20:00.000Z", "acct-1")
    assert set(commands) == {"summary", "timeline", "plot"}
    assert f"--store '{store}'" in commands["timeline"]
    assert "--from 2020-03-12T12:00:00.000Z --to 2020-03-12T12:20:00.000Z" in commands["summary"]
    assert set(demo.follow_up_commands(store, "a", "b", None)) == {"summary"}


def test_printed_commands_run_as_printed(tmp_path) -> None:
    env = {**os.environ, "PATH": "/usr/bin:/bin"}  # as after the README's install: the venv's bin is not on PATH
    done = subprocess.run([str(SCRIPT), "demo", "--scenario", "aug-2024", "--store", str(tmp_path / "audit")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=True)
    lines = {line.split()[0]: line.split(None, 1)[1] for line in done.stdout.splitlines() if line.strip()}
    assert lines["incident"].startswith("2024-08-05T12:00:00.000Z .. 2024-08-05T12:")
    for name in ("summary", "timeline", "plot"):
        ran = subprocess.run(lines[name], shell=True, cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=300)
        assert ran.returncode == 0, (name, ran.stderr)
        if name == "timeline":
            assert len(ran.stdout.splitlines()) < 300 and "--all-ticks" in ran.stdout
    assert (tmp_path / "incident.png").read_bytes().startswith(b"\x89PNG")
