"""Batch revaluation: marks, equity, Greeks, netting, and batch == one account at a time."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.errors import UserError
from pipelines.risk.black76 import black76_greeks
from pipelines.risk.book import Book, account_risk, margin_ratio, revalue_book
from pipelines.risk.instruments import InstrumentTable
from pipelines.risk.market import YEAR_MS, MarketError, MarketState, UnderlyingMarket
from tests.kit.books import portfolio, random_portfolios
from tests.kit.markets import NOW_MS, market

MKT = market(rate=0.05, **{"BTC-27DEC26-60000-C": 0.6})
T_DEC = (InstrumentTable.parse(["BTC-27DEC26"]).expiry_ms[0] - NOW_MS) / YEAR_MS


def test_marks_perp_is_index_future_is_forward_option_is_black76_with_override_vol() -> None:
    pf = portfolio(0.0, ("BTC-PERPETUAL", 1), ("BTC-27DEC26", 1), ("BTC-27DEC26-60000-C", 1),
                   ("BTC-27DEC26-60000-P", 1))
    book, r = account_risk(pf, MKT)
    marks = dict(zip(book.instruments.names, r.unit.price, strict=True))
    assert marks["BTC-PERPETUAL"] == 60_000.0
    assert np.isclose(marks["BTC-27DEC26"], 60_000.0 * np.exp(0.05 * T_DEC))
    call = black76_greeks(60_000.0, 60_000.0, T_DEC, 0.6, 0.05, True)
    put = black76_greeks(60_000.0, 60_000.0, T_DEC, 0.55, 0.05, False)  # no override: underlying's vol
    assert np.isclose(marks["BTC-27DEC26-60000-C"], call.price)
    assert np.isclose(marks["BTC-27DEC26-60000-P"], put.price)


def test_equity_is_collateral_plus_unrealised_pnl_at_mark_and_position_greeks_are_qty_times_unit() -> None:
    pf = portfolio(250_000.0, ("BTC-27DEC26-60000-C", -10, 4200.0), ("BTC-PERPETUAL", 3, 59_000.0),
                   ("BTC-27DEC26", 2))  # no avg_price: at mark
    book, r = account_risk(pf, MKT)
    call = black76_greeks(60_000.0, 60_000.0, T_DEC, 0.6, 0.05, True)
    assert np.isclose(r.equity[0], 250_000 - 10 * (call.price - 4200) + 3 * 1000)
    fwd_growth = np.exp(0.05 * T_DEC)
    assert np.isclose(r.delta[0, 0], -10 * call.delta + 3 + 2 * fwd_growth)
    assert np.isclose(r.gamma[0, 0], -10 * call.gamma)
    assert np.isclose(r.vega[0, 0], -10 * call.vega)
    assert np.isclose(r.theta[0, 0], -10 * call.theta - 2 * 0.05 * 60_000 * fwd_growth / 365)
    assert np.isclose(r.gross_notional[0, 0], 15 * 60_000) and np.isclose(r.net_notional[0, 0], -5 * 60_000)
    assert np.isclose(r.margin_ratio[0], r.maintenance[0] / r.equity[0])


def test_duplicate_positions_net_and_keep_their_average_prices() -> None:
    split = portfolio(0.0, ("BTC-PERPETUAL", 1, 50_000.0), ("BTC-PERPETUAL", 1, 70_000.0), ("BTC-PERPETUAL", 1))
    one = portfolio(0.0, ("BTC-PERPETUAL", 3, 60_000.0))
    (b1, r1), (_, r2) = account_risk(split, MKT), account_risk(one, MKT)
    assert len(b1.qty) == 1 and b1.qty[0] == 3
    assert np.isclose(r1.equity[0], 0.0) and np.isclose(r1.maintenance[0], r2.maintenance[0])


def test_the_sparse_matrix_is_built_on_first_use_and_holds_each_rows_net_quantities() -> None:
    rng = np.random.default_rng(5)
    names = ["BTC-PERPETUAL", "BTC-27DEC26-60000-C", "ETH-PERPETUAL", "ETH-27DEC26-2000-P"]
    portfolios = random_portfolios(rng, names, 30, legs=(0, 8))
    table = InstrumentTable.parse(names)
    book = Book.from_portfolios(portfolios, table)
    assert "matrix" not in vars(book)  # the compiled path never asks for it
    expected = np.zeros((len(portfolios) * book.n_underlyings, len(names)))
    for a, pf in enumerate(portfolios):
        for p in pf.positions:
            k = names.index(p.instrument)
            expected[a * book.n_underlyings + table.underlying_idx[k], k] += p.qty
    assert book.matrix is book.matrix
    np.testing.assert_allclose(book.matrix.toarray(), expected, rtol=1e-12, atol=1e-12)


def test_batch_equals_one_account_at_a_time() -> None:
    rng = np.random.default_rng(3)
    names = ["BTC-PERPETUAL", "BTC-27DEC26", "BTC-27DEC26-60000-C", "BTC-27NOV26-58000-P", "BTC-26MAR27-80000-C",
             "ETH-PERPETUAL", "ETH-27DEC26-2400-C", "ETH-27DEC26-2000-P"]
    portfolios = random_portfolios(rng, names, 40)
    table = InstrumentTable.parse(names)
    batch = revalue_book(Book.from_portfolios(portfolios, table), MKT)
    for a, pf in enumerate(portfolios):
        single = revalue_book(Book.from_portfolios([pf], table), MKT)
        for field in ("equity", "maintenance", "initial", "margin_ratio"):
            assert np.isclose(getattr(batch, field)[a], getattr(single, field)[0], rtol=1e-12, atol=1e-9), field
        for field in ("delta", "gamma", "vega", "theta", "scenario_loss"):
            assert np.allclose(getattr(batch, field)[a], getattr(single, field)[0], rtol=1e-12, atol=1e-9), field


def test_margin_sums_over_underlyings_without_cross_offsets() -> None:
    both = portfolio(1e6, ("BTC-PERPETUAL", 1), ("ETH-PERPETUAL", -25))
    btc = portfolio(1e6, ("BTC-PERPETUAL", 1))
    eth = portfolio(1e6, ("ETH-PERPETUAL", -25))
    mm = [account_risk(p, MKT)[1].maintenance[0] for p in (both, btc, eth)]
    assert np.isclose(mm[0], mm[1] + mm[2])


def test_negative_equity_is_infinitely_over_and_liquidatable() -> None:
    _, r = account_risk(portfolio(-1.0, ("BTC-PERPETUAL", 1)), MKT)
    assert r.margin_ratio[0] == np.inf and r.liquidatable[0]
    _, empty = account_risk(portfolio(100.0), MKT)
    assert empty.maintenance[0] == 0 and empty.margin_ratio[0] == 0 and not empty.liquidatable[0]


def test_an_account_that_cannot_be_valued_is_infinitely_over_not_overlooked() -> None:
    nan, inf = np.nan, np.inf
    ratio = margin_ratio(np.array([nan, nan, 1.0, nan, inf, 0.0, 5.0]),
                         np.array([-1e200, 10.0, nan, nan, inf, 0.0, 10.0]))
    assert ratio.tolist() == [inf, inf, inf, inf, inf, 0.0, 0.5]


def test_bad_inputs_are_user_errors() -> None:
    table = InstrumentTable.parse(["BTC-PERPETUAL"])
    with pytest.raises(UserError, match="qty"):
        Book.from_arrays(["a"], np.array([1.0]), table, np.array([0]), np.array([0]), np.array([np.nan]))
    with pytest.raises(UserError, match="out of range"):
        Book.from_arrays(["a"], np.array([1.0]), table, np.array([1]), np.array([0]), np.array([1.0]))
    with pytest.raises(MarketError, match="underlyings.SOL"):
        revalue_book(Book.from_portfolios([portfolio(1.0, ("SOL-PERPETUAL", 1))]), MKT)
    with pytest.raises(MarketError, match="underlyings.BTC.vol"):
        MarketState(NOW_MS, {"BTC": UnderlyingMarket(60_000.0, float("nan"))})


def test_market_time_accepts_numpy_integers_from_the_stream() -> None:
    state = MarketState(np.int64(NOW_MS), {"BTC": UnderlyingMarket(np.float64(6e4), 0.5)})
    assert state.time_ms == NOW_MS and type(state.time_ms) is int
    with pytest.raises(MarketError, match="time"):
        MarketState(1.5, {"BTC": UnderlyingMarket(6e4, 0.5)})  # type: ignore[arg-type]
