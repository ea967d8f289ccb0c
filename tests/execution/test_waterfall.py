from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.execution.book import OrderBook
from pipelines.execution.waterfall import (
    AdlCandidate,
    InsuranceFund,
    LiquidityPool,
    LiquidityProvider,
    WaterfallParams,
    liquidate,
)

MARK = 100.0


def thin_book(size: float = 2.0) -> OrderBook:
    return OrderBook(bids=[(MARK - i * 0.5, size) for i in range(1, 6)],
                     asks=[(MARK + i * 0.5, size) for i in range(1, 6)])


def test_deep_book_absorbs_everything_in_clips_within_the_cap() -> None:
    deep = OrderBook(bids=[(MARK - i * 0.1, 100.0) for i in range(1, 40)], asks=[(MARK + 0.1, 100.0)])
    result = liquidate("a", "X", 500.0, MARK, 10_000.0, deep, LiquidityPool([]), InsuranceFund(0.0), [], 0)
    assert result.quantity_by_step() == {"book": pytest.approx(500.0)}
    assert all(f.price >= MARK * 0.98 for f in result.fills)  # levels under 98 are never touched
    assert len(result.fills) > 1  # clipped, not dumped
    assert result.bad_debt_usd == 0 and result.fund_draw_usd == 0


def test_thin_book_routes_remainder_to_lps_then_fund_then_adl_and_adds_up() -> None:
    pool = LiquidityPool([
        LiquidityProvider("lp-a", capacity_usd=3_000.0, per_minute_usd=100_000.0, discount=0.03),
        LiquidityProvider("lp-b", capacity_usd=1_000.0, per_minute_usd=100_000.0, discount=0.05),
        LiquidityProvider("lp-eth-only", capacity_usd=1e9, per_minute_usd=1e9, discount=0.01,
                          instruments=frozenset({"ETH-PERPETUAL"})),
    ])
    fund = InsuranceFund(balance_usd=200.0)
    shorts = [AdlCandidate("winner", -30.0, avg_price=150.0, equity_usd=2_000.0),
              AdlCandidate("modest", -30.0, avg_price=110.0, equity_usd=50_000.0),
              AdlCandidate("loser", -30.0, avg_price=90.0, equity_usd=2_000.0),
              AdlCandidate("same-side", 30.0, avg_price=50.0, equity_usd=2_000.0)]
    result = liquidate("whale", "BTC-PERPETUAL", 100.0, MARK, equity_usd=-500.0, book=thin_book(),
                       pool=pool, fund=fund, adl_candidates=shorts, start_ms=0,
                       params=WaterfallParams(max_clips=5))
    steps = result.quantity_by_step()
    assert list(steps) == ["book", "lp", "insurance_fund", "adl"]
    assert sum(steps.values()) == pytest.approx(100.0)
    assert steps["lp"] == pytest.approx(40.0)  # both BTC LPs exhausted: $4,000 at mark 100
    assert pool.absorbed_usd["lp-eth-only"] == 0
    assert fund.balance_usd == pytest.approx(0.0) and result.fund_draw_usd == pytest.approx(200.0)
    adl = [f for f in result.fills if f.step == "adl"]
    assert [f.counterparty for f in adl][0] == "winner"  # most profit x leverage first
    assert "loser" not in {f.counterparty for f in adl} and "same-side" not in {f.counterparty for f in adl}
    bankruptcy = {f.price for f in result.fills if f.step in ("insurance_fund", "adl")}
    assert len(bankruptcy) == 1 and bankruptcy.pop() > MARK  # a bankrupt long closes above mark
    assert result.bad_debt_usd == 0


def test_without_adl_counterparties_the_unfunded_loss_is_bad_debt() -> None:
    fund = InsuranceFund(balance_usd=100.0)
    result = liquidate("a", "X", 50.0, MARK, -1_000.0, OrderBook([], []), LiquidityPool([]), fund, [], 0)
    assert result.quantity_by_step() == {"insurance_fund": pytest.approx(50.0)}
    assert result.fund_draw_usd == pytest.approx(100.0)
    assert result.bad_debt_usd == pytest.approx(900.0)


def test_lp_per_minute_limit_resets_after_a_minute() -> None:
    lp = LiquidityProvider("lp", capacity_usd=1e9, per_minute_usd=1_000.0, discount=0.02)
    pool = LiquidityPool([lp])
    assert pool.live_capacity(lp, 0) == 1_000.0
    pool.record(lp, 0, 1_000.0)
    assert pool.live_capacity(lp, 30_000) == 0.0
    assert pool.live_capacity(lp, 60_001) == 1_000.0


@settings(max_examples=100)
@given(position=st.floats(-500, 500).filter(lambda q: abs(q) > 1e-3), equity=st.floats(-5_000, 20_000),
       depth=st.floats(0, 50), lp_capacity=st.floats(0, 20_000), fund_balance=st.floats(0, 5_000),
       adl_size=st.floats(0, 300))
def test_fills_always_add_up_to_the_position(position, equity, depth, lp_capacity, fund_balance, adl_size) -> None:
    pool = LiquidityPool([LiquidityProvider("lp", lp_capacity, lp_capacity, 0.04)])
    sign = 1 if position > 0 else -1
    candidates = [AdlCandidate("c", -sign * adl_size, MARK * (1 + 0.5 * sign), 10_000.0)] if adl_size else []
    fund = InsuranceFund(fund_balance)
    result = liquidate("a", "X", position, MARK, equity, thin_book(depth), pool, fund, candidates, 0)
    assert sum(f.quantity for f in result.fills) == pytest.approx(abs(position), rel=1e-9, abs=1e-9)
    assert result.bad_debt_usd >= -1e-9 and fund.balance_usd >= -1e-9
    assert result.fund_draw_usd <= fund_balance + 1e-9


def test_partial_round_of_a_solvent_account_leaves_the_rest_open() -> None:
    fund = InsuranceFund(balance_usd=1_000.0)
    result = liquidate("a", "X", 100.0, MARK, 50_000.0, thin_book(), LiquidityPool([]), fund, [], 0,
                       WaterfallParams(max_clips=3), close_all=False)
    assert set(result.quantity_by_step()) == {"book"}
    assert result.unfilled == pytest.approx(100.0 - result.quantity_by_step()["book"])
    assert fund.balance_usd == 1_000.0 and result.fund_draw_usd == 0.0
    # a bankrupt account is closed out even in a partial round
    bankrupt = liquidate("b", "X", 100.0, MARK, -500.0, thin_book(), LiquidityPool([]), InsuranceFund(1e6), [], 0,
                         WaterfallParams(max_clips=3), close_all=False)
    assert bankrupt.unfilled == 0.0 and "insurance_fund" in bankrupt.quantity_by_step()
