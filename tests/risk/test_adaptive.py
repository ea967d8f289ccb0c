"""Adaptive add-on: rises with short gamma/vega, realised vol and thin depth; never lowers."""

from __future__ import annotations

import numpy as np

from pipelines.risk.adaptive import AdaptiveParams, MarketConditions, adaptive_addon
from pipelines.risk.book import Portfolio, Position, account_risk
from tests.kit.markets import market

MKT = market()
SHORT_GAMMA = Portfolio("a", 1e6, (Position("BTC-27NOV26-60000-C", -20), Position("BTC-27NOV26-60000-P", -20)))
P = AdaptiveParams()


def mm(pf: Portfolio, rv: float | None = None, depth: float | None = None) -> float:
    cond = MarketConditions({"BTC": rv} if rv else {}, {"BTC": depth} if depth else {})
    return float(account_risk(pf, MKT, adaptive=P, conditions=cond)[1].maintenance[0])


def test_requirement_rises_with_realised_vol_and_thin_depth() -> None:
    base = float(account_risk(SHORT_GAMMA, MKT)[1].maintenance[0])
    calm = mm(SHORT_GAMMA)
    assert base < calm < mm(SHORT_GAMMA, rv=1.2) < mm(SHORT_GAMMA, rv=1.2, depth=1e6)
    assert mm(SHORT_GAMMA, rv=0.3) == calm  # realised below implied: no relief
    assert mm(SHORT_GAMMA, depth=5e6) > mm(SHORT_GAMMA, depth=5e7)


def test_concentration_costs_more_than_proportionally_in_a_thin_book() -> None:
    def addon(k: float) -> float:
        pf = Portfolio("a", 1e6, tuple(Position(p.instrument, p.qty * k) for p in SHORT_GAMMA.positions))
        _, r = account_risk(pf, MKT, adaptive=AdaptiveParams(max_multiplier=100),
                            conditions=MarketConditions({}, {"BTC": 1e6}))
        return float(r.adaptive_addon[0, 0])
    assert addon(4) > 4 * addon(1)


def test_long_gamma_and_vega_get_no_credit() -> None:
    long = Portfolio("a", 1e6, tuple(Position(p.instrument, -p.qty) for p in SHORT_GAMMA.positions))
    _, r = account_risk(long, MKT, adaptive=P, conditions=MarketConditions({"BTC": 1.5}, {}))
    assert r.adaptive_addon[0, 0] == 0 and r.maintenance[0] == r.base_maintenance[0]


def test_addon_is_capped_at_the_multiplier() -> None:
    out = adaptive_addon(np.array([-1.0]), np.array([-1e6]), np.array([0.0]), np.array([1e9]), np.array([60_000.0]),
                         np.array([0.5]), np.array([3.0]), np.array([1e5]), np.array([1000.0]), P)
    assert out.total[0] == 2000.0  # (3 - 1) x base


def test_formula_term_by_term() -> None:
    # Hand-computable inputs: gamma -0.01, vega -2000 /pt, net delta 5, gross notional 3M, S 60k,
    # implied 0.55, realised 0.9, depth 2M, base MM 100k.
    out = adaptive_addon(np.array([-0.01]), np.array([-2000.0]), np.array([5.0]), np.array([3e6]),
                         np.array([60_000.0]), np.array([0.55]), np.array([0.9]), np.array([2e6]),
                         np.array([100_000.0]), P)
    horizon = 15 / 1440 + 30 / 86_400 * 3e6 / (0.2 * 2e6)
    move = 2.33 * 0.9 * np.sqrt(horizon / 365)
    assert np.isclose(out.horizon_days[0], horizon)
    assert np.isclose(out.gamma_addon[0], 0.5 * 0.01 * (60_000 * move) ** 2)
    assert np.isclose(out.vega_addon[0], 2000 * 100 * move)  # vol of vol 1: same size as the index move
    assert np.isclose(out.slippage_addon[0], 0.005 * 3e5 * np.sqrt(3e5 / 2e6))
    assert np.isclose(out.total[0], out.gamma_addon[0] + out.vega_addon[0] + out.slippage_addon[0])


def test_worked_example_in_the_docs() -> None:
    """docs/risk-model.md: 50 short 7-day ATM straddles with a small perp, before and during a fast, thin market."""
    from pipelines.risk.market import MarketState, UnderlyingMarket
    from tests.kit.markets import NOW_MS

    mkt = MarketState(NOW_MS, {"BTC": UnderlyingMarket(60_000.0, 0.55)})
    pf = Portfolio("w", 565_000.0, (Position("BTC-30NOV26-60000-C", -50), Position("BTC-30NOV26-60000-P", -50),
                                    Position("BTC-PERPETUAL", 5)))
    base = account_risk(pf, mkt)[1]
    calm = account_risk(pf, mkt, adaptive=P)[1]
    fast = account_risk(pf, mkt, adaptive=P, conditions=MarketConditions({"BTC": 0.9}, {"BTC": 1e6}))[1]
    assert round(float(base.maintenance[0])) == 559_148
    assert round(float(calm.adaptive_addon[0, 0])) == 2_985
    assert round(float(fast.adaptive_addon[0, 0])) == 9_819
    # Same book, same collateral: not liquidatable on the grid alone, liquidatable in the fast, thin market.
    assert not base.liquidatable[0] and not calm.liquidatable[0] and fast.liquidatable[0]
