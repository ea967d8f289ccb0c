"""The bankruptcy check screens every holder of an underlying at once (``Ledger.maybe_bankrupt``):
it must return every holder with positions whose ``Ledger.equity`` (the reference) is at or below
zero, including accounts within rounding of zero, on random books, markets and clocks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.backtest.simulate import Ledger
from pipelines.risk.instruments import parse_instrument
from pipelines.scenarios.generate import option_definition

EXPIRY = "25JUN21"
EXPIRY_MS = parse_instrument(f"BTC-{EXPIRY}-40000-C").expiry_ms
T0 = EXPIRY_MS - 20 * 86_400_000
INVERSE_PUT = f"BTC-{EXPIRY}-30000-P"
NAMES = ["BTC-PERPETUAL", "ETH-PERPETUAL", f"BTC-{EXPIRY}-40000-C", INVERSE_PUT, f"ETH-{EXPIRY}-2000-P"]

positions = st.lists(st.tuples(st.sampled_from(NAMES), st.floats(-50.0, 50.0).filter(lambda q: abs(q) > 1e-6),
                               st.floats(0.01, 60_000.0)), min_size=1, max_size=4)
accounts = st.lists(st.tuples(positions, st.sampled_from(["USDC", "BTC", "ETH"]), st.floats(-1e6, 1e6),
                              st.sampled_from(["exact", "tiny above", "tiny below", "as drawn"])),
                    min_size=1, max_size=8)


def _ledger() -> Ledger:
    ledger = Ledger()
    ledger.apply("InstrumentDefinition", option_definition(INVERSE_PUT, "BTC", 30_000.0, EXPIRY_MS, False, T0))
    ledger.apply("IndexPrice", {"underlying": "ETH", "price": 2_100.0, "event_time_ms": T0})
    ledger.apply("IndexPrice", {"underlying": "BTC", "price": 41_000.0, "event_time_ms": T0})
    return ledger


def _open(ledger: Ledger, account: str, held: list, asset: str, amount: float, near_zero: str) -> None:
    ledger.apply("CollateralUpdate", {"account": account, "asset": asset, "amount": amount, "event_time_ms": T0})
    for name, qty, avg in held:
        ledger.apply("PositionUpdate", {"account": account, "instrument": name, "quantity": qty,
                                        "average_price": avg, "event_time_ms": T0})
    if near_zero != "as drawn":  # a USDC balance that brings the equity to zero, or within a few ulps of it
        ledger.apply("CollateralUpdate", {"account": account, "asset": "USDC", "amount": 0.0, "event_time_ms": T0})
        gap = -ledger.equity(account)
        nudge = {"exact": 0.0, "tiny above": 1e-12, "tiny below": -1e-12}[near_zero]
        gap = gap * (1 + 2 * nudge) + nudge
        ledger.apply("CollateralUpdate", {"account": account, "asset": "USDC", "amount": gap, "event_time_ms": T0})


@settings(max_examples=150, deadline=None)
@given(accounts, st.lists(st.tuples(st.sampled_from(["BTC", "ETH"]), st.floats(0.3, 3.0), st.floats(0.2, 2.0)),
                          min_size=1, max_size=4))
def test_the_screen_returns_every_holder_whose_equity_is_at_or_below_zero(drawn, moves) -> None:
    ledger = _ledger()
    for k, (held, asset, amount, near_zero) in enumerate(drawn):
        _open(ledger, f"acct-{k}", held, asset, amount, near_zero)
    for step, (underlying, move, iv) in enumerate(moves, start=1):
        for check in ("BTC", "ETH"):
            holders = sorted(a for a in ledger.holders[check] if ledger.positions[a])
            screened = ledger.maybe_bankrupt(check)
            assert screened == sorted(screened) and set(screened) <= set(holders)
            assert {a for a in holders if ledger.equity(a) <= 0} <= set(screened)
        ledger.apply("IndexPrice", {"underlying": underlying, "price": ledger.index[underlying] * move,
                                    "event_time_ms": T0 + step * 1000})
        ledger.apply("VolatilityUpdate", {"underlying": underlying, "instrument": None, "iv": iv,
                                          "event_time_ms": T0 + step * 1000})


def test_the_screen_follows_trades_and_leaves_out_accounts_with_room() -> None:
    ledger = _ledger()
    _open(ledger, "rich", [("BTC-PERPETUAL", 1.0, 41_000.0)], "USDC", 1e6, "as drawn")
    _open(ledger, "broke", [("BTC-PERPETUAL", 1.0, 41_000.0)], "USDC", 0.0, "exact")
    assert ledger.maybe_bankrupt("BTC") == ["broke"]
    ledger.trade("broke", "BTC-PERPETUAL", -1.0, 41_000.0)  # flat: no longer a holder with positions
    assert ledger.maybe_bankrupt("BTC") == []
    ledger.trade("rich", "BTC-PERPETUAL", 100.0, 41_000.0)
    ledger.apply("IndexPrice", {"underlying": "BTC", "price": 30_000.0, "event_time_ms": T0 + 1})
    assert ledger.equity("rich") < 0
    assert ledger.maybe_bankrupt("BTC") == ["rich"]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_an_account_the_screen_cannot_value_is_left_to_the_reference(bad) -> None:
    ledger = _ledger()
    _open(ledger, "a", [("BTC-PERPETUAL", 1.0, 41_000.0)], "USDC", bad, "as drawn")
    assert ledger.maybe_bankrupt("BTC") == ["a"]
