"""Output a risk person reads: counts as integers, notionals with separators, ISO times, Greek
units, no Python reprs; ``replay --json`` carries every breach and action."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from pipelines.audit import cli as audit_cli
from pipelines.audit.render import cell
from pipelines.backtest import cli as backtest_cli
from pipelines.cli import build_parser, main
from pipelines.replay.inprocess import replay

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("replay") / "rec.avro"
    assert main(["scenarios", "record", "aug-2024", "--out", str(path)]) == 0
    return path


def test_replay_json_holds_every_breach_and_action(recording: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["replay", str(recording), "--in-process", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    expected = replay(recording)
    assert [b["breach_id"] for b in out["breaches"]] == [b.breach_id for b in expected.breaches]
    assert [a["action_id"] for a in out["actions"]] == [a.action_id for a in expected.actions]
    first = out["breaches"][0]
    assert first["kind"] == expected.breaches[0].kind.value and first["subject"] == expected.breaches[0].subject


def test_replay_text_is_tables_with_iso_times(recording: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["replay", str(recording), "--in-process"]) == 0
    text = capsys.readouterr().out
    expected = replay(recording)
    assert "{" not in text and "'" not in text  # no dict reprs
    fired = sum(not b.cleared for b in expected.breaches)
    assert f"breaches ({fired:,d} fired" in text and f"actions ({len(expected.actions):,d})" in text
    for action_type in {a.action_type.value for a in expected.actions}:
        row = next(line for line in text.splitlines() if line.startswith(action_type + " "))
        count = sum(a.action_type == action_type for a in expected.actions)
        assert row.split()[1] == str(count) and row.split()[3].endswith("Z")


@pytest.mark.parametrize("value, text", [
    (1_249_231.987, "1,249,231.99"), (87.0, "87"), (0.0, "0"), (539.4113, "539.411"), (0.00123456789, "0.00123457"),
    (-3382.644, "-3,382.64"), (float("nan"), ""), (12, "12"),
])
def test_table_cells(value: float, text: str) -> None:
    assert cell(value) == text


def test_summary_sections_show_iso_times(capsys: pytest.CaptureFixture[str]) -> None:
    audit_cli._section("breaches", [{"kind": "margin_shortfall", "count": 3, "first_ms": 1_795_000_266_249,
                                     "last_ms": 1_795_000_812_249}])
    header, _, row = capsys.readouterr().out.strip().splitlines()[1:]
    assert header.split() == ["kind", "count", "first", "last"]
    assert row.split()[2:] == ["2026-11-18T11:11:06.249Z", "2026-11-18T11:20:12.249Z"]


def test_backtest_table_counts_are_integers_and_params_are_words(monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    side = {"bad_debt_usd": 1234567.891, "insurance_fund_draw_usd": 0.0, "adl_haircut_usd": 0.0,
            "slippage_usd": 10.0, "fees_usd": 1.0, "liquidations": 87, "capital_efficiency": 0.7371,
            "bankrupt_accounts": ["a", "b"]}
    result = {"scenario": "s", "seed": 7, "accounts": 3, "with_backstop": side, "without_backstop": side,
              "accounts_saved": [], "alternative": {"params": {"margin_trigger_ratio": 1.1},
                                                    "bad_debt_usd": 5.0, "liquidations": 138}}
    monkeypatch.setattr(backtest_cli, "compare", lambda *args, **kwargs: [result])
    assert main(["backtest", "--trigger", "1.1", "--no-progress", "--jobs", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = {line.split("  ")[1].strip(): line for line in lines if line.startswith("  ") and "  " in line[2:]}
    assert row["liquidations"].split()[-2:] == ["87", "87"]
    assert row["bad debt (USD)"].split()[-2:] == ["1,234,567.89", "1,234,567.89"]
    assert row["capital efficiency"].split()[-2:] == ["0.737", "0.737"]
    assert lines[-1] == "  with margin trigger ratio 1.1: bad debt 5.00 USD, liquidations 138"


def test_margin_table_names_greek_units(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["margin", "--portfolio", str(EXAMPLES / "portfolio.json"),
                 "--market", str(EXAMPLES / "market.json")]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["instrument"])
    assert lines[header].split() == ["instrument", "qty", "mark", "delta", "gamma", "vega", "theta"]
    assert lines[header + 1].split() == ["USD", "coin", "coin/USD", "USD/vol", "pt", "USD/day"]


def _options_without_help(parser: argparse.ArgumentParser, path: str) -> list[str]:
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                missing += _options_without_help(sub, f"{path} {name}")
        elif not action.help:
            missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    return missing


def test_every_option_of_every_command_has_help() -> None:
    assert _options_without_help(build_parser(), "backstop") == []
