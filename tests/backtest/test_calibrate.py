"""``backstop backtest --calibrate``: the budget, the choice, the held-out split, the settings file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipelines.backtest import calibrate
from pipelines.backtest.calibrate import Budget
from pipelines.backtest.run import sweep_thresholds, threshold_params
from pipelines.cli import build_parser, main
from pipelines.config import load_settings
from pipelines.errors import UserError
from pipelines.scenarios import library
from pipelines.worker.cli import worker_config

OPEN_INTEREST = 100_000.0


def curve(points: list[tuple[float, float, float]], oi: float = OPEN_INTEREST) -> list[dict[str, Any]]:
    """A sweep curve: the no-backstop point, then (trigger, bad debt, capital efficiency) points."""
    base = {"label": "no backstop", "trigger": None, "bad_debt_usd": 50_000.0, "capital_efficiency": 0.95,
            "initial_notional_usd": oi}
    return [base] + [{"label": f"trigger {t:g}", "trigger": t, "bad_debt_usd": debt, "capital_efficiency": eff,
                      "initial_notional_usd": oi} for t, debt, eff in points]


# the later the trigger, the more capital-efficient and the more bad debt on crash-a
CURVES = {"crash-a": curve([(0.8, 0.0, 0.70), (1.0, 100.0, 0.80), (1.2, 300.0, 0.90)]),
          "crash-b": curve([(0.8, 0.0, 0.72), (1.0, 0.0, 0.82), (1.2, 0.0, 0.88)])}


@pytest.mark.parametrize(("text", "expected"), [
    ("0", Budget(usd=0.0)), ("25000", Budget(usd=25_000.0)), ("0.5%oi", Budget(percent_of_oi=0.5)),
    ("1%OI", Budget(percent_of_oi=1.0)),
])
def test_budget_spellings(text: str, expected: Budget) -> None:
    assert calibrate.budget(text) == expected


@pytest.mark.parametrize("text", ["abc", "-1", "nan", "inf", "101%oi", "%oi", "-0.5%oi", "1e16", "5%"])
def test_budget_refuses_nonsense(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="share of open interest"):
        calibrate.budget(text)


def test_a_share_of_open_interest_is_judged_per_scenario() -> None:
    assert Budget(percent_of_oi=0.5).limit_usd(2_000_000.0) == pytest.approx(10_000.0)
    assert Budget(usd=7.0).limit_usd(2_000_000.0) == 7.0


@pytest.mark.parametrize(("limit", "trigger"), [
    (Budget(usd=0.0), 0.8), (Budget(usd=150.0), 1.0), (Budget(usd=300.0), 1.2),
    (Budget(percent_of_oi=0.2), 1.0), (Budget(percent_of_oi=0.3), 1.2),
])
def test_the_choice_moves_with_the_budget(limit: Budget, trigger: float) -> None:
    choice = calibrate.choose(CURVES, limit)
    assert choice.trigger == trigger
    at = [calibrate.swept_point(points, trigger) for points in CURVES.values()]
    assert choice.mean_capital_efficiency == pytest.approx(sum(p["capital_efficiency"] for p in at) / 2)


def test_open_interest_is_the_no_backstop_runs_opening_notional() -> None:
    """A swept run may have closed positions before its opening notional was taken: the budget's
    open interest is the run's without the backstop, the same for every trigger."""
    curves = {name: [p if p["trigger"] is None else {**p, "initial_notional_usd": OPEN_INTEREST / 2} for p in points]
              for name, points in CURVES.items()}
    assert calibrate.open_interest(curves["crash-a"]) == OPEN_INTEREST
    assert calibrate.choose(curves, Budget(percent_of_oi=0.3)).trigger == 1.2


def test_the_budget_must_hold_on_every_scenario() -> None:
    curves = {**CURVES, "crash-c": curve([(0.8, 500.0, 0.9), (1.0, 0.0, 0.9), (1.2, 0.0, 0.9)])}
    assert calibrate.choose(curves, Budget(usd=150.0)).trigger == 1.0
    with pytest.raises(UserError, match=r"closest, trigger 1, still leaves \$100.00 on crash-a"):
        calibrate.choose(curves, Budget(usd=0.0))


def test_no_point_within_budget_names_the_smallest_bad_debt_reached() -> None:
    curves = {"crash-a": curve([(0.8, 900.0, 0.7), (1.0, 400.0, 0.8), (1.2, 2_000.0, 0.9)])}
    with pytest.raises(UserError, match=r"budget \$0.00 .* trigger 1, still leaves \$400.00 on crash-a"):
        calibrate.choose(curves, Budget(usd=0.0))


def test_ties_go_to_less_bad_debt() -> None:
    curves = {"crash-a": curve([(0.8, 50.0, 0.9), (1.0, 10.0, 0.9)])}
    assert calibrate.choose(curves, Budget(usd=100.0)).trigger == 1.0


def test_default_split_holds_out_the_latest_quarter() -> None:
    assert calibrate.default_held_out(library.SCENARIOS) == ["jelly-2025", "october-2025"]
    three = [library.get(n) for n in ("may-2021", "ftx-2022", "october-2025")]
    assert calibrate.default_held_out(three) == []


def test_split_refuses_a_held_out_scenario_not_run_and_an_empty_calibration() -> None:
    two = [library.get("may-2021"), library.get("ftx-2022")]
    with pytest.raises(UserError, match="jelly-2025"):
        calibrate.split(two, ["jelly-2025"])
    with pytest.raises(UserError, match="no scenario to calibrate on"):
        calibrate.split(two, ["may-2021", "ftx-2022"])


def test_held_out_scenarios_take_no_part_in_the_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    """The held-out scenario would exceed the budget at every trigger: it is run at the chosen
    trigger only and reported apart, over budget."""
    calls = []

    def fake_sweep(scenarios, triggers, seed=None, *, jobs=1, progress=None):
        calls.append(([s.name for s in scenarios], list(triggers)))
        if scenarios[0].name == "may-2021":
            return {"may-2021": CURVES["crash-a"]}
        return {"ftx-2022": curve([(t, 9_999.0, 0.5) for t in triggers])}

    monkeypatch.setattr(calibrate, "sweep", fake_sweep)
    scenarios = [library.get("may-2021"), library.get("ftx-2022")]
    result = calibrate.calibrate(scenarios, ["ftx-2022"], [1.2, 0.8, 1.0], Budget(usd=150.0))
    assert result.choice.trigger == 1.0
    assert calls == [(["may-2021"], [0.8, 1.0, 1.2]), (["ftx-2022"], [1.0])]
    summary = result.summary()
    assert [r["scenario"] for r in summary["calibration"]] == ["may-2021"]
    assert summary["held_out"] == [{"scenario": "ftx-2022", "bad_debt_usd": 9_999.0, "budget_usd": 150.0,
                                    "within_budget": False, "capital_efficiency": 0.5,
                                    "open_interest_usd": OPEN_INTEREST}]


@pytest.mark.parametrize("trigger", [0.7, 1.0, 1.3])
def test_the_settings_file_gives_the_worker_the_backtest_engine(tmp_path: Path, trigger: float) -> None:
    path = calibrate.write_config(tmp_path / "calibrated.toml", calibrate.engine_section(trigger), ["a comment"])
    args = build_parser().parse_args(["--config", str(path), "worker", "--hedged", "acct-1,acct-2"])
    engine = worker_config(args, load_settings(args.config, env={})).engine
    backtest = threshold_params(**dict(sweep_thresholds(trigger)))
    assert engine.detectors == backtest.detectors and engine.ladder == backtest.ladder
    assert engine.detectors.margin_trigger_ratio == trigger
    assert engine.hedged_accounts == frozenset({"acct-1", "acct-2"})


def test_a_section_the_worker_refuses_is_not_written(tmp_path: Path) -> None:
    path = tmp_path / "calibrated.toml"
    with pytest.raises(UserError, match="liquidation_ratio: expected a ratio above 0 and at most 100, got 120"):
        calibrate.write_config(path, calibrate.engine_section(80.0), ["a comment"])
    assert not path.exists()


def test_calibrate_command_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """ftx-2022 (bad debt with the backstop at every trigger) at two triggers, aug-2024 held out."""
    toml, png = tmp_path / "calibrated.toml", tmp_path / "frontier.png"
    assert main(["backtest", "--calibrate", "--bad-debt-budget", "1.6%oi", "--scenario", "ftx-2022", "--scenario",
                 "aug-2024", "--held-out", "aug-2024", "--sweep", "0.8,1.2", "--out", str(toml), "--plot", str(png),
                 "--json", "--jobs", "2", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["config"] == str(toml) and out["plot"] == str(png) and png.stat().st_size > 0
    (row,) = out["calibration"]
    assert row["scenario"] == "ftx-2022" and 0 < row["bad_debt_usd"] <= row["budget_usd"]
    assert row["budget_usd"] == pytest.approx(0.016 * row["open_interest_usd"])
    swept = [p for p in out["curves"]["ftx-2022"] if p["trigger"] is not None]
    within = [p for p in swept if p["bad_debt_usd"] <= row["budget_usd"]]
    assert max(p["capital_efficiency"] for p in within) == row["capital_efficiency"]
    assert [r["scenario"] for r in out["held_out"]] == ["aug-2024"]
    assert [p["trigger"] for p in out["curves"]["aug-2024"]] == [None, out["trigger"]]
    assert load_settings(toml, env={}).engine.engine_params().detectors == threshold_params(
        **dict(sweep_thresholds(out["trigger"]))).detectors
    # just under the chosen point's bad debt, the other trigger (less bad debt, less efficient) is chosen
    tighter = Budget(usd=row["bad_debt_usd"] * 0.999)
    assert calibrate.choose({"ftx-2022": out["curves"]["ftx-2022"]}, tighter).trigger != out["trigger"]


@pytest.mark.parametrize(("argv", "fragment"), [
    (["backtest", "--calibrate"], "--bad-debt-budget"),
    (["backtest", "--bad-debt-budget", "0"], "--calibrate"),
    (["backtest", "--held-out", "ftx-2022"], "--calibrate"),
    (["backtest", "--calibrate", "--bad-debt-budget", "0", "--trigger", "1.1"], "--sweep"),
    (["backtest", "--calibrate", "--bad-debt-budget", "lots"], "--bad-debt-budget"),
    (["backtest", "--calibrate", "--bad-debt-budget", "0", "--held-out", "atlantis"], "--held-out"),
    (["backtest", "--calibrate", "--bad-debt-budget", "0", "--scenario", "may-2021", "--held-out", "ftx-2022"],
     "ftx-2022"),
    (["backtest", "--calibrate", "--bad-debt-budget", "0", "--scenario", "may-2021", "--sweep", "1.0,80"],
     "trigger 80 gives settings the worker refuses: [engine] liquidation_ratio"),
])
def test_bad_calibrate_flags_are_one_line_exit_2(argv: list[str], fragment: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and fragment in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_the_summary_is_json_whatever_scalars_the_runs_give() -> None:
    """A run's figures may be numpy scalars (a numpy bool is not JSON): the summary holds Python ones."""
    points = [{"trigger": None, "initial_notional_usd": np.float64(1e6), "bad_debt_usd": np.float64(5e3),
               "capital_efficiency": np.float64(0.0)},
              {"trigger": 1.0, "initial_notional_usd": np.float64(1e6), "bad_debt_usd": np.float64(0.0),
               "capital_efficiency": np.float64(0.9)}]
    choice = calibrate.Choice(1.0, 0.9, 0.0)
    result = calibrate.Calibration(calibrate.budget("1%oi"), choice, {"s": points}, {})
    (row,) = json.loads(json.dumps(result.summary()))["calibration"]
    assert row == {"scenario": "s", "bad_debt_usd": 0.0, "budget_usd": 10_000.0, "within_budget": True,
                   "capital_efficiency": 0.9, "open_interest_usd": 1e6}
