"""The anti-gaming consequences in the closed loop: jelly-2025's pump is delisted and its actor
keeps nothing; without the backstop it walks off with the venue's bad debt; and a frozen
account's later withdrawal is refused."""

from __future__ import annotations

import dataclasses
import math

import pytest

from pipelines.backtest.run import engine_params, simulate
from pipelines.backtest.simulate import Simulation, VenueSetup, sequence_events
from pipelines.detect.detectors import DetectorParams
from pipelines.engine.engine import EngineParams
from pipelines.scenarios import library
from pipelines.scenarios.generate import generate

T0 = 1_795_000_000_000
ACTOR = ("pump-long-01", "pump-short-01")


@pytest.fixture(scope="module")
def jelly():
    g = generate(library.get("jelly-2025"))
    params = engine_params(g)
    ladder_only = dataclasses.replace(params, detectors=dataclasses.replace(params.detectors,
                                                                            pump_min_move=math.inf))
    deposits = {a.account: a.collateral_usd for a in g.accounts}
    runs = {"with": simulate(g, with_backstop=True, params=params, progress=False),
            "ladder only": simulate(g, with_backstop=True, params=ladder_only, progress=False),
            "without": simulate(g, with_backstop=False, progress=False)}
    return runs, {name: sum(r.final_equity[a] - deposits[a] for a in ACTOR) for name, r in runs.items()}


def test_the_pump_is_delisted_and_its_actor_keeps_nothing(jelly) -> None:
    runs, actor = jelly
    with_ = runs["with"]
    assert with_.breaches["mark_manipulation"] == 1 and with_.actions["delist_settle"] == 1
    assert with_.bad_debt_usd == 0.0 and actor["with"] <= 0.0


def test_without_the_backstop_the_actor_walks_off_with_the_bad_debt(jelly) -> None:
    runs, actor = jelly
    assert runs["without"].bad_debt_usd > 1e6 and actor["without"] > 1e6


def test_the_ladder_alone_leaves_the_actor_its_profit(jelly) -> None:
    runs, actor = jelly
    assert "delist_settle" not in runs["ladder only"].actions
    assert actor["ladder only"] > 1e6


def test_a_frozen_account_s_later_withdrawal_is_refused() -> None:
    """A 10 BTC long withdraws most of its collateral into a margin breach, gets frozen, then
    tries again: the venue refuses, the balance stays."""
    events = [("backstop.market.index", "IndexPrice",
               {"underlying": "BTC", "index_name": "btc", "price": 60_000.0, "event_time_ms": T0 + s * 1_000})
              for s in range(12)]
    deposit = {"account": "whale", "asset": "USDC", "amount": 200_000.0, "change": 200_000.0, "reason": "deposit",
               "sequence": 1, "event_time_ms": T0 + 1}
    events += [("backstop.collateral", "CollateralUpdate", deposit),
               ("backstop.positions", "PositionUpdate",
                {"account": "whale", "instrument": "BTC-PERPETUAL", "quantity": 10.0, "average_price": 60_000.0,
                 "sequence": 1, "event_time_ms": T0 + 1})]
    for n, (amount, t) in enumerate(((40_000.0, T0 + 2_500), (20_000.0, T0 + 8_500))):
        before = 200_000.0 if n == 0 else 40_000.0
        events.append(("backstop.collateral", "CollateralUpdate",
                       {"account": "whale", "asset": "USDC", "amount": amount, "change": amount - before,
                        "reason": "withdrawal", "sequence": 2 + n, "event_time_ms": t}))
    events.sort(key=lambda e: e[2]["event_time_ms"])
    sim = Simulation("freeze", VenueSetup(insurance_fund_usd=0.0), with_backstop=True,
                     params=EngineParams(detectors=DetectorParams(margin_grace_ms=0)))
    result = sim.run(sequence_events(events))
    assert result.actions["freeze_withdrawals"] == 1 and result.refused_withdrawals == 1
    assert sim.ledger.deposits["whale"]["USDC"] == 40_000.0  # the second withdrawal never left
