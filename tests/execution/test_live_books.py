"""Books follow the mark: a fill is never better than the mark its book is placed at.

The bound, for a book whose depth has its bids at or below and its asks at or above its anchor
(the depth's mid, or the mark a synthetic book was built on): placed at ``mark``, a sell fills at
most at ``mark * best_bid / anchor`` and a buy at least at ``mark * best_ask / anchor``, so the
slippage against the mark is at least the depth's half-spread in basis points, and never negative.
It holds through consumption, replenishment and any number of mark moves.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.execution.book import BUY, SELL, OrderBook
from pipelines.execution.venue import Order, SimulatedVenue, SimulatedVenueConfig
from pipelines.execution.waterfall import InsuranceFund, LiquidityPool, WaterfallParams, liquidate

prices = st.floats(min_value=1e-3, max_value=1e6)
ratios = st.floats(min_value=0.05, max_value=20.0)
sizes = st.floats(min_value=1e-3, max_value=1e4)


@st.composite
def depths(draw: st.DrawFn) -> tuple[list[tuple[float, float]], list[tuple[float, float]], float]:
    """Bids below and asks above a mid, as a depth record quotes them."""
    mid = draw(prices)
    steps = st.floats(min_value=1e-5, max_value=0.5)
    bids = [(mid * (1 - s), q) for s, q in draw(st.lists(st.tuples(steps, sizes), min_size=1, max_size=12))]
    asks = [(mid * (1 + s), q) for s, q in draw(st.lists(st.tuples(steps, sizes), min_size=1, max_size=12))]
    return bids, asks, mid


def half_spread_bps(book: OrderBook, side: str) -> float:
    touch = book.bid_prices[0] if side == SELL else book.ask_prices[0]
    return abs(touch / book.anchor - 1.0) * 1e4


@settings(max_examples=200, deadline=None)
@given(depths(), st.lists(st.tuples(ratios, st.sampled_from([BUY, SELL]), sizes, st.floats(0.0, 1.0)),
                          min_size=1, max_size=8))
def test_no_fill_is_better_than_the_mark_the_book_is_placed_at(depth, moves) -> None:
    bids, asks, _ = depth
    book = OrderBook(bids, asks)
    mark = book.anchor
    for ratio, side, quantity, replenish in moves:
        mark *= ratio
        book.place_at(mark)
        bound = half_spread_bps(book, side)
        sweep = book.sweep(side, quantity)
        if sweep.filled > 0:
            assert sweep.slippage_against(mark) >= bound * (1 - 1e-9) - 1e-9
        book.replenish(replenish)


@settings(max_examples=100, deadline=None)
@given(depths(), ratios, st.floats(min_value=1e-3, max_value=1e3), st.booleans())
def test_waterfall_book_fills_are_never_better_than_the_mark(depth, ratio, quantity, long) -> None:
    bids, asks, mid = depth
    mark = mid * ratio
    book = OrderBook(bids, asks).place_at(mark)
    position = quantity if long else -quantity
    result = liquidate("a", "X-PERPETUAL", position, mark, 1e12, book, LiquidityPool([]), InsuranceFund(0.0), [], 0,
                       WaterfallParams(max_slippage=1.0), close_all=False)
    for fill in result.fills:
        assert fill.slippage_bps >= -1e-6


def test_place_at_moves_levels_with_the_mark_and_keeps_consumption() -> None:
    book = OrderBook([(99.0, 5.0), (98.0, 10.0)], [(101.0, 5.0)])
    book.sweep(SELL, 5.0)
    book.place_at(50.0)
    assert book.anchor == 50.0
    assert list(book.bid_prices) == pytest.approx([49.5, 49.0])
    assert list(book.bid_sizes) == [0.0, 10.0]
    assert book.sweep(SELL, 1.0).avg_price == pytest.approx(49.0)


DEPTH = {"instrument": "BTC-PERPETUAL", "bids": [{"price": 60_000.0 - 10 * i, "quantity": 1.0} for i in range(1, 6)],
         "asks": [{"price": 60_000.0 + 10 * i, "quantity": 1.0} for i in range(1, 6)]}


def test_venue_rebuilds_every_book_at_fill_time(tmp_path: Path) -> None:
    venue = SimulatedVenue(SimulatedVenueConfig(books={"BTC-PERPETUAL": DEPTH}), tmp_path / "ledger.sqlite")
    first = venue.place_order(Order("o1", "a", "BTC-PERPETUAL", SELL, 5.0))
    second = venue.place_order(Order("o2", "a", "BTC-PERPETUAL", SELL, 5.0))
    assert first.avg_price == second.avg_price == pytest.approx(59_970.0)  # not consumed by the first order
    venue.on_mark("BTC-PERPETUAL", 30_000.0)
    crashed = venue.place_order(Order("o3", "a", "BTC-PERPETUAL", SELL, 1.0))
    assert crashed.avg_price == pytest.approx(29_995.0)
    assert crashed.slippage_bps == pytest.approx(5 / 30_000 * 1e4)
    venue.on_depth({**DEPTH, "bids": [{"price": 59_000.0, "quantity": 2.0}]})
    assert venue.place_order(Order("o4", "a", "BTC-PERPETUAL", SELL, 1.0)).avg_price == pytest.approx(
        30_000.0 * 59_000.0 / 59_505.0)  # the new depth, quoted around its mid, at the mark


def test_venue_liquidation_fills_at_the_actions_mark(tmp_path: Path) -> None:
    venue = SimulatedVenue(SimulatedVenueConfig(books={"BTC-PERPETUAL": DEPTH}), tmp_path / "ledger.sqlite")
    venue.seed_position("a", "BTC-PERPETUAL", 2.0)
    result = venue.liquidate("liq-1", "a", "BTC-PERPETUAL", 2.0, 40_000.0, 1e6, 0, close_all=False)
    assert result.fills and all(f.price <= 40_000.0 for f in result.fills)
    assert min(f.price for f in result.fills) >= 40_000.0 * 59_950.0 / 60_000.0
