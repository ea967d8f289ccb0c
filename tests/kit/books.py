"""Builders for account books: one portfolio from its legs, many random ones from a seeded
generator. A leg is ``(instrument, qty)`` or ``(instrument, qty, avg_price)``; without an
average price a position is carried at mark."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipelines.risk.book import Portfolio, Position

Leg = tuple[str, float] | tuple[str, float, float]


def portfolio(collateral_usd: float, *legs: Leg, account: str = "a") -> Portfolio:
    """The portfolio of ``account`` holding ``legs`` in that order (duplicates kept, not netted)."""
    return Portfolio(account, collateral_usd, tuple(Position(*leg) for leg in legs))


def random_portfolios(rng: np.random.Generator, instruments: Sequence[str], count: int, *,
                      legs: tuple[int, int] = (0, 6), collateral_usd: tuple[float, float] = (1e4, 1e6),
                      qty_sd: float = 10.0, priced: bool = True, prefix: str = "acct-") -> list[Portfolio]:
    """``count`` portfolios named ``prefix + i``: collateral uniform in ``collateral_usd``, between
    ``legs[0]`` and ``legs[1]`` legs drawn from ``instruments`` with replacement, quantities normal
    around 0 with ``qty_sd``, average prices uniform in 1..50,000 when ``priced`` (else at mark).
    The same generator state gives the same portfolios."""
    out = []
    for i in range(count):
        collateral = float(rng.uniform(*collateral_usd))
        positions = []
        for _ in range(int(rng.integers(legs[0], legs[1] + 1))):
            name, qty = str(rng.choice(instruments)), float(rng.normal(0, qty_sd))
            positions.append(Position(name, qty, float(rng.uniform(1, 5e4))) if priced else Position(name, qty))
        out.append(Portfolio(f"{prefix}{i}", collateral, tuple(positions)))
    return out
