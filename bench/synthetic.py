"""A synthetic book and market stream of any size, for the scaling curves.

The scenario library's populations are a few dozen accounts over a fixed chain; scaling needs
the same kind of book at 1k-100k accounts and 100-10,000 options. Here: an option chain of
``options`` instruments over BTC and ETH (four expiries, calls and puts, strikes 50-150 % of
spot), ``accounts`` accounts each holding a leveraged perpetual and three options drawn from
the chain, with collateral from 15 % to 80 % of gross notional; then ``seconds`` of market:
index ticks every 100 ms per underlying, falling ``fall`` over the window with noise, vol
updates and perpetual depth every second. Seeded: the same arguments give the same events.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from pipelines.scenarios.generate import T0, expiry_code

SPOT = {"BTC": 60_000.0, "ETH": 3_000.0}
EXPIRY_DAYS = (7, 30, 90, 180)
DAY_MS = 86_400_000

Event = tuple[str, dict[str, Any]]  # (record name, decoded value)


def option_chain(options: int) -> list[str]:
    """``options`` option names, spread evenly over underlyings, expiries, calls and puts."""
    per_line = max(1, options // (len(SPOT) * len(EXPIRY_DAYS) * 2))
    names = []
    for underlying, spot in SPOT.items():
        for days in EXPIRY_DAYS:
            code = expiry_code(T0 + days * DAY_MS)
            for strike in np.linspace(0.5 * spot, 1.5 * spot, per_line):
                for cp in "CP":
                    names.append(f"{underlying}-{code}-{int(round(strike))}-{cp}")
    return list(dict.fromkeys(names))[:options]


def book_events(accounts: int, options: int, seed: int = 11) -> list[Event]:
    """A position per leg and a collateral deposit per account, at T0."""
    rng = np.random.default_rng(seed)
    chain = option_chain(options)
    events: list[Event] = []
    for i in range(accounts):
        account = f"acct-{i:06d}"
        underlying = "BTC" if i % 3 else "ETH"
        spot = SPOT[underlying]
        perp_qty = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 5.0) * 60_000 / spot)
        legs = [(f"{underlying}-PERPETUAL", perp_qty, spot)]
        for name in rng.choice(chain, size=3, replace=False):
            qty = float(rng.choice([-1.0, 1.0]) * rng.uniform(1.0, 10.0) * 60_000 / SPOT[name.split("-")[0]])
            legs.append((str(name), qty, 0.0))
        gross = sum(abs(q) * SPOT[n.split("-")[0]] for n, q, _ in legs)
        for seq, (name, qty, price) in enumerate(legs, 1):
            events.append(("PositionUpdate", {"account": account, "instrument": name, "quantity": round(qty, 4),
                                              "average_price": price, "sequence": seq, "event_time_ms": T0}))
        amount = round(gross * rng.uniform(0.15, 0.80), 2)
        events.append(("CollateralUpdate", {"account": account, "asset": "USDC", "amount": amount, "change": amount,
                                            "reason": "deposit", "sequence": 1, "event_time_ms": T0}))
    return events


def market_events(seconds: int, fall: float = 0.06, seed: int = 11) -> Iterator[Event]:
    """Index every 100 ms per underlying (a steady fall with noise), vol and depth every second."""
    rng = np.random.default_rng(seed)
    steps = seconds * 10
    for k in range(steps + 1):
        t = T0 + 1 + k * 100
        for underlying, spot in SPOT.items():
            price = spot * (1 - fall * k / steps) * (1 + rng.normal(0, 2e-4))
            yield "IndexPrice", {"underlying": underlying, "index_name": underlying.lower(), "price": round(price, 2),
                                 "event_time_ms": t}
            if k % 10 == 0:
                yield "VolatilityUpdate", {"underlying": underlying, "instrument": None, "iv": 0.6 + 0.4 * k / steps,
                                           "smile": [], "source": "synthetic", "event_time_ms": t}
                size = 4_000_000 / price * (1 - 0.5 * k / steps)  # 4M USD a side, thinning to half
                yield "OrderBookDepth", {"instrument": f"{underlying}-PERPETUAL",
                                         "bids": [{"price": round(price * 0.999, 2), "quantity": size}],
                                         "asks": [{"price": round(price * 1.001, 2), "quantity": size}],
                                         "bands": [], "sequence": k // 10, "event_time_ms": t}
