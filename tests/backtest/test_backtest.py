import json
import math

import pytest

from pipelines.backtest.run import compare, simulate
from pipelines.cli import main
from pipelines.scenarios import library
from pipelines.scenarios.generate import generate


@pytest.fixture(scope="module")
def comparisons():
    return {r["scenario"]: r for r in compare(library.SCENARIOS, jobs=2, progress=False)}


def test_backstop_reduces_bad_debt_on_every_scenario(comparisons):
    for name, r in comparisons.items():
        w, wo = r["with_backstop"], r["without_backstop"]
        assert wo["bad_debt_usd"] > 0, name
        assert w["bad_debt_usd"] < wo["bad_debt_usd"], name
        assert w["bad_debt_usd"] + w["insurance_fund_draw_usd"] < wo["bad_debt_usd"] + wo["insurance_fund_draw_usd"]


def test_deficits_are_fully_accounted():
    g = generate(library.get("ftx-2022"))
    for with_backstop in (True, False):
        r = simulate(g, with_backstop=with_backstop, progress=False)
        for liq in r.liquidations:
            assert math.isclose(liq.deficit_usd, liq.fund_draw_usd + liq.adl_haircut_usd + liq.bad_debt_usd,
                                rel_tol=1e-6, abs_tol=1e-3), liq
        # nobody ends below zero: every deficit was paid by the fund, ADL, or booked as bad debt
        assert min(r.final_equity.values()) > -1e-3
        assert r.fund_draw_usd <= library.get("ftx-2022").insurance_fund_usd + 1e-6  # never more than the fund had


@pytest.mark.parametrize("with_backstop", [True, False], ids=["with", "without"])
def test_cash_conservation(with_backstop: bool):
    g = generate(library.get("may-2021"))
    from pipelines.backtest.run import engine_params, venue_for
    from pipelines.backtest.simulate import Simulation, sequence_events

    sim = Simulation("may-2021", venue_for(g.scenario), with_backstop=with_backstop, params=engine_params(g))
    result = sim.run(sequence_events(g.events))
    L = sim.ledger
    # every account is checked: the liquidated ones, and without the backstop the bankrupt ones whose
    # deficits were covered
    assert set(L.cash) == {a.account for a in g.accounts}
    assert result.liquidated_accounts
    assert with_backstop or any(L.covered_usd[a] > 0 for a in result.bankrupt_accounts)
    for account in L.cash:
        for asset, cash in L.cash[account].items():
            # collateral in + realised PnL - fees + deficits covered (by the fund, or as bad debt) = final cash
            expected = (L.deposits[account][asset] + L.realised[account][asset] - L.fees[account][asset]
                        + L.covered[account][asset])
            assert math.isclose(cash, expected, rel_tol=1e-9, abs_tol=1e-2), account


def test_deterministic_results():
    g = generate(library.get("october-2025"))
    a = simulate(g, with_backstop=True, progress=False).summary()
    b = simulate(generate(library.get("october-2025")), with_backstop=True, progress=False).summary()
    assert a == b


def test_backtest_cli_and_sweep_plot(comparisons, tmp_path, capsys):
    assert main(["backtest", "--scenario", "aug-2024", "--no-progress"]) == 0
    assert "bad debt" in capsys.readouterr().out
    png = tmp_path / "frontier.png"
    assert main(["backtest", "--scenario", "aug-2024", "--sweep", "1.0,1.2", "--plot", str(png), "--json",
                 "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["plot"] == str(png) and png.stat().st_size > 0
    points = {p["trigger"]: p for p in out["curves"]["aug-2024"]}
    assert list(points) == [None, 1.0, 1.2]
    # the frontier's no-backstop point and its point at the default trigger are the comparison's runs
    compared = comparisons["aug-2024"]
    for trigger, run in ((None, compared["without_backstop"]), (1.0, compared["with_backstop"])):
        assert round(points[trigger]["bad_debt_usd"], 2) == run["bad_debt_usd"]
        assert round(points[trigger]["capital_efficiency"], 6) == run["capital_efficiency"]
    assert points[1.2]["capital_efficiency"] != points[1.0]["capital_efficiency"]


def test_ftx_2022_draws_on_the_fund_and_deleverages_with_the_backstop():
    from pipelines.backtest.run import simulate

    g = generate(library.get("ftx-2022"))
    r = simulate(g, with_backstop=True, progress=False)
    assert r.bankrupt_accounts  # FTT's gap takes its longs through bankruptcy before the ladder can act
    assert r.fund_draw_usd > 0 and r.adl_haircut_usd > 0
    assert any(fill["step"] == "adl" for liq in r.liquidations for fill in liq.fills)
