from __future__ import annotations

import pytest

from pipelines.execution.book import BUY, SELL, OrderBook


def book() -> OrderBook:
    return OrderBook(bids=[(99.0, 5.0), (98.0, 10.0), (97.0, 20.0)], asks=[(101.0, 5.0), (102.0, 10.0)])


def test_sweep_walks_levels_and_reports_slippage() -> None:
    b = book()
    sweep = b.sweep(SELL, 10.0)
    assert sweep.filled == 10.0
    assert sweep.avg_price == pytest.approx((99 * 5 + 98 * 5) / 10)
    assert sweep.slippage_bps == pytest.approx((1 - 98.5 / 99) * 1e4)
    assert b.available(SELL, None) == pytest.approx(25.0)  # consumed


def test_limit_price_gives_partial_fill() -> None:
    b = book()
    sweep = b.sweep(BUY, 100.0, limit_price=101.5)
    assert (sweep.filled, sweep.avg_price) == (5.0, 101.0)
    assert b.available(BUY, 101.5) == 0.0


def test_replenish_restores_depth_and_touch_moves_after_consumption() -> None:
    b = book()
    b.sweep(SELL, 5.0)
    assert b.sweep(SELL, 1.0).best_price == 98.0
    b.replenish(1.0)
    assert b.available(SELL, None) == pytest.approx(35.0)


def test_from_depth_record() -> None:
    b = OrderBook.from_depth({"bids": [{"price": 10.0, "quantity": 1.0}], "asks": [{"price": 11.0, "quantity": 2.0}]})
    assert b.mid == 10.5
