"""Value checks on decoded records: pure functions returning a reason code, or None when valid.

What to check comes from the schemas themselves: a field carrying ``"backstop.check"`` is checked
as

* ``price``        finite, >= 0 and at most ``MAX_PRICE`` (``nan_price`` / ``negative_price`` /
  ``implausible_price``; +-inf is ``non_finite``);
* ``positive_price`` a ``price`` that is also > 0 (``not_positive``): an index or oracle price of
  zero is a broken feed, and every ratio against it would divide by zero;
* ``positive``     finite and > 0 (contract and tick sizes; ``not_positive``);
* ``nonnegative``  finite and >= 0 (sizes, IVs, filled quantities; ``negative_value``);
* ``fraction``     finite and within [0, 1] (a share; ``out_of_range``);
* ``quantity``     finite, any sign (positions, balances, fees);
* ``instrument``   a known instrument, when a set of known instruments is given; else a name
  the risk core can price (``parse_instrument``: a real expiry date, a positive strike), since
  an unpriceable position would fail every later revaluation of its account;
* ``instrument_name`` a well-formed Deribit instrument name (the definition itself);
* ``event_time``   within ``[now - max_past_ms, now + max_future_ms]`` of a reference ``now`` that
  the caller passes in (wall clock live, the replay clock in a replay) -- never read here.

Null optional fields are not checked. Nested records (book levels, smile points) are checked too.
``validate`` returns the first problem as a ``Problem`` (reason + detail) so a dead letter says
which field was wrong.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

from pipelines.events.schemas import CHECK_ATTR, SchemaSet, default_schemas
from pipelines.risk.instruments import InstrumentError, parse_instrument

# reason codes (also the DeadLetter.reason values); decode reasons live in codec.DecodeError
NAN_PRICE = "nan_price"
NEGATIVE_PRICE = "negative_price"
IMPLAUSIBLE_PRICE = "implausible_price"
NON_FINITE = "non_finite"
NOT_POSITIVE = "not_positive"
NEGATIVE_VALUE = "negative_value"
OUT_OF_RANGE = "out_of_range"
UNKNOWN_INSTRUMENT = "unknown_instrument"
BAD_INSTRUMENT_NAME = "bad_instrument_name"
EVENT_TIME_OUT_OF_RANGE = "event_time_out_of_range"

#: no market quotes a unit at a trillion dollars; a larger price is a broken feed, and the risk
#: core's products and squares of it (notional x scenario move, squared for the gamma add-on)
#: overflow to inf and NaN (docs/risk-model.md: the margin ratio then fails closed)
MAX_PRICE = 1e12
DEFAULT_MAX_PAST_MS = 24 * 3600 * 1000  # a day: older events belong to a replay, with its own clock
DEFAULT_MAX_FUTURE_MS = 5 * 60 * 1000  # five minutes of clock skew

MONTHS = "JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC"
INSTRUMENT_NAME = re.compile(
    rf"^(?P<underlying>[A-Z0-9]+(?:_[A-Z0-9]+)?)-(?:PERPETUAL|(?P<expiry>\d{{1,2}}(?:{MONTHS})\d{{2}})"
    rf"(?:-(?P<strike>\d+(?:d\d+)?)-(?P<cp>[CP]))?)$"
)


def price_problem(value: float) -> str | None:
    """``nan_price`` / ``negative_price`` / ``non_finite`` / ``implausible_price`` / None."""
    if value != value:  # NaN, fast
        return NAN_PRICE
    if value < 0:
        return NEGATIVE_PRICE
    if value == math.inf:
        return NON_FINITE
    if value > MAX_PRICE:
        return IMPLAUSIBLE_PRICE
    return None


def quantity_problem(value: float) -> str | None:
    return None if math.isfinite(value) else NON_FINITE


def event_time_problem(event_time_ms: int, now_ms: int, max_past_ms: int = DEFAULT_MAX_PAST_MS,
                       max_future_ms: int = DEFAULT_MAX_FUTURE_MS) -> str | None:
    if event_time_ms < now_ms - max_past_ms or event_time_ms > now_ms + max_future_ms:
        return EVENT_TIME_OUT_OF_RANGE
    return None


def instrument_name_problem(name: str) -> str | None:
    """None for a well-formed Deribit name (BTC-PERPETUAL, BTC-27DEC26, BTC-27DEC26-60000-C)."""
    return None if INSTRUMENT_NAME.match(name) else BAD_INSTRUMENT_NAME


@functools.lru_cache(maxsize=65_536)
def unpriceable_instrument_problem(name: str) -> str | None:
    """None for a name the risk core parses (cached: a stream repeats a few thousand names)."""
    try:
        parse_instrument(name)
    except InstrumentError:
        return BAD_INSTRUMENT_NAME
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class Problem:
    reason: str
    detail: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


def _compile_record(fields: list[Mapping[str, Any]], named: dict[str, list]) -> list[tuple[str, str, Any]]:
    """(field name, check kind, nested checks for arrays of records) for one record's fields."""
    compiled: list[tuple[str, str, Any]] = []
    for field in fields:
        kind = field.get(CHECK_ATTR)
        if kind:
            compiled.append((field["name"], kind, None))
        nested = _nested_record_fields(field["type"], named)
        if nested is not None:
            compiled.append((field["name"], "nested", nested))
    return compiled


def _nested_record_fields(type_: Any, named: dict[str, list]) -> Any:
    if isinstance(type_, list):
        for branch in type_:
            found = _nested_record_fields(branch, named)
            if found is not None:
                return found
        return None
    if isinstance(type_, str):
        return named.get(type_.rsplit(".", 1)[-1])
    if isinstance(type_, dict):
        if type_.get("type") == "record":
            checks = _compile_record(type_["fields"], named)
            named[type_["name"]] = checks
            return checks if checks else None
        if type_.get("type") == "array":
            return _nested_record_fields(type_["items"], named)
    return None


class Validator:
    """Checks decoded records against their schema's ``backstop.check`` annotations.

    ``known_instruments``: a set (or any container) of instrument names; None skips the check
    (e.g. before the instrument topic has been read). It may be mutated by the caller as
    definitions arrive.
    """

    def __init__(self, schemas: SchemaSet | None = None, known_instruments: Collection[str] | None = None,
                 max_past_ms: int = DEFAULT_MAX_PAST_MS, max_future_ms: int = DEFAULT_MAX_FUTURE_MS) -> None:
        self.schemas = schemas or default_schemas()
        self.known_instruments = known_instruments
        self.max_past_ms = max_past_ms
        self.max_future_ms = max_future_ms
        self._compiled: dict[str, list] = {}

    def _checks(self, record: str) -> list:
        checks = self._compiled.get(record)
        if checks is None:
            checks = self._compiled[record] = self._bind(_compile_record(self.schemas[record].json["fields"], {}))
        return checks

    def _bind(self, compiled: list[tuple[str, str, Any]]) -> list[tuple[str, Any, Any]]:
        """(field, check function of (value, now_ms), None) or (field, None, nested checks)."""
        return [(name, None, self._bind(nested)) if kind == "nested" else (name, self._check_of(kind), None)
                for name, kind, nested in compiled]

    def _check_of(self, kind: str) -> Callable[[Any, int], str | None]:
        if kind == "price":
            return lambda v, _now: price_problem(v)
        if kind == "positive_price":
            return lambda v, _now: price_problem(v) or (NOT_POSITIVE if v == 0 else None)
        if kind == "quantity":
            return lambda v, _now: quantity_problem(v)
        if kind == "nonnegative":
            return lambda v, _now: quantity_problem(v) or (NEGATIVE_VALUE if v < 0 else None)
        if kind == "fraction":
            return lambda v, _now: quantity_problem(v) or (OUT_OF_RANGE if not 0.0 <= v <= 1.0 else None)
        if kind == "positive":
            return lambda v, _now: quantity_problem(v) or (NOT_POSITIVE if v <= 0 else None)
        if kind == "instrument":
            return self._instrument_problem
        if kind == "instrument_name":
            return lambda v, _now: instrument_name_problem(v)
        if kind == "event_time":
            return lambda v, now: event_time_problem(v, now, self.max_past_ms, self.max_future_ms)
        raise ValueError(f"unknown {CHECK_ATTR} kind {kind!r}")

    def _instrument_problem(self, v: str, _now: int) -> str | None:
        known = self.known_instruments  # read at each call: the caller may swap or grow it
        if known is not None:
            return UNKNOWN_INSTRUMENT if v not in known else None
        return unpriceable_instrument_problem(v)

    def validate(self, record: str, value: Mapping[str, Any], now_ms: int) -> Problem | None:
        """The first problem of ``value`` (a decoded ``record``), or None when it is valid."""
        return self._run(self._checks(record), value, now_ms, "")

    def reason(self, record: str, value: Mapping[str, Any], now_ms: int) -> str | None:
        problem = self.validate(record, value, now_ms)
        return problem.reason if problem else None

    def _run(self, checks: list, value: Mapping[str, Any], now_ms: int, path: str) -> Problem | None:
        for name, check, nested in checks:
            v = value.get(name)
            if v is None:
                continue
            if nested is not None:
                items = v if isinstance(v, list) else [v]
                for i, item in enumerate(items):
                    problem = self._run(nested, item, now_ms, f"{path}{name}[{i}].")
                    if problem:
                        return problem
                continue
            reason = check(v, now_ms)
            if reason:
                return Problem(reason, f"{path}{name}={v!r}")
        return None


def validate(record: str, value: Mapping[str, Any], *, now_ms: int, known_instruments: Collection[str] | None = None,
             max_past_ms: int = DEFAULT_MAX_PAST_MS, max_future_ms: int = DEFAULT_MAX_FUTURE_MS) -> str | None:
    """Convenience: the reason code of the first problem, or None (builds a Validator each call)."""
    return Validator(None, known_instruments, max_past_ms, max_future_ms).reason(record, value, now_ms)
