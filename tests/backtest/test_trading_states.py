"""The backtest's venue keeps each underlying's (and delisted instrument's) trading state from the
actions it receives and judges every order with ``policy.circuit.order_refusal``, as the
executor's venue does: while halted or reduce-only only an order that shrinks a position without
flipping it trades."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines.backtest.run import engine_params, venue_for
from pipelines.backtest.simulate import Simulation, VenueSetup, sequence_events
from pipelines.policy.actions import Action, ActionType, make_action
from pipelines.policy.signing import SigningKey
from pipelines.risk.instruments import underlying_of
from pipelines.scenarios import library
from pipelines.scenarios.generate import generate

KEY = SigningKey("test", b"trading-states-test-key")
T0 = 1_795_000_000_000
PERP = "BTC-PERPETUAL"


def _venue() -> Simulation:
    """A venue without the engine, holding one account long 5 BTC-PERPETUAL at 60k, deep book."""
    levels = [{"price": 60_000.0 * (1 + s * 0.001), "quantity": 100.0} for s in range(1, 6)]
    events = [
        ("backstop.market.index", "IndexPrice",
         {"underlying": "BTC", "index_name": "btc", "price": 60_000.0, "event_time_ms": T0}),
        ("backstop.market.depth", "OrderBookDepth",
         {"instrument": PERP, "bids": [{**lvl, "price": 120_000.0 - lvl["price"]} for lvl in levels],
          "asks": levels, "event_time_ms": T0}),
        ("backstop.collateral", "CollateralUpdate",
         {"account": "acct", "asset": "USDC", "amount": 1e6, "change": 1e6, "reason": "deposit", "sequence": 1,
          "event_time_ms": T0}),
        ("backstop.positions", "PositionUpdate",
         {"account": "acct", "instrument": PERP, "quantity": 5.0, "average_price": 60_000.0, "sequence": 1,
          "event_time_ms": T0}),
    ]
    sim = Simulation("states", VenueSetup(insurance_fund_usd=0.0), with_backstop=False)
    sim.run(sequence_events(events))
    return sim


def _market(sim: Simulation, kind: ActionType, target: str = "BTC", **fields: Any) -> None:
    [report] = sim.execute(make_action(KEY, kind, target, T0 + 1_000, **fields))
    assert report["status"] == "accepted"


def _order(sim: Simulation, kind: ActionType, side: str, quantity: float) -> dict[str, Any]:
    action: Action = make_action(KEY, kind, "acct", T0 + 2_000, instrument=PERP, side=side, quantity=quantity,
                                 params={"mark": "60000.0", "equity_usd": "1000000.0"})
    return sim.execute(action)[0]


def _held(sim: Simulation) -> float:
    return sim.ledger.positions["acct"].get(PERP, (0.0, 0.0))[0]


@pytest.mark.parametrize(("state", "reason"), [(ActionType.HALT, "halted"),
                                               (ActionType.MARKET_REDUCE_ONLY, "reduce-only")])
def test_a_risk_increasing_hedge_is_refused_a_reducing_one_filled(state: ActionType, reason: str) -> None:
    sim = _venue()
    _market(sim, state)
    for side, quantity in (("buy", 1.0), ("sell", 6.0)):  # grows the long; flips it short
        report = _order(sim, ActionType.DELTA_HEDGE, side, quantity)
        assert report["status"] == "rejected" and report["filled_quantity"] == 0.0
        assert report["reason"].startswith(PERP) and reason in report["reason"]
        assert _held(sim) == 5.0
    report = _order(sim, ActionType.DELTA_HEDGE, "sell", 2.0)
    assert report["status"] == "filled" and _held(sim) == pytest.approx(3.0)
    assert sim.result.refused_orders == 2


def test_after_resume_every_hedge_fills() -> None:
    sim = _venue()
    _market(sim, ActionType.HALT)
    _market(sim, ActionType.MARKET_REDUCE_ONLY)
    _market(sim, ActionType.RESUME)
    assert _order(sim, ActionType.DELTA_HEDGE, "buy", 1.0)["status"] == "filled"
    assert _order(sim, ActionType.DELTA_HEDGE, "sell", 10.0)["status"] == "filled"
    assert _held(sim) == pytest.approx(-4.0) and sim.result.refused_orders == 0


def test_a_liquidation_while_halted_closes_at_most_the_position() -> None:
    """Asked to sell more than the account holds, it closes the long and never flips it short."""
    sim = _venue()
    _market(sim, ActionType.HALT)
    report = _order(sim, ActionType.PARTIAL_LIQUIDATION, "sell", 8.0)
    assert report["status"] in ("filled", "partially_filled")
    assert 0.0 <= _held(sim) < 5.0 and sim.result.refused_orders == 0


def test_a_delisted_instrument_stays_halted_when_its_underlying_resumes() -> None:
    sim = _venue()
    delist = make_action(KEY, ActionType.DELIST_SETTLE, "BTC", T0 + 1_000, instrument=PERP,
                         params={"settle_price": "59000.0"})
    assert [r["status"] for r in sim.execute(delist)] == ["filled"] and _held(sim) == 0.0
    _market(sim, ActionType.RESUME)
    report = _order(sim, ActionType.DELTA_HEDGE, "buy", 1.0)
    assert report["status"] == "rejected"
    assert report["reason"] == f"{PERP} halted: only orders that reduce a position are accepted"


def test_in_the_closed_loop_no_hedge_adds_risk_while_its_underlying_is_restricted() -> None:
    """black-thursday-2020 halts BTC and ETH while the engine keeps hedging: the engine sends no
    hedge that would grow or flip a position then (the venue would refuse it), and the reducing
    ones it sends are not refused."""
    g = generate(library.get("black-thursday-2020"))
    restricted: set[str] = set()
    judged: dict[str, bool] = {}  # action id -> whether it adds risk while its underlying is restricted
    outcomes: dict[str, dict[str, Any]] = {}

    def on_output(kind: str, value: Any) -> None:
        if kind == "action" and value.action_type in (ActionType.HALT, ActionType.MARKET_REDUCE_ONLY):
            restricted.add(value.target)
        elif kind == "action" and value.action_type is ActionType.RESUME:
            restricted.discard(value.target)
        elif (kind == "action" and value.action_type is ActionType.DELTA_HEDGE
              and underlying_of(value.instrument) in restricted):
            held = sim.ledger.positions[value.target].get(value.instrument, (0.0, 0.0))[0]
            signed = value.quantity if value.side == "buy" else -value.quantity
            judged[value.action_id] = not (held * signed < 0 and abs(signed) <= abs(held))
        elif kind == "execution":
            outcomes.setdefault(value["action_id"], value)

    sim = Simulation(g.scenario.name, venue_for(g.scenario), with_backstop=True, params=engine_params(g),
                     on_output=on_output)
    sim.run(sequence_events(g.events))
    assert judged and not any(judged.values())
    assert all("halted" not in (outcomes[a]["reason"] or "") for a in judged)
    assert sim.result.refused_orders == 0
