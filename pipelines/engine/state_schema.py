"""Avro schemas of the risk core's state: what each class's ``state()`` returns, as data.

Every schema is a named record in namespace ``backstop.state``; a record used by others (a
window, a watermark, a held condition) is defined once, under its own name, and referred to by
full name. ``parse(name)`` gives fastavro's parsed form of one of them, with every named type it
refers to resolvable (``fastavro.schemaless_writer`` / ``schemaless_reader`` take it as is).

Conventions: every float is an Avro ``double`` (NaN and infinities survive a round trip);
every integer a ``long``; a value that may be absent a ``["null", ...]`` union defaulting to
null; a Python set a sorted array; a dict with non-string keys an array of records. The market
board's instrument definitions are the event schema's own ``backstop.events.InstrumentDefinition``.
"""

from __future__ import annotations

import functools
from typing import Any

import fastavro

from pipelines.events.schemas import default_schemas
from pipelines.policy.circuit import TradingState
from pipelines.policy.ladder import AccountState

NAMESPACE = "backstop.state"


def _record(name: str, doc: str, *fields: dict[str, Any]) -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": NAMESPACE, "doc": doc, "fields": list(fields)}


def _field(name: str, type_: Any, doc: str) -> dict[str, Any]:
    return {"name": name, "type": type_, "doc": doc}


def _optional(name: str, type_: Any, doc: str) -> dict[str, Any]:
    return {"name": name, "type": ["null", type_], "default": None, "doc": doc}


def _array(items: Any) -> dict[str, Any]:
    return {"type": "array", "items": items}


def _map(values: Any) -> dict[str, Any]:
    return {"type": "map", "values": values}


def _ref(name: str) -> str:
    return f"{NAMESPACE}.{name}"


SAMPLE = _record(
    "SampleState", "One observation of a rolling window (pipelines.detect.windows.Sample).",
    _field("event_time_ms", "long", "Event time, UTC epoch ms."),
    _field("value", "double", "The observed value."),
    _field("ref", "string", "Reference of the event that carried it (topic:partition:offset)."))

WATERMARK = _record(
    "WatermarkState", "The newest event time seen for one key (pipelines.detect.windows.Watermark).",
    _field("allowed_lateness_ms", "long", "How far behind the newest an event may be and still be used."),
    _optional("max_event_time_ms", "long", "The newest event time seen; null before the first event."))

HELD_CONDITION = _record(
    "HeldConditionState", "A condition that must hold before it fires (pipelines.detect.windows.HeldCondition).",
    _field("hold_ms", "long", "How long the condition must hold, in event time."),
    _optional("pending_since_ms", "long", "When it started to hold; null when idle."),
    _field("firing", "boolean", "Whether it has fired and not cleared since."))

_WINDOW_FIELDS = (
    _field("length_ms", "long", "Window length in event time."),
    _field("allowed_lateness_ms", "long", "How late a sample may be and still be added."),
    _field("bucket_ms", "long", "Length of the buckets the window's start moves in."),
    _optional("first_ms", "long", "The earliest sample ever added; null before the first."),
    _field("recent", _array(_ref("SampleState")), "The samples of buckets not yet settled, sorted by event time."))

ROLLING_EXTREMES = _record(
    "RollingExtremesState", "A window's highs and lows (pipelines.detect.windows.RollingExtremes).",
    *_WINDOW_FIELDS,
    _field("settled_high", _array(_ref("SampleState")), "Settled buckets' highs that may still be a window's high."),
    _field("settled_low", _array(_ref("SampleState")), "Settled buckets' lows that may still be a window's low."))

ROLLING_TWAP = _record(
    "RollingTwapState", "A window's time-weighted average (pipelines.detect.windows.RollingTwap).",
    *_WINDOW_FIELDS,
    _optional("last_settled", _record(
        "TwapSampleState", "The last settled sample, with the running sum of value x time up to it.",
        _field("event_time_ms", "long", "Event time, UTC epoch ms."),
        _field("value", "double", "The sample's value."),
        _field("sum", "double", "Running sum of value x time up to the sample.")),
        "The last settled sample; null before any bucket settled."),
    _field("settled", _array(_record(
        "TwapBucketState", "A settled bucket: its first sample's time and running sum.",
        _field("event_time_ms", "long", "The first sample's event time."),
        _field("sum", "double", "Running sum of value x time up to that sample."))),
        "Settled buckets a window may still reach, oldest first."))

DETECTOR_ACCOUNT = _record(
    "DetectorAccountState", "What the detectors hold for one account (pipelines.detect.detectors.Detectors).",
    _field("margin", _ref("HeldConditionState"), "The margin-shortfall condition."),
    _field("liquidation", _ref("HeldConditionState"), "The equity-below-liquidation condition."),
    _field("withdrawals", _array(_record(
        "WithdrawalState", "A withdrawal large against equity, remembered for the lookback.",
        _field("event_time_ms", "long", "Event time of the collateral change."),
        _field("amount_usd", "double", "Amount withdrawn, USD."),
        _field("ref", "string", "Reference of the collateral event."))),
        "Recent large withdrawals, oldest first."),
    _optional("collateral_watermark", _ref("WatermarkState"), "The account's collateral watermark."),
    _optional("margin_watermark", _ref("WatermarkState"), "The account's margin watermark."))

DETECTOR_MARKET = _record(
    "DetectorMarketState", "Everything of the detectors that is not per account (Detectors.market_state).",
    _field("late_events", "long", "Late events counted so far."),
    _field("watermarks", _map(_ref("WatermarkState")), "Watermarks of market keys, by stream/key."),
    _field("index_windows", _map(_ref("RollingExtremesState")), "Index-move windows, by underlying."),
    _field("index_levels", _map("long"), "Index-move level reached, by underlying."),
    _field("iv_windows", _map(_ref("RollingExtremesState")), "IV-jump windows, by instrument or underlying."),
    _field("iv_firing", _array("string"), "Keys whose IV jump is firing, sorted."),
    _field("depth", _map(_ref("HeldConditionState")), "Liquidity conditions, by instrument."),
    _field("oracle_last", _map(_map(_record(
        "OracleQuoteState", "The last price an oracle source published.",
        _field("publish_time_ms", "long", "The source's publish time."),
        _field("price", "double", "The price published."),
        _field("ref", "string", "Reference of the oracle event.")))),
        "Last publish per underlying, then per source."),
    _field("oracle_twap", _map(_ref("RollingTwapState")), "Oracle TWAP windows, by underlying."),
    _field("oracle_stale", _array(_record(
        "OracleSourceState", "One oracle source of one underlying.",
        _field("underlying", "string", "The underlying."),
        _field("source", "string", "The oracle source."))),
        "Sources reported stale and not fresh since, sorted."),
    _field("oracle_deviating", _array("string"), "Underlyings whose sources disagree, sorted."),
    _field("oracle_off_twap", _array("string"), "Underlyings whose oracle is off its TWAP, sorted."),
    _field("mark_windows", _map(_ref("RollingExtremesState")), "Mark windows of the pump rule, by instrument."),
    _field("mark_firing", _map("double"),
           "Instruments whose mark manipulation is firing, with their price before the manipulation."),
    _field("mark_pumped", _array("string"), "Instruments of mark_firing firing as a thin-book pump, sorted."),
    _field("mark_delisted", _array("string"), "Instruments delisted after a pump, judged no more, sorted."))

LADDER_ACCOUNT = _record(
    "LadderAccountState", "One account's escalation ladder (pipelines.policy.ladder.Ladder).",
    _field("state", {"type": "enum", "name": "LadderState", "doc": "The ladder's states (AccountState).",
                     "symbols": [state.value for state in AccountState]}, "Where the account is on the ladder."),
    _optional("distress_since_ms", "long", "When the account entered distress; null when normal."),
    _optional("last_round_ms", "long", "When the last liquidation round ran; null before the first."),
    _field("breach_ids", _array("string"), "Breaches behind the ladder's actions, in order."),
    _optional("last_hedge_ms", "long", "When the last delta hedge went out; null before the first."),
    _field("in_flight", _map("double"), "Signed quantity sent per instrument and not yet in a position."))

PENALTY = _record(
    "PenaltyState", "A withdraw-then-liquidate account's penalty (pipelines.policy.gaming.Penalties).",
    _field("since_ms", "long", "Event time of the breach that imposed it."),
    _field("add_on", "double", "Margin add-on: maintenance and initial margin x (1 + add_on)."),
    _field("breach_ids", _array("string"), "The breach behind it."))

CIRCUIT_BREAKERS = _record(
    "CircuitBreakersState", "Every underlying's circuit breaker (pipelines.policy.circuit.CircuitBreakers).",
    _field("circuits", _map(_record(
        "CircuitState", "One underlying's circuit breaker.",
        _field("state", {"type": "enum", "name": "TradingState", "doc": "Trading states of a circuit.",
                         "symbols": [state.value for state in TradingState]}, "The trading state."),
        _field("level", "long", "The index-move level the halt is for; 0 when none."),
        _field("halted_until_ms", "long", "Event time until which the halt lasts."),
        _field("move_cleared", "boolean", "Whether the index move has cleared."),
        _field("breach_ids", _array("string"), "Breaches behind the halt, in order."))),
        "Circuits by underlying."))

MARKET_BOARD = _record(
    "MarketBoardState", "The latest market state (pipelines.engine.market_board.MarketBoard).",
    _field("default_vol", "double", "Vol of an underlying without a volatility update."),
    _field("index", _map("double"), "Index price by underlying."),
    _field("vol", _map("double"), "Implied vol by underlying."),
    _field("instrument_iv", _map("double"), "Implied vol by instrument."),
    _field("marks", _map("double"), "Mark price by instrument."),
    _field("depth_usd", _map("double"), "Depth within the band, USD, by instrument."),
    _field("definitions", _map("backstop.events.InstrumentDefinition"), "Instrument definitions by instrument."),
    _field("updated", _array(_record(
        "BoardUpdateState", "Event time of the newest record applied for one thing.",
        _field("record", "string", "Record type, e.g. IndexPrice."),
        _field("key", "string", "Its instrument or underlying ('' when none)."),
        _field("event_time_ms", "long", "Event time of the newest applied."))),
        "Newest event time applied, by record type and key, in the order first applied."))

INDEX_HISTORY = _record(
    "IndexHistoryState", "Recent index prices of one underlying (pipelines.engine.index_history.IndexHistory).",
    _field("seconds", _array(_record(
        "IndexSecondState", "One second of index ticks.",
        _field("start_ms", "long", "Where the second starts."),
        _field("first_ms", "long", "Event time of its first tick."),
        _field("first_price", "double", "Price of its first tick."),
        _field("first_squared", "double", "Squared log return into its first tick."),
        _field("squared", "double", "Sum of the squared log returns into its ticks."),
        _field("ticks", "long", "How many ticks it had."))),
        "The seconds held, oldest first."),
    _field("sum", "double", "Running sum of the seconds' squared returns."),
    _field("count", "long", "Ticks held."),
    _optional("last", _record(
        "IndexTickState", "One index tick.",
        _field("time_ms", "long", "Event time."),
        _field("price", "double", "Index price.")),
        "The newest tick; null before the first."))

#: every state schema by record name, each after the named types it refers to
SCHEMAS: dict[str, dict[str, Any]] = {schema["name"]: schema for schema in (
    SAMPLE, WATERMARK, HELD_CONDITION, ROLLING_EXTREMES, ROLLING_TWAP, DETECTOR_ACCOUNT, DETECTOR_MARKET,
    LADDER_ACCOUNT, PENALTY, CIRCUIT_BREAKERS, MARKET_BOARD, INDEX_HISTORY)}


@functools.cache
def _parsed() -> dict[str, Any]:
    named: dict[str, Any] = {}
    fastavro.parse_schema(dict(default_schemas()["InstrumentDefinition"].json), named_schemas=named)
    return {name: fastavro.parse_schema(schema, named_schemas=named) for name, schema in SCHEMAS.items()}


def parse(name: str) -> Any:
    """fastavro's parsed form of the state schema ``name`` (e.g. ``"DetectorMarketState"``)."""
    return _parsed()[name]
