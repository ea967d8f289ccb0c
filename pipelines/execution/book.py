"""A limit order book built from the market stream's depth, and market orders swept through it.

Levels are numpy arrays, best first. A sweep takes liquidity level by level up to a limit
price, so a large order pays the slippage the book really has, fills partially when the book
runs out inside the limit, and leaves the book thinner for the next order. ``replenish`` lets
depth come back over time (market makers re-quoting), which is what makes pacing a liquidation
in clips cheaper than dumping it at once.

A book follows its instrument's mark: its levels hold their distance from the *anchor* (the
price they were quoted around: the depth's mid, or the mark a synthetic book was built on), and
``place_at(mark)`` moves every level with the mark, keeping what was consumed. A book placed at
the mark it fills against can never fill a sell above ``mark * best_bid / anchor`` nor a buy below
``mark * best_ask / anchor``: for a depth with bids below and asks above its anchor, never
better than the mark.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

import numpy as np

BUY, SELL = "buy", "sell"


@dataclasses.dataclass(frozen=True)
class Sweep:
    """The outcome of one market order against the book."""

    side: str
    requested: float
    filled: float
    notional: float
    best_price: float

    @property
    def avg_price(self) -> float | None:
        return self.notional / self.filled if self.filled > 0 else None

    @property
    def slippage_bps(self) -> float | None:
        """Average price against the touch, in basis points, positive when worse."""
        return self.slippage_against(self.best_price)

    def slippage_against(self, reference: float) -> float | None:
        """Average price against ``reference`` (the touch, or a mark), in basis points, positive when worse."""
        if self.filled <= 0:
            return None
        sign = 1.0 if self.side == BUY else -1.0
        return sign * (self.avg_price / reference - 1.0) * 1e4


class OrderBook:
    def __init__(self, bids: Iterable[tuple[float, float]], asks: Iterable[tuple[float, float]],
                 anchor: float | None = None) -> None:
        """``anchor``: the price the levels are quoted around (default: the mid, else the only side's touch)."""
        bid_levels = sorted(((p, q) for p, q in bids if q > 0), key=lambda level: -level[0])
        ask_levels = sorted(((p, q) for p, q in asks if q > 0), key=lambda level: level[0])
        self.bid_prices = np.array([p for p, _ in bid_levels], dtype=float)
        self.bid_sizes = np.array([q for _, q in bid_levels], dtype=float)
        self.ask_prices = np.array([p for p, _ in ask_levels], dtype=float)
        self.ask_sizes = np.array([q for _, q in ask_levels], dtype=float)
        self._full_bids = self.bid_sizes.copy()
        self._full_asks = self.ask_sizes.copy()
        touches = [float(p[0]) for p in (self.bid_prices, self.ask_prices) if len(p)]
        self.anchor = anchor if anchor is not None else (sum(touches) / len(touches) if touches else None)

    @classmethod
    def from_depth(cls, depth: Mapping) -> OrderBook:
        """From an ``OrderBookDepth`` record: ``bids`` / ``asks`` lists of {price, quantity}."""
        return cls(((lvl["price"], lvl["quantity"]) for lvl in depth["bids"]),
                   ((lvl["price"], lvl["quantity"]) for lvl in depth["asks"]))

    @property
    def mid(self) -> float | None:
        if not (len(self.bid_prices) and len(self.ask_prices)):
            return None
        return float(self.bid_prices[0] + self.ask_prices[0]) / 2

    def place_at(self, mark: float) -> OrderBook:
        """Move every level with the mark (prices scaled by ``mark / anchor``); sizes stay as they are."""
        if self.anchor is not None and self.anchor > 0 and mark > 0 and mark != self.anchor:
            factor = mark / self.anchor
            self.bid_prices *= factor
            self.ask_prices *= factor
            self.anchor = mark
        return self

    def _side(self, side: str) -> tuple[np.ndarray, np.ndarray]:
        """The levels an order of ``side`` takes from: a buy lifts asks, a sell hits bids."""
        return (self.ask_prices, self.ask_sizes) if side == BUY else (self.bid_prices, self.bid_sizes)

    def available(self, side: str, limit_price: float | None) -> float:
        """Contracts an order of ``side`` could fill without passing ``limit_price``."""
        prices, sizes = self._side(side)
        if limit_price is None:
            return float(sizes.sum())
        within = prices <= limit_price if side == BUY else prices >= limit_price
        return float(sizes[within].sum())

    def sweep(self, side: str, quantity: float, limit_price: float | None = None) -> Sweep:
        """Fill up to ``quantity`` contracts, never past ``limit_price``; the book loses what is taken."""
        prices, sizes = self._side(side)
        live = np.flatnonzero(sizes > 0)
        if not len(live) or quantity <= 0:
            return Sweep(side, quantity, 0.0, 0.0, float(prices[live[0]]) if len(live) else float("nan"))
        touch = float(prices[live[0]])
        within = prices <= limit_price if side == BUY and limit_price is not None else (
            prices >= limit_price if limit_price is not None else np.ones(len(prices), dtype=bool))
        usable = np.where(within, sizes, 0.0)
        before = np.concatenate(([0.0], np.cumsum(usable)[:-1]))
        take = np.clip(quantity - before, 0.0, usable)
        sizes -= take  # in place: the book is consumed
        filled = float(take.sum())
        return Sweep(side, quantity, filled, float((take * prices).sum()), touch)

    def replenish(self, fraction: float) -> None:
        """Bring every level ``fraction`` of the way back to its original size."""
        for sizes, full in ((self.bid_sizes, self._full_bids), (self.ask_sizes, self._full_asks)):
            sizes += (full - sizes) * min(max(fraction, 0.0), 1.0)
