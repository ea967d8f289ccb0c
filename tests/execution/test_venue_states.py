"""The simulated venue enforces the circuit's three trading states: after a halt and in the
reduce-only period that follows it, an order that would increase a position is refused with a
reason and one that reduces it is filled; after a resume every order is accepted again."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.execution.venue import Order, SimulatedVenue, SimulatedVenueConfig
from pipelines.policy.circuit import TradingState

BOOK = {"instrument": "BTC-PERPETUAL", "bids": [{"price": 60_000 - i, "quantity": 50.0} for i in range(1, 20)],
        "asks": [{"price": 60_000 + i, "quantity": 50.0} for i in range(1, 20)]}


@pytest.fixture
def venue(tmp_path: Path) -> SimulatedVenue:
    venue = SimulatedVenue(SimulatedVenueConfig(books={"BTC-PERPETUAL": BOOK}), tmp_path / "ledger.sqlite")
    venue.seed_position("long", "BTC-PERPETUAL", 2.0)
    return venue


def order(n: int, side: str, quantity: float) -> Order:
    return Order(f"o{n}", "long", "BTC-PERPETUAL", side, quantity)


@pytest.mark.parametrize("state, reason", [(TradingState.HALTED, "halted"), (TradingState.REDUCING, "reduce-only")])
def test_a_restricted_underlying_refuses_new_risk_and_fills_exits(venue: SimulatedVenue, state: TradingState,
                                                                   reason: str) -> None:
    venue.set_trading_state("BTC", state)
    assert venue.trading_state("BTC-PERPETUAL") is state
    added, flipped, reduced = venue.place_order(order(1, "buy", 1.0)), venue.place_order(order(2, "sell", 3.0)), \
        venue.place_order(order(3, "sell", 1.5))
    assert (added.status, flipped.status, reduced.status) == ("rejected", "rejected", "filled")
    assert reason in added.reason and reason in flipped.reason
    assert venue.positions("long") == {"BTC-PERPETUAL": 0.5}


def test_halt_then_reduce_only_then_resume(venue: SimulatedVenue) -> None:
    statuses = []
    for n, state in enumerate((TradingState.HALTED, TradingState.REDUCING, TradingState.ACTIVE)):
        venue.set_trading_state("BTC", state)
        statuses.append(venue.place_order(order(n, "buy", 1.0)).status)
    assert statuses == ["rejected", "rejected", "filled"]
    assert venue.trading_state("BTC-PERPETUAL") is TradingState.ACTIVE
    assert venue.positions("long") == {"BTC-PERPETUAL": 3.0}


def test_the_stricter_of_instrument_and_underlying_states_applies(venue: SimulatedVenue) -> None:
    venue.set_trading_state("BTC-PERPETUAL", TradingState.REDUCING)
    venue.set_trading_state("BTC", TradingState.HALTED)
    assert venue.trading_state("BTC-PERPETUAL") is TradingState.HALTED
    venue.set_trading_state("BTC", TradingState.ACTIVE)
    assert venue.trading_state("BTC-PERPETUAL") is TradingState.REDUCING
    assert venue.trading_state("ETH-PERPETUAL") is TradingState.ACTIVE


def test_trading_states_are_shared_through_the_ledger(venue: SimulatedVenue, tmp_path: Path) -> None:
    """Every executor process on the host opens the same ledger: a halt one applies, all enforce."""
    venue.set_trading_state("BTC", TradingState.REDUCING)
    other = SimulatedVenue(venue.config, tmp_path / "ledger.sqlite")
    assert other.trading_state("BTC-PERPETUAL") is TradingState.REDUCING
