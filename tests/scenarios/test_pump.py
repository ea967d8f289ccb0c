"""jelly-2025 is a thin-book pump: the actor's buys against the thin book lift the perpetual's mark
above its index, the venue's open interest is published and mostly one account's, with that
holder's share; no other scenario's marks change."""

from __future__ import annotations

import numpy as np

from pipelines.engine.engine import EngineParams
from pipelines.replay.inprocess import replay
from pipelines.scenarios import library
from pipelines.scenarios.generate import generate, pump_marks, write_recording
from pipelines.scenarios.library import Pump
from pipelines.scenarios.model import UnderlyingPath

JELLY = "JELLY-PERPETUAL"


def marks_of(generated, instrument: str) -> list[dict]:
    return [v for _, r, v in generated.events if r == "MarkPrice" and v["instrument"] == instrument]


def test_jelly_marks_run_ahead_of_the_index_during_the_pump_only() -> None:
    g = generate(library.get("jelly-2025"))
    marks = marks_of(g, JELLY)
    premium = np.array([m["mark_price"] / m["index_price"] - 1.0 for m in marks])
    start = g.t0 + int(g.scenario.underlyings[0].start * g.scenario.duration_s) * 1000
    before = np.array([m["event_time_ms"] < start for m in marks])
    assert (premium[before] == 0).all() and (premium >= 0).all()
    assert premium.max() > 0.05  # the buys lift the mark by several per cent on the thin book


def test_jelly_open_interest_is_published_and_one_account_holds_most_of_it() -> None:
    g = generate(library.get("jelly-2025"))
    interest = {m["open_interest"] for m in marks_of(g, JELLY)}
    assert len(interest) == 1
    (oi,) = interest
    short = next(a for a in g.accounts if a.account == "pump-short-01")
    assert -short.legs[0][1] / oi > 0.5
    assert {m["open_interest"] for m in marks_of(g, "BTC-PERPETUAL")} == {None}  # published for the pump only


def test_other_scenarios_marks_are_their_index_without_open_interest() -> None:
    for scenario in library.SCENARIOS:
        if scenario.pump is not None:
            continue
        g = generate(scenario)
        marks = [v for _, r, v in g.events if r == "MarkPrice"]
        assert all(m["mark_price"] == m["index_price"] and m["open_interest"] is None
                   and m["largest_holder_share"] is None for m in marks), scenario.name
        assert not [a for a in g.accounts if a.kind.startswith("pump")]


def test_the_premium_is_the_price_impact_of_the_buys_against_the_depth() -> None:
    spec = UnderlyingPath("JELLY", 0.05, 4.0, start=0.2, length=0.3)
    prices = np.full(301, 0.05)
    deep, thin = np.full(301, 400_000.0), np.full(301, 200_000.0)
    pump = Pump("JELLY", buy_usd=1_000_000.0, max_premium=10.0)
    on_deep = pump_marks(pump, spec, prices, deep, 1) / prices - 1.0
    on_thin = pump_marks(pump, spec, prices, thin, 1) / prices - 1.0
    assert on_deep.max() > 0 and np.allclose(on_thin, 2 * on_deep)
    # a minute of all the buys at once is 1 % per depth's worth: 1M over 200k -> 5 %
    assert on_thin.max() <= 0.05 + 1e-12
    capped = pump_marks(Pump("JELLY", buy_usd=1e9, max_premium=0.5), spec, prices, thin, 1) / prices - 1.0
    assert np.isclose(capped.max(), 0.5)


def test_jelly_publishes_its_largest_holder_s_share_of_the_open_interest() -> None:
    g = generate(library.get("jelly-2025"))
    (oi,) = {m["open_interest"] for m in marks_of(g, JELLY)}
    (share,) = {m["largest_holder_share"] for m in marks_of(g, JELLY)}
    largest = max(abs(qty) for a in g.accounts for name, qty, _ in a.legs if name == JELLY)
    assert share == round(largest / oi, 6) and 0.5 <= share <= 1.0
    assert {m["largest_holder_share"] for m in marks_of(g, "BTC-PERPETUAL")} == {None}


def test_jelly_gives_the_same_actions_however_its_accounts_are_partitioned(tmp_path) -> None:
    """The pump's delisting is decided on market data alone, so one engine and twelve partitions
    send the same actions, the delist_settle among them."""
    g = generate(library.get("jelly-2025"))
    path = tmp_path / "jelly.avro"
    write_recording(g, path)
    params = EngineParams(hedged_accounts=g.hedged)
    one, twelve = (replay(path, params=params, partitions=n) for n in (1, 12))
    assert sorted(a.action_id for a in twelve.actions) == sorted(a.action_id for a in one.actions)
    assert [a.action_type for a in one.actions].count("delist_settle") == 1
