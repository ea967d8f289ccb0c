"""The simulated venue enforces the circuit's three trading states: after a halt and in the
reduce-only period that follows it, an order that would increase a position is refused with a
reason and one that reduces it is filled; after a resume every order is accepted again. A state
applies only if newer than the state of record for its name (at one time the stricter wins), a
repeated action id gets its first answer, and a ledger from before state times still opens."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from pipelines.execution.venue import UNKNOWN_TIME_MS, Order, SimulatedVenue, SimulatedVenueConfig, StateChange
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


def set_state(venue: SimulatedVenue, name: str, state: TradingState, at_ms: int) -> StateChange:
    """A state action on ``name`` at event time ``at_ms``, its id unique to the three."""
    return venue.set_trading_state(name, state, at_ms, f"{name}/{state.value}/{at_ms}")


@pytest.mark.parametrize("state, reason", [(TradingState.HALTED, "halted"), (TradingState.REDUCING, "reduce-only")])
def test_a_restricted_underlying_refuses_new_risk_and_fills_exits(venue: SimulatedVenue, state: TradingState,
                                                                   reason: str) -> None:
    set_state(venue, "BTC", state, 1)
    assert venue.trading_state("BTC-PERPETUAL") is state
    added, flipped, reduced = venue.place_order(order(1, "buy", 1.0)), venue.place_order(order(2, "sell", 3.0)), \
        venue.place_order(order(3, "sell", 1.5))
    assert (added.status, flipped.status, reduced.status) == ("rejected", "rejected", "filled")
    assert reason in added.reason and reason in flipped.reason
    assert venue.positions("long") == {"BTC-PERPETUAL": 0.5}


def test_halt_then_reduce_only_then_resume(venue: SimulatedVenue) -> None:
    statuses = []
    for n, state in enumerate((TradingState.HALTED, TradingState.REDUCING, TradingState.ACTIVE)):
        set_state(venue, "BTC", state, n)
        statuses.append(venue.place_order(order(n, "buy", 1.0)).status)
    assert statuses == ["rejected", "rejected", "filled"]
    assert venue.trading_state("BTC-PERPETUAL") is TradingState.ACTIVE
    assert venue.positions("long") == {"BTC-PERPETUAL": 3.0}


def test_the_stricter_of_instrument_and_underlying_states_applies(venue: SimulatedVenue) -> None:
    set_state(venue, "BTC-PERPETUAL", TradingState.REDUCING, 1)
    set_state(venue, "BTC", TradingState.HALTED, 2)
    assert venue.trading_state("BTC-PERPETUAL") is TradingState.HALTED
    set_state(venue, "BTC", TradingState.ACTIVE, 3)
    assert venue.trading_state("BTC-PERPETUAL") is TradingState.REDUCING
    assert venue.trading_state("ETH-PERPETUAL") is TradingState.ACTIVE


def test_trading_states_are_shared_through_the_ledger(venue: SimulatedVenue, tmp_path: Path) -> None:
    """Every executor process on the host opens the same ledger: a halt one applies, all enforce."""
    set_state(venue, "BTC", TradingState.REDUCING, 1)
    other = SimulatedVenue(venue.config, tmp_path / "ledger.sqlite")
    assert other.trading_state("BTC-PERPETUAL") is TradingState.REDUCING


def test_an_older_resume_after_a_newer_halt_moves_nothing(venue: SimulatedVenue) -> None:
    set_state(venue, "BTC", TradingState.HALTED, 3_000)
    change = set_state(venue, "BTC", TradingState.ACTIVE, 2_000)
    assert not change.applied and change.reason.startswith("stale: BTC halted at 3000")
    assert venue.trading_state("BTC-PERPETUAL") is TradingState.HALTED


def test_an_older_halt_after_a_newer_resume_moves_nothing(venue: SimulatedVenue) -> None:
    """ACTIVE is kept with its time: an old halt cannot re-halt the market it cleared."""
    set_state(venue, "BTC", TradingState.ACTIVE, 2_000)
    assert not set_state(venue, "BTC", TradingState.HALTED, 1_000).applied
    assert venue.trading_state("BTC-PERPETUAL") is TradingState.ACTIVE
    assert venue.place_order(order(1, "buy", 1.0)).status == "filled"


@pytest.mark.parametrize("first, second", [(TradingState.ACTIVE, TradingState.HALTED),
                                           (TradingState.HALTED, TradingState.ACTIVE),
                                           (TradingState.REDUCING, TradingState.HALTED),
                                           (TradingState.HALTED, TradingState.REDUCING)])
def test_at_one_time_the_stricter_state_wins_in_either_order(venue: SimulatedVenue, first: TradingState,
                                                             second: TradingState) -> None:
    set_state(venue, "BTC", first, 5)
    set_state(venue, "BTC", second, 5)
    assert venue.trading_state("BTC-PERPETUAL") is max(first, second, key=list(TradingState).index)


def test_a_repeated_action_id_gets_its_first_answer_and_moves_nothing(venue: SimulatedVenue) -> None:
    """Resume@2 applied, halt@3 applied, resume@2's id again: still halted, answered as the first time."""
    first = venue.set_trading_state("BTC", TradingState.ACTIVE, 2, "resume-2")
    set_state(venue, "BTC", TradingState.HALTED, 3)
    assert venue.set_trading_state("BTC", TradingState.ACTIVE, 2, "resume-2") == first == StateChange(True)
    assert venue.trading_state("BTC-PERPETUAL") is TradingState.HALTED


def test_a_ledger_from_before_state_times_opens_and_keeps_its_states(tmp_path: Path) -> None:
    """Its halts hold, at a time older than any action: the next state action on the name applies."""
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE trading_states (name TEXT PRIMARY KEY, state TEXT NOT NULL)")
        db.executemany("INSERT INTO trading_states VALUES (?, ?)", [("BTC", "halted"), ("ETH-PERPETUAL", "reducing")])
    venue = SimulatedVenue(SimulatedVenueConfig(books={"BTC-PERPETUAL": BOOK}), path)
    assert venue.trading_state("BTC-PERPETUAL") is TradingState.HALTED
    assert venue.trading_state("ETH-PERPETUAL") is TradingState.REDUCING
    assert venue._db.execute("SELECT as_of_ms FROM trading_states WHERE name = 'BTC'").fetchone() == (UNKNOWN_TIME_MS,)
    assert set_state(venue, "BTC", TradingState.ACTIVE, 0).applied
    assert venue.trading_state("BTC-PERPETUAL") is TradingState.ACTIVE
    again = SimulatedVenue(venue.config, path)  # migrated once: a second open changes nothing
    assert again.trading_state("ETH-PERPETUAL") is TradingState.REDUCING
