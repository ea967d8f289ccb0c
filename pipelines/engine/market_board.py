"""The latest market state one shard has seen, and what the risk core needs from it.

Fed by decoded market records (``IndexPrice``, ``MarkPrice``, ``VolatilityUpdate``,
``OrderBookDepth``, ``OraclePrice``, ``InstrumentDefinition``). Index prices are USD; an
underlying's vol comes from an underlying-level ``VolatilityUpdate`` (no instrument), an
instrument's from an instrument-level one or the mark's IV.

An instrument's ``InstrumentDefinition`` is the source of truth for what it is (kind, strike,
expiry, inverse, settlement currency, contract size): ``instruments`` holds the instrument each
definition describes, and the account book builds its table from them, falling back to the
name for an instrument never defined (or whose definition contradicts itself: valued by its name,
linear with contract size 1, as before definitions were read).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Self

import numpy as np

from pipelines.risk.adaptive import ConditionBuffers, HeldConditions, MarketConditions
from pipelines.risk.instruments import Instrument, InstrumentError, instrument_from_definition, underlying_of
from pipelines.risk.market import MarketState, UnderlyingMarket, check_positive

DEPTH_BAND_BPS = 100  # depth is read within 1 % of mid, the adaptive engine's band


@dataclasses.dataclass
class MarketBoard:
    default_vol: float = 0.6
    index: dict[str, float] = dataclasses.field(default_factory=dict)
    vol: dict[str, float] = dataclasses.field(default_factory=dict)
    instrument_iv: dict[str, float] = dataclasses.field(default_factory=dict)
    marks: dict[str, float] = dataclasses.field(default_factory=dict)
    depth_usd: dict[str, float] = dataclasses.field(default_factory=dict)
    definitions: dict[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    updated: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)  # (record, key) -> event time
    # derived from ``definitions`` (not state): the instrument each valid definition describes
    instruments: dict[str, Instrument] = dataclasses.field(init=False, compare=False, repr=False)
    # what ``market_state`` and ``conditions`` made last (not state: made again from the fields above)
    _markets: dict[str, UnderlyingMarket] = dataclasses.field(default_factory=dict, init=False, compare=False,
                                                               repr=False)
    _depth_of: dict[str, float] | None = dataclasses.field(default=None, init=False, compare=False, repr=False)
    _depth: dict[str, float] = dataclasses.field(default_factory=dict, init=False, compare=False, repr=False)
    _conditions: MarketConditions | None = dataclasses.field(default=None, init=False, compare=False, repr=False)
    # the arrays the conditions it makes write their ``arrays`` into (``HeldConditions.buffers``)
    _buffers: ConditionBuffers = dataclasses.field(
        default_factory=lambda: ConditionBuffers((), np.zeros(0), np.zeros(0)), init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.instruments = {}
        for value in self.definitions.values():
            self._define(value)

    def _define(self, value: Mapping[str, Any]) -> None:
        """Hold the instrument a definition describes; one that contradicts itself leaves the
        instrument to its name (the events' validation dead-letters such records first)."""
        try:
            self.instruments[value["instrument"]] = instrument_from_definition(value)
        except InstrumentError:
            self.instruments.pop(value["instrument"], None)

    def apply(self, record: str, value: Mapping[str, Any]) -> str | None:
        """Update from one market record other than an index or mark price (those go by runs,
        ``apply_indexes`` and ``apply_marks``); return the underlying it moved (None if none). A
        record older than the one the board holds for the same thing changes nothing: an input
        may deliver an event out of order (the ``Sequencer`` keeps each input's own order).
        ValueError for an index or mark price."""
        if record in ("IndexPrice", "MarkPrice"):
            raise ValueError(f"{record} records go to apply_indexes or apply_marks")
        key = (record, value.get("instrument") or value.get("underlying") or "")
        t = value["event_time_ms"]
        if t < self.updated.get(key, t):
            return None
        self.updated[key] = t
        if record == "VolatilityUpdate":
            if value.get("iv") is None:
                return None
            if value.get("instrument"):
                self.instrument_iv[value["instrument"]] = value["iv"]
            else:
                self.vol[value["underlying"]] = value["iv"]
            return value["underlying"]
        if record == "OrderBookDepth":
            reference = self.marks.get(value["instrument"]) or self.index.get(underlying_of(value["instrument"]))
            self.depth_usd[value["instrument"]] = depth_within(value, DEPTH_BAND_BPS, reference)
            return None
        if record == "InstrumentDefinition":
            self.definitions[value["instrument"]] = value
            self._define(value)
            return None
        return None

    def apply_indexes(self, values: Sequence[Mapping[str, Any]]) -> list[str | None]:
        """``apply`` of a run of ``IndexPrice`` records, in order, in one pass: per record the
        underlying it moved, None where an older record changed nothing."""
        updated, index = self.updated, self.index
        moved: list[str | None] = []
        for value in values:
            underlying = value["underlying"]
            key = ("IndexPrice", underlying)
            t = value["event_time_ms"]
            if t < updated.get(key, t):
                moved.append(None)
                continue
            updated[key] = t
            index[underlying] = value["price"]
            moved.append(underlying)
        return moved

    def apply_marks(self, values: Sequence[Mapping[str, Any]]) -> list[str | None]:
        """``apply`` of a run of ``MarkPrice`` records, in order, in one pass: per record the
        underlying it moved, None where an older record changed nothing."""
        updated, marks, ivs = self.updated, self.marks, self.instrument_iv
        moved: list[str | None] = []
        for value in values:
            key = ("MarkPrice", value.get("instrument") or value.get("underlying") or "")
            t = value["event_time_ms"]
            if t < updated.get(key, t):
                moved.append(None)
                continue
            updated[key] = t
            instrument = value["instrument"]
            marks[instrument] = value["mark_price"]
            iv = value.get("mark_iv")
            if iv:
                ivs[instrument] = iv
            moved.append(value["underlying"])
        return moved

    def state(self) -> dict:
        """The board as plain data (``MarketBoardState``): ``updated`` as records in its order,
        ``definitions`` as the decoded ``InstrumentDefinition`` records they are."""
        return {"default_vol": self.default_vol, "index": dict(self.index), "vol": dict(self.vol),
                "instrument_iv": dict(self.instrument_iv), "marks": dict(self.marks), "depth_usd": dict(self.depth_usd),
                "definitions": {instrument: dict(value) for instrument, value in self.definitions.items()},
                "updated": [{"record": record, "key": key, "event_time_ms": t}
                            for (record, key), t in self.updated.items()]}

    @classmethod
    def from_state(cls, state: dict) -> Self:
        return cls(state["default_vol"], dict(state["index"]), dict(state["vol"]), dict(state["instrument_iv"]),
                   dict(state["marks"]), dict(state["depth_usd"]),
                   {instrument: dict(value) for instrument, value in state["definitions"].items()},
                   {(u["record"], u["key"]): u["event_time_ms"] for u in state["updated"]})

    def market_state(self, time_ms: int, underlyings: Collection[str]) -> MarketState:
        """The market of ``underlyings`` at ``time_ms`` (an ``int``); MarketError names the first
        index or vol that is not a positive finite number, or instrument IV above 0 that is not
        finite (IVs not above 0 are left out). Checked here, per tick, for what the tick reads:
        the worker's intake validates records, but a replay file or a direct caller may not."""
        markets = {u: self._underlying_market(u) for u in sorted(underlyings)}
        ivs = {name: check_positive(iv, f"instruments.{name}.iv") for name, iv in self.instrument_iv.items()
               if iv > 0 and underlying_of(name) in underlyings}
        return MarketState.of_valid(int(time_ms), markets, ivs)

    def _underlying_market(self, underlying: str) -> UnderlyingMarket:
        """``underlying``'s checked market, made again only when its index or vol changed: the one
        made last is kept while both are the same positive finite floats (equal such floats are
        the same bits, so it is the market ``check_positive`` would make of them)."""
        index, vol = self.index[underlying], self.vol.get(underlying, self.default_vol)
        made = self._markets.get(underlying)
        if made is None or type(index) is not float or type(vol) is not float or made.index != index \
                or made.vol != vol:
            made = self._markets[underlying] = UnderlyingMarket(
                check_positive(index, f"underlyings.{underlying}.index"),
                check_positive(vol, f"underlyings.{underlying}.vol"))
        return made

    def conditions(self, realised_vol: Mapping[str, float], underlyings: tuple[str, ...] = ()) -> MarketConditions:
        """Realised vol and the thinnest perpetual depth per underlying, for the adaptive add-on;
        the same object again while the realised vols and the depths equal those it was made of
        (``HeldConditions``: read-only; what reads them reads only ``> 0`` and finiteness of a
        zero, so 0.0 and -0.0 are the same to it). Conditions made new own the board's buffers
        (``ConditionBuffers``) and write their ``arrays(underlyings)`` into them, until the next
        ones made take them over: a tick's, read within the tick."""
        if self._depth_of is None or self._depth_of != self.depth_usd:
            depth: dict[str, float] = {}
            for instrument, usd in self.depth_usd.items():
                underlying = underlying_of(instrument)
                depth[underlying] = min(depth.get(underlying, math.inf), usd)
            self._depth_of, self._depth, self._conditions = dict(self.depth_usd), depth, None
        made = self._conditions
        if made is None or made.realised_vol != realised_vol:
            if underlyings != self._buffers.underlyings:
                self._buffers = ConditionBuffers(underlyings, np.empty(len(underlyings)), np.empty(len(underlyings)))
            made = self._conditions = self._buffers.owner = HeldConditions(realised_vol, self._depth, self._buffers)
        return made


def depth_within(depth: Mapping[str, Any], band_bps: int, reference_price: float | None) -> float:
    """One-side USD depth within ``band_bps`` of mid (the thinner side counts): the published
    band if there is one, else summed from the levels. Contracts are valued at mid (or, with no
    levels, at ``reference_price``)."""
    bids, asks = depth.get("bids", []), depth.get("asks", [])
    mid = (bids[0]["price"] + asks[0]["price"]) / 2 if bids and asks else reference_price
    if not mid:
        return 0.0
    for band in depth.get("bands", []):
        if band["band_bps"] == band_bps:
            return min(band["bid_quantity"], band["ask_quantity"]) * mid
    lo, hi = mid * (1 - band_bps / 1e4), mid * (1 + band_bps / 1e4)
    bid_usd = sum(level["price"] * level["quantity"] for level in bids if level["price"] >= lo)
    ask_usd = sum(level["price"] * level["quantity"] for level in asks if level["price"] <= hi)
    return min(bid_usd, ask_usd)
