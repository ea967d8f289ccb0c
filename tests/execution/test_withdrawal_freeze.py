"""Withdrawal freezes at the venue: a ``freeze_withdrawals`` action makes the simulated venue
refuse the account's withdrawals, with the reason; a ``delist_settle`` halts its instrument."""

from __future__ import annotations

from pipelines.execution.executor import Executor, ExecutorConfig
from pipelines.execution.venue import Order, SimulatedVenue, SimulatedVenueConfig
from pipelines.policy.actions import ActionType, make_action
from pipelines.policy.circuit import TradingState
from pipelines.policy.signing import SigningKey

KEY = SigningKey("test", b"executor-test-signing-key-01")
DEPTH = {"instrument": "JELLY-PERPETUAL", "bids": [{"price": 0.049, "quantity": 1e6}],
         "asks": [{"price": 0.051, "quantity": 1e6}], "bands": [], "sequence": 1, "event_time_ms": 0}
CONFIG = ExecutorConfig("backstop.actions", "backstop.executions", "backstop.deadletter")


def venue(tmp_path) -> SimulatedVenue:
    return SimulatedVenue(SimulatedVenueConfig(books={"JELLY-PERPETUAL": DEPTH}), tmp_path / "ledger.sqlite")


def test_a_frozen_account_s_withdrawal_is_refused_with_the_reason_and_others_are_not(tmp_path) -> None:
    v = venue(tmp_path)
    assert v.request_withdrawal("whale", "USDC", 1e6).status == "accepted"
    v.freeze_withdrawals("whale", "withdraw_then_breach")
    v.freeze_withdrawals("whale", "another reason")  # idempotent: the first reason stays
    refused = v.request_withdrawal("whale", "USDC", 1e6)
    assert (refused.status, refused.reason) == ("rejected", "withdrawals frozen: withdraw_then_breach")
    assert v.request_withdrawal("someone-else", "USDC", 1e6).status == "accepted"
    # the freeze is the venue's state: another process on the same ledger refuses too
    assert venue(tmp_path).request_withdrawal("whale", "USDC", 1.0).status == "rejected"


def test_the_executor_freezes_at_the_venue_and_halts_a_delisted_instrument(tmp_path) -> None:
    v = venue(tmp_path)
    executor = Executor(None, None, None, v, KEY, CONFIG)  # type: ignore[arg-type]  # only the venue is used
    freeze = make_action(KEY, ActionType.FREEZE_WITHDRAWALS, "whale", 1_000, breach_ids=["b1"],
                         params={"add_on": "1.0", "reason": "withdraw_then_breach"})
    assert [r["status"] for r in executor._execute(freeze)] == ["accepted"]
    assert v.request_withdrawal("whale", "USDC", 5.0).reason == "withdrawals frozen: withdraw_then_breach"

    delist = make_action(KEY, ActionType.DELIST_SETTLE, "JELLY", 2_000, instrument="JELLY-PERPETUAL",
                         breach_ids=["b2"], params={"instrument": "JELLY-PERPETUAL", "settle_price": "0.05"})
    assert [r["status"] for r in executor._execute(delist)] == ["accepted"]
    assert v.trading_state("JELLY-PERPETUAL") is TradingState.HALTED
    order = v.place_order(Order("o1", "pumper", "JELLY-PERPETUAL", "buy", 1_000.0))
    halted = "JELLY-PERPETUAL halted: only orders that reduce a position are accepted"
    assert (order.status, order.reason) == ("rejected", halted)
