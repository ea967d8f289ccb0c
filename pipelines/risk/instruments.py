"""Deribit-style instrument names and the instrument table the vectorised code works on.

Names: ``BTC-PERPETUAL`` (perpetual), ``BTC-27DEC26`` (future), ``BTC-27DEC26-60000-C``
(option; ``P`` for a put). A decimal strike is written with ``d`` (``XRP_USDC-27DEC26-0d625-C``),
as Deribit does. Expiries are at 08:00 UTC of the expiry date, Deribit's expiry time.

An instrument is linear (USD-settled: one contract is ``contract_size`` units of the underlying,
its value ``contract_size * unit price`` in USD) or inverse (coin-settled in its underlying, as
Deribit's BTC and ETH options and futures are): an inverse option's contract is ``contract_size``
coins, its premium quoted in coin; an inverse future's or perpetual's contract is
``contract_size`` USD of face value (Deribit: 10 USD for BTC), its price quoted in USD and its
PnL paid in coin. ``valuation`` prices both.

On the stream, an ``InstrumentDefinition`` is the source of truth for an instrument
(:func:`instrument_from_definition`); the name alone (:func:`parse_instrument`) is the fallback
for an instrument the stream has not defined, and always reads as linear with contract size 1.
"""

from __future__ import annotations

import calendar
import dataclasses
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any

import numpy as np

from pipelines.errors import UserError

DAY_MS = 86_400_000
EXPIRY_HOUR_UTC = 8
_MONTHS = {name.upper(): number for number, name in enumerate(calendar.month_abbr) if name}
_DATE = re.compile(r"^(\d{1,2})([A-Z]{3})(\d{2})$")
_UNDERLYING = re.compile(r"^[A-Z0-9]+(?:_[A-Z0-9]+)?$")
_STRIKE = re.compile(r"^\d+(?:[dD]\d+)?$")


class InstrumentError(UserError, ValueError):
    """A malformed or unsupported instrument name: a person fixes it, so it is a UserError."""


class Kind(StrEnum):
    OPTION = "option"
    FUTURE = "future"
    PERPETUAL = "perpetual"


# Integer codes for the vectorised table (np arrays cannot hold enums cheaply).
KIND_CODE = {Kind.OPTION: 0, Kind.FUTURE: 1, Kind.PERPETUAL: 2}


@dataclasses.dataclass(frozen=True)
class Instrument:
    """One tradable contract. ``expiry_ms`` is None only for perpetuals; ``strike`` and
    ``is_call`` are None except for options."""

    name: str
    kind: Kind
    underlying: str
    expiry_ms: int | None = None
    strike: float | None = None
    is_call: bool | None = None
    contract_size: float = 1.0
    settlement: str = "USD"
    inverse: bool = False  # coin-settled in ``underlying`` (then ``settlement`` is the underlying)


def expiry_ms_of(date_code: str) -> int:
    """Epoch ms of 08:00 UTC on a Deribit date code such as ``27DEC26`` (2-digit years are 20xx)."""
    match = _DATE.match(date_code)
    if not match:
        raise InstrumentError(f"expiry {date_code!r}: expected a date like 27DEC26")
    day, month_name, year = int(match[1]), match[2], 2000 + int(match[3])
    month = _MONTHS.get(month_name)
    if month is None:
        raise InstrumentError(f"expiry {date_code!r}: unknown month {month_name!r}")
    if not 1 <= day <= calendar.monthrange(year, month)[1]:
        raise InstrumentError(f"expiry {date_code!r}: day {day} is not in {month_name} {year}")
    days = (calendar.timegm((year, month, day, 0, 0, 0)) // 86_400)
    return days * DAY_MS + EXPIRY_HOUR_UTC * 3_600_000


def underlying_of(name: str) -> str:
    """The underlying a Deribit-style name starts with: ``BTC`` of ``BTC-PERPETUAL`` and of
    ``BTC-27DEC26-60000-C``; a bare underlying (``BTC``) names itself. The one place a name's
    underlying is read from its text; nothing is checked (``parse_instrument`` checks)."""
    return name.partition("-")[0]


def perpetual_of(underlying: str) -> str:
    """The name of ``underlying``'s perpetual (``BTC-PERPETUAL``): the instrument a delta hedge trades."""
    return f"{underlying}-PERPETUAL"


def parse_instrument(name: str, contract_size: float = 1.0) -> Instrument:
    """Parse a Deribit-style name; raise InstrumentError naming what is wrong."""
    if not isinstance(name, str) or not name:
        raise InstrumentError(f"instrument {name!r}: expected a non-empty name")
    parts = name.split("-")
    parts = [part if k == 2 else part.upper() for k, part in enumerate(parts)]
    underlying = parts[0]
    if not _UNDERLYING.match(underlying):
        raise InstrumentError(f"instrument {name!r}: bad underlying {underlying!r}")
    if len(parts) == 2 and parts[1] == "PERPETUAL":
        return Instrument(name, Kind.PERPETUAL, underlying, contract_size=contract_size)
    if len(parts) == 2:
        try:
            return Instrument(name, Kind.FUTURE, underlying, expiry_ms_of(parts[1]), contract_size=contract_size)
        except InstrumentError as exc:
            raise InstrumentError(f"instrument {name!r}: {exc}") from None
    if len(parts) == 4:
        try:
            expiry = expiry_ms_of(parts[1])
        except InstrumentError as exc:
            raise InstrumentError(f"instrument {name!r}: {exc}") from None
        if not _STRIKE.match(parts[2]):
            raise InstrumentError(f"instrument {name!r}: bad strike {parts[2]!r}")
        strike = float(parts[2].replace("d", ".").replace("D", "."))
        if not strike > 0:
            raise InstrumentError(f"instrument {name!r}: strike must be positive")
        if parts[3] not in ("C", "P"):
            raise InstrumentError(f"instrument {name!r}: option type must be C or P, not {parts[3]!r}")
        return Instrument(name, Kind.OPTION, underlying, expiry, strike, parts[3] == "C", contract_size)
    raise InstrumentError(
        f"instrument {name!r}: expected UNDERLYING-PERPETUAL, UNDERLYING-DDMMMYY or UNDERLYING-DDMMMYY-STRIKE-C|P"
    )


def instrument_from_definition(definition: Mapping[str, Any]) -> Instrument:
    """The instrument an ``InstrumentDefinition`` record describes (a decoded Avro dict): kind,
    strike, expiry, call/put, inverse flag, settlement currency and contract size come from the
    record, not from the name. Raise InstrumentError when the record contradicts itself: an option
    without strike, expiry or type, a future without expiry, a non-positive contract size, or an
    inverse contract settled in anything but its underlying (the only coin-settled kind valued), an
    underlying other than the name's first part (the engine finds an instrument's index by it)."""
    name = definition["instrument"]
    kind = Kind(definition["kind"])
    underlying = definition["underlying"]
    size = definition["contract_size"]
    inverse = bool(definition.get("inverse", False))
    settlement = definition["settlement_currency"]
    if underlying != underlying_of(name):
        raise InstrumentError(f"instrument {name!r}: underlying {underlying!r} is not the name's")
    if not (isinstance(size, (int, float)) and math.isfinite(size) and size > 0):
        raise InstrumentError(f"instrument {name!r}: contract_size must be positive, not {size!r}")
    if inverse and settlement != underlying:
        raise InstrumentError(f"instrument {name!r}: an inverse contract settles in its underlying {underlying!r}, "
                              f"not {settlement!r}")
    expiry, strike, option_type = definition.get("expiry_ms"), definition.get("strike"), definition.get("option_type")
    if kind is not Kind.PERPETUAL and expiry is None:
        raise InstrumentError(f"instrument {name!r}: a {kind} needs expiry_ms")
    if kind is Kind.OPTION and (strike is None or not strike > 0 or option_type not in ("call", "put")):
        raise InstrumentError(f"instrument {name!r}: an option needs a positive strike and option_type call or put")
    expiry_ms = None if expiry is None or kind is Kind.PERPETUAL else int(expiry)
    if kind is Kind.OPTION and strike is not None:
        return Instrument(name, kind, underlying, expiry_ms, float(strike), option_type == "call", float(size),
                          settlement, inverse)
    return Instrument(name, kind, underlying, expiry_ms, None, None, float(size), settlement, inverse)


@dataclasses.dataclass(frozen=True, eq=False)
class InstrumentTable:
    """Instruments as parallel numpy arrays, the shape the vectorised pricer and margin want.

    ``underlying_idx`` indexes ``underlyings`` (sorted, so the same set of instruments always
    gives the same layout). Non-options carry strike NaN and is_call False; perpetuals carry
    expiry_ms -1. ``inverse`` marks the coin-settled instruments.
    """

    instruments: tuple[Instrument, ...]
    underlyings: tuple[str, ...]
    kind: np.ndarray  # int8 KIND_CODE
    underlying_idx: np.ndarray  # int64
    strike: np.ndarray  # float64
    expiry_ms: np.ndarray  # int64
    is_call: np.ndarray  # bool
    contract_size: np.ndarray  # float64
    inverse: np.ndarray  # bool

    @classmethod
    def of(cls, instruments: Iterable[Instrument]) -> InstrumentTable:
        items = tuple(instruments)
        names = [i.name for i in items]
        if len(set(names)) != len(names):
            raise InstrumentError("instrument table: duplicate instrument names")
        underlyings = tuple(sorted({i.underlying for i in items}))
        position = {u: k for k, u in enumerate(underlyings)}
        return cls(
            instruments=items,
            underlyings=underlyings,
            kind=np.array([KIND_CODE[i.kind] for i in items], dtype=np.int8),
            underlying_idx=np.array([position[i.underlying] for i in items], dtype=np.int64),
            strike=np.array([i.strike if i.strike is not None else np.nan for i in items], dtype=np.float64),
            expiry_ms=np.array([i.expiry_ms if i.expiry_ms is not None else -1 for i in items], dtype=np.int64),
            is_call=np.array([bool(i.is_call) for i in items], dtype=bool),
            contract_size=np.array([i.contract_size for i in items], dtype=np.float64),
            inverse=np.array([i.inverse for i in items], dtype=bool),
        )

    @classmethod
    def parse(cls, names: Sequence[str]) -> InstrumentTable:
        return cls.of(parse_instrument(n) for n in names)

    def __len__(self) -> int:
        return len(self.instruments)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.instruments)

    def index(self) -> dict[str, int]:
        return {i.name: k for k, i in enumerate(self.instruments)}

    @property
    def is_option(self) -> np.ndarray:
        return self.kind == KIND_CODE[Kind.OPTION]
