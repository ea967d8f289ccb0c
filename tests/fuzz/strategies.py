"""Shared pieces of the fuzz tests: the worker's clock, key, codec and validator; a warmed-up
lane (the worker's engine and sequencer) built from the kit's crash script; and hypothesis
strategies for wire bytes, source references and schema-valid records carrying extreme or contradictory values.

Records are generated from the Avro schemas themselves (``from_schema``), so every record type
is covered and every generated datum encodes; named fields (times, accounts, instruments,
assets, underlyings) get domain-aware values that mix the scenario's real names with unknown
and malformed ones.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Mapping
from typing import Any

from hypothesis import HealthCheck
from hypothesis import strategies as st

from pipelines.engine.engine import EngineOutput, EngineParams
from pipelines.engine.shard import Message
from pipelines.events.codec import DecodeError, default_codec
from pipelines.events.validation import Validator
from pipelines.policy.signing import SigningKey
from pipelines.risk.instruments import InstrumentError, parse_instrument
from pipelines.topics import CATALOGUE
from pipelines.worker.intake import SHARD_SOURCES, Refused, admit
from pipelines.worker.lane import Lane
from tests.kit.crash import CALL, PERP, PUT, T0, crash_events

KEY = SigningKey("k", b"0123456789abcdef0123")
CODEC = default_codec()
VALIDATOR = Validator()  # as the worker builds it: no instrument list, a day into the past, 5 min ahead
DAY_MS = 86_400_000
NOW_MS = T0 + 60_000  # the worker's wall clock in these tests: a minute after the crash script starts
MAX_PAST_MS, MAX_FUTURE_MS = VALIDATOR.max_past_ms, VALIDATOR.max_future_ms
INT64 = (-(2**63), 2**63 - 1)
INT32 = (-(2**31), 2**31 - 1)

HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

TOPIC_OF = {record: topic for topic, record in SHARD_SOURCES.items()}
ACCOUNTS = ("hedged-desk", "levered-long", "short-puts", "whale-safe")
DECODE_REASONS = frozenset({"missing_value", "bad_magic", "truncated", "unknown_schema_id", "wrong_record_type",
                            "malformed"})
VALIDATION_REASONS = frozenset({"nan_price", "negative_price", "implausible_price", "non_finite", "not_positive",
                                "negative_value", "out_of_range", "unknown_instrument", "bad_instrument_name",
                                "event_time_out_of_range"})


def record_names() -> tuple[str, ...]:
    """Every record the codec knows (ExposureSnapshot, DeadLetter, ... included)."""
    from tests.kit.records import RECORDS as SAMPLED

    return tuple(SAMPLED)


# ---------------------------------------------------------------------- scalars

#: floats a producer could put on the wire: specials, boundaries, subnormals, and anything at all
SPECIAL_FLOATS = (0.0, -0.0, 5e-324, -5e-324, 1e-300, 1e300, -1e300, 1.7976931348623157e308,
                  -1.7976931348623157e308, math.inf, -math.inf, math.nan, -1.0, 1.0)
extreme_floats = st.one_of(st.sampled_from(SPECIAL_FLOATS), st.floats())
#: mostly plausible numbers, often extreme ones
numbers = st.one_of(st.floats(min_value=0.001, max_value=100_000.0), st.floats(min_value=0.001, max_value=100_000.0),
                    extreme_floats)


def event_times(now_ms: int = NOW_MS) -> st.SearchStrategy[int]:
    """Event times inside the validator's window, at its edges, just outside, and anywhere."""
    lo, hi = now_ms - MAX_PAST_MS, now_ms + MAX_FUTURE_MS
    return st.one_of(
        st.integers(T0, now_ms + 30_000),  # where the scenario is
        st.integers(T0, now_ms + 30_000),
        st.integers(lo, hi),
        st.sampled_from([lo, hi, lo - 1, hi + 1, 0, -1, INT64[0], INT64[1]]),
        st.integers(*INT64),
    )


def int64s() -> st.SearchStrategy[int]:
    return st.one_of(st.integers(-5, 10_000), st.sampled_from([INT64[0], INT64[1], 0, -1]), st.integers(*INT64))


short_text = st.text(max_size=12)
accounts = st.one_of(st.sampled_from(ACCOUNTS), st.sampled_from(ACCOUNTS), st.sampled_from(["", "acct-x", "ünï"]),
                     short_text)
KNOWN_INSTRUMENTS = (PERP, PUT, CALL)
UNKNOWN_INSTRUMENTS = ("ETH-PERPETUAL", "SOL-27DEC26-100-C", "BTC-27DEC25-50000-P", "BTC-28MAR27", "btc-perpetual",
                       "XRP_USDC-27DEC26-0d625-C")
MALFORMED_INSTRUMENTS = ("BTC-FOO", "BTC-31FEB27", "BTC-27DEC26-0-C", "BTC-27DEC26-60000-X", "BTC", "BTC-", "-",
                         "", "BTC-27DEC26-1e5-C", "BTC-PERPETUAL-X-Y-Z")
instruments = st.one_of(st.sampled_from(KNOWN_INSTRUMENTS), st.sampled_from(KNOWN_INSTRUMENTS),
                        st.sampled_from(UNKNOWN_INSTRUMENTS), st.sampled_from(MALFORMED_INSTRUMENTS), short_text)
underlyings = st.one_of(st.just("BTC"), st.just("BTC"), st.sampled_from(["ETH", "btc", "", "BTC-PERPETUAL"]),
                        short_text)
assets = st.one_of(st.sampled_from(["USDC", "USD", "USDT", "BTC"]), st.sampled_from(["DOGE", "ETH", "", "usdc"]),
                   short_text)

FIELD_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "event_time_ms": event_times(),
    "account": accounts,
    "instrument": instruments,
    "underlying": underlyings,
    "asset": assets,
    "sequence": int64s(),
    "expiry_ms": int64s(),
    "publish_time_ms": st.one_of(event_times(), int64s()),
}


# ---------------------------------------------------------------------- records from the schemas

def _primitive(name: str) -> st.SearchStrategy[Any]:
    return {
        "null": st.none(),
        "boolean": st.booleans(),
        "int": st.one_of(st.integers(-3, 200), st.integers(*INT32)),
        "long": int64s(),
        "float": st.floats(width=32),
        "double": numbers,
        "bytes": st.binary(max_size=40),
        "string": short_text,
    }[name]


def _strategy(t: Any, named: dict[str, Any], overrides: Mapping[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    if isinstance(t, list):  # a union
        return st.one_of([_strategy(branch, named, overrides) for branch in t])
    if isinstance(t, dict):
        kind = t["type"]
        if kind == "record":
            named[t["name"]] = t
            named[t["name"].rsplit(".", 1)[-1]] = t
            fields = {}
            for field in t["fields"]:
                override = overrides.get(field["name"])
                ftype = field["type"]
                if override is not None:
                    nullable = isinstance(ftype, list) and "null" in ftype
                    fields[field["name"]] = st.one_of(st.none(), override) if nullable else override
                else:
                    fields[field["name"]] = _strategy(ftype, named, overrides)
            return st.fixed_dictionaries(fields)
        if kind == "enum":
            named[t["name"]] = t
            return st.sampled_from(t["symbols"])
        if kind == "array":
            return st.lists(_strategy(t["items"], named, overrides), max_size=3)
        if kind == "map":
            return st.dictionaries(short_text, _strategy(t["values"], named, overrides), max_size=3)
        return _strategy(kind, named, overrides)
    if t in named:
        return _strategy(named[t], named, overrides)
    short = t.rsplit(".", 1)[-1]
    if short in named:
        return _strategy(named[short], named, overrides)
    return _primitive(t)


@functools.cache
def from_schema(record: str, **overrides: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Schema-valid datums of ``record`` (they always encode), with extreme values everywhere."""
    return _strategy(CODEC.schemas[record].json, {}, {**FIELD_STRATEGIES, **overrides})


# ---------------------------------------------------------------------- wire values

def encoded_samples() -> list[bytes]:
    from tests.kit.records import RECORDS as SAMPLED
    from tests.kit.records import sample

    return [CODEC.encode(record, sample(record)) for record in SAMPLED]


@st.composite
def mutated(draw: st.DrawFn, originals: list[bytes]) -> bytes:
    """A valid encoding, then truncated, extended, or with bytes overwritten (never unchanged)."""
    original = draw(st.sampled_from(originals))
    data = bytearray(original)
    how = draw(st.sampled_from(["truncate", "extend", "flip", "splice"]))
    if how == "truncate":
        return bytes(data[:draw(st.integers(0, max(0, len(data) - 1)))])
    if how == "extend":
        return bytes(data) + draw(st.binary(min_size=1, max_size=20))
    if how == "flip":
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        if data == original:
            data[i] ^= 0xFF
        return bytes(data)
    i = draw(st.integers(5, max(5, len(data))))
    return bytes(data[:i]) + draw(st.binary(min_size=1, max_size=30)) + bytes(data[i:])


def framed(schema_ids: st.SearchStrategy[int] | None = None) -> st.SearchStrategy[bytes]:
    """The Confluent frame (magic 0, a schema id) around random bytes."""
    ids = schema_ids or st.one_of(st.integers(0, 40), st.integers(0, 2**32 - 1))
    return st.builds(lambda sid, body: struct.pack(">bI", 0, sid) + body, ids, st.binary(max_size=120))


def wire_values() -> st.SearchStrategy[bytes | None]:
    """Anything a producer could put in a message value: nothing, noise, framed noise, damaged records."""
    return st.one_of(st.none(), st.binary(max_size=200), framed(), mutated(encoded_samples()))


# ---------------------------------------------------------------------- source coordinates

SOURCE_TOPICS = tuple(sorted(SHARD_SOURCES))
OTHER_TOPICS = tuple(sorted({spec.name for spec in CATALOGUE} - set(SHARD_SOURCES))) + ("", "positions", "x:y")


def topics() -> st.SearchStrategy[str]:
    """Topics a record may come from: the worker's inputs, other catalogue topics, arbitrary text."""
    return st.one_of(st.sampled_from(SOURCE_TOPICS), st.sampled_from(OTHER_TOPICS), short_text)


# ---------------------------------------------------------------------- lanes

def topic_for(record: str) -> str:
    return TOPIC_OF[record]


def take(lane: Lane, value: bytes | None, topic: str, partition: int, offset: int,
         now_ms: int = NOW_MS) -> Message | Refused:
    """What the worker's ``_read`` does with one record of an input of ``lane``: admit it, push
    it if admitted, note it as read past if refused (the worker dead-letters it)."""
    admitted = admit(CODEC, VALIDATOR, value, topic, partition, offset, now_ms)
    if isinstance(admitted, Refused):
        lane.skip(f"{topic}/{partition}", offset)
    else:
        lane.push(admitted)
    return admitted


def message(record: str, value: dict[str, Any], offset: int, partition: int = 0, topic: str | None = None) -> Message:
    """A valid message as the worker would admit it (no bytes round trip)."""
    topic = topic or topic_for(record)
    return Message(f"{topic}/{partition}", offset, f"{topic}:{partition}:{offset}", record, value)


#: the crash script's first events: index and vol, four accounts' collateral and positions, ~20 s of ticks
WARMUP = crash_events()[:40]


def next_offset(lane: Lane, record: str, partition: int = 0) -> int:
    return lane.next_offset(f"{topic_for(record)}/{partition}")


def drain(lane: Lane) -> EngineOutput:
    """Every input idle, then everything queued through the engine (the end of a stream)."""
    lane.sequencer.idle_all()
    return lane.release()


def warm_lane(drained: bool = True) -> Lane:
    """A lane holding every account (one account partition of one) that has read ``WARMUP``
    (drained: the engine holds the accounts)."""
    lane = Lane.fresh(KEY, EngineParams(), 1, [0])
    for record, value in WARMUP:
        lane.push(message(record, value, next_offset(lane, record)))
        lane.release()
    if drained:
        drain(lane)
    return lane


def last_warmup_time() -> int:
    return max(value["event_time_ms"] for _, value in WARMUP)


def framed_schema_id(value: bytes | None) -> int | None:
    """The schema id in the Confluent header of ``value`` (0..2**32-1), None when it has none."""
    if not value or len(value) < 5 or value[0] != 0:
        return None
    return int.from_bytes(value[1:5], "big")


def over_int32_schema_ids() -> st.SearchStrategy[bytes]:
    """Values framed with a schema id of 2**31 or more (first byte 0x00, second 0x80..0xff), which
    ``DeadLetter.schema_id`` (an Avro ``int``) cannot hold. Their dead letters once failed to
    encode, stopping the worker and the executor (found by the fuzz tests); ``dead_letter`` now
    stores None for them (``test_a_schema_id_above_int32_*``)."""
    return st.builds(lambda high, rest, body: bytes([0, high]) + rest + body, st.integers(0x80, 0xFF),
                     st.binary(min_size=3, max_size=3), st.binary(max_size=40))


def dead_letter_schema_id(value: bytes | None) -> int | None:
    """What a dead letter of ``value`` must carry as ``schema_id``: the framed id if an Avro int holds it."""
    sid = framed_schema_id(value)
    return sid if sid is not None and sid < 2**31 else None


def decodes(value: bytes | None) -> bool:
    try:
        CODEC.decode(value)
    except DecodeError:
        return False
    return True


def parses(name: str) -> bool:
    """Whether the risk core can price ``name``: the oracle the validator's instrument check is
    held to (called directly, not through the validator's cached wrapper)."""
    try:
        parse_instrument(name)
    except InstrumentError:
        return False
    return True
