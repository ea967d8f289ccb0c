"""Greek-aware liquidation ordering: worst gamma legs first, hedges last, cheaper than pro rata."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.errors import UserError
from pipelines.risk.book import Book, Portfolio, Position, account_risk, revalue_book
from pipelines.risk.liquidation_order import (
    LiquidationParams,
    expected_slippage_per_unit,
    plan_liquidation,
    plan_liquidations,
)
from tests.kit.books import portfolio, random_portfolios
from tests.kit.markets import market

MKT = market()


def hedged_short_gamma_book(collateral: float) -> Portfolio:
    legs = (Position("BTC-27NOV26-60000-C", -30), Position("BTC-27NOV26-60000-P", -30),
            Position("BTC-26MAR27-90000-C", -10), Position("BTC-27DEC26-40000-P", 20))
    _, r = account_risk(Portfolio("a", collateral, legs), MKT)
    return Portfolio("a", collateral, legs + (Position("BTC-PERPETUAL", -float(r.delta[0, 0])),))


def test_closes_the_short_dated_short_gamma_legs_first_and_never_the_hedge_first() -> None:
    book, risk = account_risk(hedged_short_gamma_book(200_000.0), MKT)
    assert risk.margin_ratio[0] > 1
    plan = plan_liquidation(book, risk, 0, target_ratio=0.8)
    assert plan.reached and plan.margin_ratio_after <= 0.8
    assert plan.orders[0].instrument.startswith("BTC-27NOV26-60000")
    assert plan.orders[0].instrument != "BTC-PERPETUAL"
    # Orders reduce positions, never flip them, and the margin falls along the way.
    held = dict(zip(book.instruments.names, np.zeros(len(book.instruments))))
    for p in hedged_short_gamma_book(0).positions:
        held[p.instrument] += p.qty
    for o in plan.orders:
        assert np.sign(o.qty) == -np.sign(held[o.instrument]) and abs(o.qty) <= abs(held[o.instrument]) + 1e-9
        held[o.instrument] += o.qty
    assert plan.maintenance_after < plan.maintenance_before
    assert np.isclose(plan.equity_before - plan.equity_after, sum(o.slippage_usd for o in plan.orders))


def test_greek_aware_plan_costs_less_slippage_than_pro_rata() -> None:
    pf = hedged_short_gamma_book(200_000.0)
    book, risk = account_risk(pf, MKT)
    plan = plan_liquidation(book, risk, 0, target_ratio=0.8)
    slip = expected_slippage_per_unit(book, risk, LiquidationParams())
    full_cost = float(np.sum(np.abs(book.qty) * slip[book.instrument_idx]))

    def pro_rata_ratio(f: float) -> float:
        scaled = Portfolio("a", pf.collateral_usd - f * full_cost,
                           tuple(Position(p.instrument, p.qty * (1 - f)) for p in pf.positions))
        return float(account_risk(scaled, MKT)[1].margin_ratio[0])

    lo, hi = 0.0, 1.0
    for _ in range(50):  # smallest pro-rata fraction that reaches the target
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if pro_rata_ratio(mid) <= 0.8 else (mid, hi)
    assert sum(o.slippage_usd for o in plan.orders) < hi * full_cost


def test_healthy_account_needs_no_orders_and_a_bankrupt_one_is_closed_out() -> None:
    book, risk = account_risk(hedged_short_gamma_book(5e6), MKT)
    assert plan_liquidation(book, risk, 0, target_ratio=0.8).orders == ()
    book, risk = account_risk(portfolio(-1.0, ("BTC-PERPETUAL", 1)), MKT)
    plan = plan_liquidation(book, risk, 0, target_ratio=0.5)
    # Closed out: no requirement left (ratio 0), the negative equity is the backstop's to cover.
    assert plan.reached and plan.maintenance_after == 0.0 and plan.equity_after < 0
    assert [o.qty for o in plan.orders] == [-1.0]
    with pytest.raises(UserError, match="target_ratio"):
        plan_liquidation(book, risk, 0, target_ratio=0.0)


def test_plans_one_account_of_a_batch() -> None:
    pfs = [portfolio(1e7, ("BTC-PERPETUAL", 1), account="rich"), hedged_short_gamma_book(200_000.0)]
    book = Book.from_portfolios(pfs)
    risk = revalue_book(book, MKT)
    plan = plan_liquidation(book, risk, 1, target_ratio=0.8)
    assert plan.account == "a" and plan.reached
    assert plan.orders[0].instrument.startswith("BTC-27NOV26-60000")


def test_plan_prices_margin_like_the_engine_including_the_adaptive_addon() -> None:
    from pipelines.risk.adaptive import AdaptiveParams, MarketConditions

    cond = MarketConditions({"BTC": 1.0}, {"BTC": 2e6})
    for adaptive in (None, AdaptiveParams()):
        book, risk = account_risk(hedged_short_gamma_book(200_000.0), MKT, adaptive=adaptive, conditions=cond)
        plan = plan_liquidation(book, risk, 0, target_ratio=0.8, adaptive=adaptive, conditions=cond)
        assert np.isclose(plan.maintenance_before, risk.maintenance[0], rtol=1e-12)


@pytest.mark.parametrize("compiled", [True, False])
def test_planning_accounts_together_gives_each_the_plan_it_gets_alone(compiled: bool) -> None:
    """The engine plans a crash's liquidations in one batch; that must change nothing, to the bit:
    accounts with different books, targets, a bankrupt one, a healthy one and a flat one."""
    from pipelines.risk.adaptive import AdaptiveParams, MarketConditions

    rng = np.random.default_rng(5)
    names = ["BTC-27NOV26-60000-C", "BTC-27NOV26-60000-P", "BTC-26MAR27-90000-C", "BTC-27DEC26-40000-P",
             "BTC-PERPETUAL", "ETH-PERPETUAL", "ETH-27DEC26-3000-C"]
    pfs = random_portfolios(rng, names, 40, legs=(4, 4), collateral_usd=(5e4, 4e5), qty_sd=20.0, priced=False,
                            prefix="r")
    pfs += [portfolio(-1.0, ("BTC-PERPETUAL", 1), account="bankrupt"), hedged_short_gamma_book(5e6),
            portfolio(1e5, account="flat")]
    cond = MarketConditions({"BTC": 1.0}, {"BTC": 2e6})
    for adaptive in (None, AdaptiveParams()):
        book = Book.from_portfolios(pfs)
        risk = revalue_book(book, MKT, adaptive=adaptive, conditions=cond)
        picked = [int(i) for i in rng.permutation(len(book.accounts))[:len(book.accounts) - 3]]
        targets = [float(rng.uniform(0.3, 0.9)) for _ in picked]
        together = plan_liquidations(book, risk, picked, targets, adaptive=adaptive, conditions=cond, compiled=compiled)
        alone = [plan_liquidation(book, risk, i, t, adaptive=adaptive, conditions=cond, compiled=compiled)
                 for i, t in zip(picked, targets)]
        assert together == alone
        assert sum(len(p.orders) for p in together) > 20  # most of them had work to do
    with pytest.raises(UserError, match="each account once"):
        plan_liquidations(book, risk, [0, 0], [0.5, 0.5])
