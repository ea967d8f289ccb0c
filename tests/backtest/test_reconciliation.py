"""Every bundled scenario, with and without the backstop, reconciles for every account:
liquidation actions ↔ execution reports ↔ positions closed ↔ deficits, fund draws and bad debt,
and every action has an outcome."""

from __future__ import annotations

import collections
import math
from typing import Any

import pytest

from pipelines.backtest.run import engine_params, venue_for
from pipelines.backtest.simulate import LIQUIDATIONS, Simulation, sequence_events
from pipelines.execution.book import BUY
from pipelines.scenarios import library
from pipelines.scenarios.generate import generate

OUTCOMES = {"accepted", "filled", "partially_filled", "rejected", "expired"}


def run(name: str, with_backstop: bool) -> tuple[Simulation, dict[str, list[Any]]]:
    generated = generate(library.get(name))
    out: dict[str, list[Any]] = collections.defaultdict(list)
    sim = Simulation(name, venue_for(generated.scenario), with_backstop=with_backstop,
                     params=engine_params(generated), on_output=lambda kind, value: out[kind].append(value))
    sim.run(sequence_events(generated.events))
    out["opening"] = [value for _, record, value in generated.events if record == "PositionUpdate"]
    return sim, out


@pytest.fixture(scope="module", params=[(s.name, w) for s in library.SCENARIOS for w in (True, False)],
                ids=lambda p: f"{p[0]}-{'with' if p[1] else 'without'}")
def simulated(request) -> tuple[Simulation, dict[str, list[Any]]]:
    return run(*request.param)


def test_every_action_has_an_outcome_with_a_reason_when_rejected(simulated) -> None:
    _, out = simulated
    reports = collections.defaultdict(list)
    for report in out["execution"]:
        reports[report["action_id"]].append(report)
    for action in out["action"]:
        statuses = {r["status"] for r in reports[action.action_id]}
        assert len(statuses) == 1 and statuses <= OUTCOMES, (action.action_type, statuses)
        if statuses == {"rejected"}:
            assert all(r["reason"] for r in reports[action.action_id])
    assert all(r["status"] in OUTCOMES for r in out["execution"])


def test_positions_are_the_opening_book_plus_the_reported_fills(simulated) -> None:
    sim, out = simulated
    expected: dict[tuple[str, str], float] = collections.defaultdict(float)
    for update in out["opening"]:
        expected[(update["account"], update["instrument"])] = update["quantity"]
    for report in out["execution"]:
        signed = report["filled_quantity"] * (1.0 if report["side"] == BUY else -1.0)
        expected[(report["account"], report["instrument"])] += signed
        if report["venue"] == "adl":  # the counterparty takes the other side
            expected[(report["counterparty"], report["instrument"])] -= signed
    for (account, name), quantity in expected.items():
        held = sim.ledger.positions[account].get(name, (0.0, 0.0))[0]
        assert math.isclose(held, quantity, rel_tol=1e-9, abs_tol=1e-6), (account, name)


def test_positions_closed_are_the_liquidations_fills(simulated) -> None:
    sim, out = simulated
    liquidation_ids = {a.action_id for a in out["action"] if a.action_type in LIQUIDATIONS}
    reported: dict[str, float] = collections.defaultdict(float)
    for report in out["execution"]:
        if report["action_id"] in liquidation_ids or report["action_id"].startswith("venue-liquidation:"):
            reported[report["account"]] += report["filled_quantity"]
    closed: dict[str, float] = collections.defaultdict(float)
    for liq in sim.result.liquidations:
        closed[liq.account] += liq.quantity
        assert liq.source == "settlement" or liq.action_id in liquidation_ids or liq.source == "venue"
    for account in set(reported) | set(closed):
        assert math.isclose(reported[account], closed[account], rel_tol=1e-9, abs_tol=1e-6), account


def test_deficits_draws_and_bad_debt_reconcile_per_account(simulated) -> None:
    sim, _ = simulated
    r, ledger = sim.result, sim.ledger
    deficit = collections.defaultdict(float)
    for liq in r.liquidations:
        assert math.isclose(liq.deficit_usd, liq.fund_draw_usd + liq.adl_haircut_usd + liq.bad_debt_usd,
                            rel_tol=1e-6, abs_tol=1e-3), liq
        deficit[liq.account] += liq.deficit_usd
    assert math.isclose(r.bad_debt_usd, sum(liq.bad_debt_usd for liq in r.liquidations), rel_tol=1e-9, abs_tol=1e-6)
    for account in ledger.cash:
        for asset, cash in ledger.cash[account].items():
            # per asset, in its own units: cash in, realised PnL, fees and deficits covered; nothing appears or vanishes
            assert math.isclose(cash, ledger.deposits[account][asset] + ledger.realised[account][asset]
                                - ledger.fees[account][asset] + ledger.covered[account][asset],
                                rel_tol=1e-9, abs_tol=1e-6), (account, asset)
        assert ledger.covered_usd[account] <= deficit[account] + 1e-3, account  # covered only what was a deficit
        assert r.final_equity[account] > -1e-3, account
