"""A fixed market for risk tests: BTC and ETH index, volatility and rate at ``NOW_MS``, with
optional per-instrument volatility overrides."""

from __future__ import annotations

import datetime as dt

from pipelines.risk.market import MarketState, UnderlyingMarket

NOW_MS = int(dt.datetime(2026, 11, 23, 12, tzinfo=dt.UTC).timestamp() * 1000)


def market(btc: float = 60_000.0, vol: float = 0.55, rate: float = 0.0, **instrument_vols: float) -> MarketState:
    return MarketState(NOW_MS, {"BTC": UnderlyingMarket(btc, vol, rate), "ETH": UnderlyingMarket(2_400.0, 0.7, rate)},
                       dict(instrument_vols))
