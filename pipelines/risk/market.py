"""Market state: per-underlying index, volatility and rate, per-instrument implied-vol overrides,
and the market time as epoch milliseconds UTC (the project's single event-time convention).

The time is an input, never the wall clock: the same market state always gives the same risk,
which is what makes a replayed stream, a what-if and a test agree.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping

import numpy as np

from pipelines.errors import UserError
from pipelines.risk.instruments import InstrumentTable

YEAR_MS = 365.0 * 86_400_000.0  # ACT/365


class MarketError(UserError, ValueError):
    """A market input a person can fix: missing underlying, NaN, non-positive index or vol."""


def check_positive(value: float, field: str) -> float:
    """``value`` as a float if it is a positive finite real number, else a MarketError naming ``field``."""
    if type(value) is float and 0.0 < value < math.inf:  # the common case, without the ABC check
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise MarketError(f"{field}: expected a positive finite number, got {value!r}")
    return float(value)


@dataclasses.dataclass(frozen=True)
class UnderlyingMarket:
    """Index price (USD), the underlying's implied vol (annualised, 0.55 = 55 %) and rate."""

    index: float
    vol: float
    rate: float = 0.0

    def validate(self, name: str) -> None:
        check_positive(self.index, f"underlyings.{name}.index")
        check_positive(self.vol, f"underlyings.{name}.vol")
        if isinstance(self.rate, bool) or not isinstance(self.rate, numbers.Real) or not math.isfinite(self.rate):
            raise MarketError(f"underlyings.{name}.rate: expected a finite number, got {self.rate!r}")


@dataclasses.dataclass(frozen=True)
class MarketState:
    time_ms: int
    underlyings: Mapping[str, UnderlyingMarket]
    instrument_vols: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.time_ms, bool) or not isinstance(self.time_ms, numbers.Integral):
            raise MarketError(f"time: expected epoch milliseconds, got {self.time_ms!r}")
        object.__setattr__(self, "time_ms", int(self.time_ms))  # numpy ints from the stream are fine
        for name, und in self.underlyings.items():
            und.validate(name)
        for name, vol in self.instrument_vols.items():
            check_positive(vol, f"instruments.{name}.iv")

    @classmethod
    def of_valid(cls, time_ms: int, underlyings: Mapping[str, UnderlyingMarket],
                 instrument_vols: Mapping[str, float]) -> MarketState:
        """The state of values its caller has just checked, built without checking them again:
        ``time_ms`` an ``int``; every index and vol (underlying and instrument) a positive finite
        ``float`` (``check_positive``), every rate finite. For the engine's ``MarketBoard``, which
        checks each tick what the tick reads; any other caller uses the constructor."""
        state = object.__new__(cls)
        object.__setattr__(state, "time_ms", time_ms)
        object.__setattr__(state, "underlyings", underlyings)
        object.__setattr__(state, "instrument_vols", instrument_vols)
        return state

    def underlying_markets(self, underlyings: tuple[str, ...]) -> list[UnderlyingMarket]:
        """The market of each of ``underlyings``; MarketError names the first without one."""
        missing = [u for u in underlyings if u not in self.underlyings]
        if missing:
            raise MarketError(f"underlyings.{missing[0]}: no market data for this underlying")
        return [self.underlyings[u] for u in underlyings]

    def inputs(self, table: InstrumentTable) -> InstrumentInputs:
        """Per-instrument arrays aligned with ``table`` (vol: instrument override, else underlying)."""
        unds = self.underlying_markets(table.underlyings)
        u_index = np.array([u.index for u in unds], dtype=np.float64)
        u_vol = np.array([u.vol for u in unds], dtype=np.float64)
        u_rate = np.array([u.rate for u in unds], dtype=np.float64)
        uidx = table.underlying_idx
        vol = u_vol[uidx].copy()
        if self.instrument_vols:
            for k, inst in enumerate(table.instruments):
                override = self.instrument_vols.get(inst.name)
                if override is not None:
                    vol[k] = override
        t = np.where(table.expiry_ms >= 0, (table.expiry_ms - self.time_ms) / YEAR_MS, 0.0)
        return InstrumentInputs(
            index=u_index[uidx], vol=vol, rate=u_rate[uidx], t=t,
            underlying_index=u_index, underlying_vol=u_vol,
        )


@dataclasses.dataclass(frozen=True, eq=False)
class InstrumentInputs:
    """Market inputs per instrument (and per underlying, in ``table.underlyings`` order).
    ``t`` is ACT/365 years to expiry, 0 for perpetuals, negative once expired."""

    index: np.ndarray
    vol: np.ndarray
    rate: np.ndarray
    t: np.ndarray
    underlying_index: np.ndarray
    underlying_vol: np.ndarray
