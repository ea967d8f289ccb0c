"""Fuzzing the stream worker's intake: ``intake.admit`` in front of a ``Lane``.

What must hold for any record a producer can write:

* ``admit`` never raises; bytes that are not a valid record for their source topic, and records
  from topics that are no input of the worker, come back ``Refused`` with a reason code;
* a refused record never reaches the lane's engine: nothing is applied or held back, the lane
  goes on to the checkpoint of a lane that never saw it; only the input's read position moves
  past it (``Lane.skip``);
* an admitted record, however extreme its values, can be pushed, released and drained through a
  lane that holds real accounts, and everything the lane emits can be encoded;
* a redelivered offset changes nothing; late and out-of-order events give the same breaches,
  actions and exposures in any lane, in any interleaving of the inputs, across a checkpoint
  taken at a tick boundary and restored into a new lane.

The bugs these tests found (unparseable instruments, zero index, oracle and vol prices and a
subnormal index price crashing the engine; NaN margins leaving accounts 'normal' at a subnormal
index; schema ids >= 2**31 that could not be dead-lettered) are fixed. The tests at the end of
this module that pinned them are now regression tests, and the broad property tests push every
admitted input again.
"""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pipelines.engine.engine import EngineOutput, EngineParams
from pipelines.engine.partitions import export_partition
from pipelines.engine.shard import Message
from pipelines.engine.snapshot import (
    Checkpoint,
    MarketSnapshot,
    PartitionSnapshot,
    decode_checkpoint,
    encode_checkpoint,
)
from pipelines.engine.wire import action_record, breach_record
from pipelines.events.deadletter import dead_letter
from pipelines.worker.intake import SHARD_SOURCES, UNKNOWN_SOURCE, Refused, admit
from pipelines.worker.lane import AGAIN, LATE, TAKEN, Lane, account_inputs
from tests.fuzz.strategies import (
    CODEC,
    DECODE_REASONS,
    HEALTH,
    KEY,
    MALFORMED_INSTRUMENTS,
    MAX_FUTURE_MS,
    MAX_PAST_MS,
    NOW_MS,
    OTHER_TOPICS,
    PERP,
    PUT,
    SOURCE_TOPICS,
    T0,
    TOPIC_OF,
    VALIDATION_REASONS,
    VALIDATOR,
    WARMUP,
    dead_letter_schema_id,
    drain,
    from_schema,
    last_warmup_time,
    message,
    next_offset,
    over_int32_schema_ids,
    parses,
    record_names,
    short_text,
    take,
    topics,
    warm_lane,
    wire_values,
)

pytestmark = pytest.mark.fuzz

SHARD_RECORDS = tuple(sorted(TOPIC_OF))
REASONS = DECODE_REASONS | VALIDATION_REASONS | {UNKNOWN_SOURCE}
BASE_INDEX = 59_254.48  # BTC's last index price in WARMUP
OFFSETS = st.integers(0, 2**63 - 1)
PARTITIONS = st.integers(0, 2**31 - 1)


# ---------------------------------------------------------------------- helpers

def engine_state(lane: Lane) -> bytes:
    """The lane's partition and market as its checkpoint holds them, encoded (bytes: NaN equals
    NaN, no object identity), at the end of a run: everything applied, the tick closed at the
    next boundary as a parked lane closes it (an engine exports only there; with every input
    idle a lane would not park, as an input could still wake with an earlier event). Call it
    only on lanes compared with one another."""
    drain(lane)
    boundary = lane.next_boundary()
    lane.engine.close_tick(boundary)
    return encode_checkpoint(Checkpoint(
        PartitionSnapshot(0, 1, boundary, export_partition(lane.engine, lane.held, 0),
                          {name: lane.released[name] for name in account_inputs(0)}),
        MarketSnapshot(boundary, lane.engine.market_state(), lane.market_released())))


def lane_state(lane: Lane) -> tuple[dict, int, int, int]:
    """What a record reaching the lane changes at once (an engine exports its state only at a
    tick boundary): what was applied of each input, the events held back, the events counted
    late, the events the engine applied."""
    return dict(lane.released), lane.held_back(), lane.sequencer.late_events, lane.engine.events


def summary(out: EngineOutput) -> tuple[list, list, list]:
    """What a run emitted, by identity: breach ids, action ids (and their signatures), exposures."""
    return ([b.breach_id for b in out.breaches], [(a.action_id, a.signature) for a in out.actions],
            [(e["account"], e["event_time_ms"], repr(e["margin_ratio"]), e["state"]) for e in out.exposures])


def encode_outputs(out: EngineOutput) -> None:
    """Encode everything as the worker's ``_emit`` does (a failure here would stop the worker)."""
    encoded = [CODEC.encode("Breach", breach_record(b)) for b in out.breaches]
    encoded += [CODEC.encode("Action", action_record(a)) for a in out.actions]
    encoded += [CODEC.encode("ExposureSnapshot", e) for e in out.exposures]
    assert len(encoded) == len(out.breaches) + len(out.actions) + len(out.exposures)
    for action in out.actions:
        assert action.verify(KEY)


def index_tick(price: float, t: int) -> tuple[str, dict[str, Any]]:
    return "IndexPrice", {"underlying": "BTC", "index_name": "btc_usd", "price": price, "event_time_ms": t}


# ---------------------------------------------------------------------- (a) bytes and coordinates

@settings(max_examples=200, deadline=None, database=None, suppress_health_check=HEALTH)
@given(value=wire_values(), topic=topics(), partition=PARTITIONS, offset=OFFSETS)
def test_random_bytes_from_any_topic_are_refused_never_raised(value: bytes | None, topic: str, partition: int,
                                                              offset: int) -> None:
    result = admit(CODEC, VALIDATOR, value, topic, partition, offset, NOW_MS)
    assert isinstance(result, Refused), f"admitted {result!r}"
    assert result.reason in REASONS
    assert isinstance(result.detail, str) and result.detail


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=HEALTH)
@given(value=st.one_of(st.none(), st.binary(max_size=64)), topic=st.text(max_size=60),
       partition=st.integers(-(2**31), 2**31 - 1), offset=st.integers(-(2**63), 2**63 - 1),
       now_ms=st.integers(-(2**63), 2**63 - 1))
def test_admit_never_raises_on_any_coordinates_and_clock(value: bytes | None, topic: str, partition: int, offset: int,
                                                         now_ms: int) -> None:
    result = admit(CODEC, VALIDATOR, value, topic, partition, offset, now_ms)
    assert isinstance(result, Refused) and result.reason in REASONS


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=HEALTH)
@given(topic=st.one_of(st.sampled_from(SOURCE_TOPICS), st.sampled_from(OTHER_TOPICS),
                       short_text.filter(lambda t: t not in SHARD_SOURCES)),
       partition=st.integers(0, 2**31 - 1), offset=OFFSETS, price=st.floats(1.0, 1e6))
def test_only_records_of_the_workers_inputs_are_admitted(topic: str, partition: int, offset: int,
                                                         price: float) -> None:
    """A valid record of its topic is admitted with its coordinates (input, offset, source
    reference); the same bytes from a topic the worker does not read are ``unknown_source``."""
    record = SHARD_SOURCES.get(topic, "IndexPrice")
    value = CODEC.encode(record, _plausible(record, price))
    result = admit(CODEC, VALIDATOR, value, topic, partition, offset, NOW_MS)
    if topic not in SHARD_SOURCES:
        assert isinstance(result, Refused) and result.reason == UNKNOWN_SOURCE, result
    else:
        assert isinstance(result, Message), result
        assert (result.input, result.offset, result.ref, result.record) == (
            f"{topic}/{partition}", offset, f"{topic}:{partition}:{offset}", record)
        assert result.value == CODEC.decode(value).value


def _plausible(record: str, price: float) -> dict[str, Any]:
    """A valid datum of ``record`` at the tests' clock."""
    from tests.kit.records import sample

    return sample(record, event_time_ms=NOW_MS - 1000, **({"price": price} if record in ("IndexPrice", "OraclePrice")
                                                          else {}))


def dead_letter_as_the_worker_does(refused: Refused, value: bytes | None, topic: str, partition: int, offset: int,
                                   key: bytes | None) -> dict[str, Any]:
    """``Worker._dead_letter``: the DeadLetter datum, encoded as it goes to the topic."""
    record = dead_letter(reason=refused.reason, detail=refused.detail, topic=topic, partition=partition,
                         offset=offset, value=value, key=key, consumer="worker", event_time_ms=NOW_MS)
    return CODEC.decode(CODEC.encode("DeadLetter", record), expected="DeadLetter").value


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=HEALTH)
@given(value=st.one_of(wire_values(), st.sampled_from(SHARD_RECORDS).flatmap(
           lambda r: from_schema(r).map(lambda d: CODEC.encode(r, d))), over_int32_schema_ids()),
       topic=topics(), partition=PARTITIONS, offset=OFFSETS, key=st.one_of(st.none(), st.binary(max_size=20)))
def test_every_refused_message_can_be_dead_lettered_as_the_worker_does(value: bytes | None, topic: str,
                                                                       partition: int, offset: int,
                                                                       key: bytes | None) -> None:
    """What ``admit`` refuses, the worker dead-letters: the DeadLetter record must encode (an
    EncodeError there would stop the worker) and carry the original bytes and coordinates, and
    the framed schema id when an Avro int holds it (None for ids of 2**31 and more)."""
    result = admit(CODEC, VALIDATOR, value, topic, partition, offset, NOW_MS)
    if isinstance(result, Message):
        return  # a valid record on its own topic: nothing to dead-letter
    letter = dead_letter_as_the_worker_does(result, value, topic, partition, offset, key)
    assert (letter["reason"], letter["original_value"], letter["original_key"], letter["topic"], letter["partition"],
            letter["offset"], letter["consumer"]) == (result.reason, value, key, topic, partition, offset, "worker")
    assert letter["detail"] == result.detail[:2000]
    assert letter["schema_id"] == dead_letter_schema_id(value)


# ---------------------------------------------------------------------- (b) schema-valid, contradictory records

@settings(max_examples=200, deadline=None, database=None, suppress_health_check=HEALTH)
@given(record=st.sampled_from(record_names()), topic=st.sampled_from(SOURCE_TOPICS),
       partition=st.integers(0, 11), offset=st.integers(0, 2**40))
def test_a_record_on_the_wrong_topic_is_refused(record: str, topic: str, partition: int, offset: int) -> None:
    """An Action or a Breach (or any other record) on a topic that carries something else never
    reaches the engine as that topic's data — even when the record itself is valid."""
    from tests.kit.records import sample

    value = CODEC.encode(record, sample(record, event_time_ms=NOW_MS))
    result = admit(CODEC, VALIDATOR, value, topic, partition, offset, NOW_MS)
    if SHARD_SOURCES[topic] == record:
        assert isinstance(result, Message)
    else:
        assert isinstance(result, Refused) and result.reason == "wrong_record_type", result


def _must_refuse(record: str, value: dict[str, Any]) -> str | None:
    """Independent reasons the validator must refuse ``value`` (from the schemas' documented checks)."""
    t = value["event_time_ms"]
    if t < NOW_MS - MAX_PAST_MS or t > NOW_MS + MAX_FUTURE_MS:
        return "event time out of range"
    prices = {"PositionUpdate": ["average_price"],
              "MarkPrice": ["mark_price", "index_price", "underlying_price", "best_bid", "best_ask"]}
    for field in prices.get(record, []):
        p = value.get(field)
        if p is not None and (math.isnan(p) or p < 0 or p > 1e12):
            return f"{field}={p!r}"
    positive = {"IndexPrice": ["price"], "OraclePrice": ["price"], "VolatilityUpdate": ["iv"]}
    for field in positive.get(record, []):
        p = value.get(field)
        if p is not None and not (math.isfinite(p) and p > 0 and (field == "iv" or p <= 1e12)):
            return f"{field}={p!r}"
    share = value.get("largest_holder_share") if record == "MarkPrice" else None
    if share is not None and not 0.0 <= share <= 1.0:  # NaN too
        return f"largest_holder_share={share!r}"
    for point in (value.get("smile") or []) if record == "VolatilityUpdate" else []:
        if not (math.isfinite(point["iv"]) and point["iv"] > 0):
            return f"smile iv={point['iv']!r}"
    for field in {"PositionUpdate": ["quantity"], "CollateralUpdate": ["amount", "change"]}.get(record, []):
        if not math.isfinite(value[field]):
            return f"{field}={value[field]!r}"
    instrument = value.get("instrument") if record in INSTRUMENT_RECORDS else None
    if instrument is not None and not parses(instrument):
        return f"instrument={instrument!r} does not parse"
    return None


#: worker inputs whose ``instrument`` the validator checks (with no instrument list: that it parses)
INSTRUMENT_RECORDS = ("PositionUpdate", "MarkPrice", "OrderBookDepth", "VolatilityUpdate")


@st.composite
def input_events(draw: st.DrawFn) -> tuple[str, dict[str, Any], str]:
    """(record, schema-valid datum with extreme values, the topic it is sent on: usually its own)."""
    record = draw(st.sampled_from(SHARD_RECORDS))
    value = draw(from_schema(record))
    wrong = draw(st.sampled_from([False, False, False, False, False, True]))
    topic = draw(st.sampled_from(SOURCE_TOPICS)) if wrong else TOPIC_OF[record]
    return record, value, topic


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",  # extreme values overflow, underflow
                            "ignore:invalid value encountered:RuntimeWarning",
                            "ignore:divide by zero encountered:RuntimeWarning")
@settings(max_examples=200, deadline=None, database=None, suppress_health_check=HEALTH)
@given(events=st.lists(input_events(), min_size=1, max_size=4), partition=st.sampled_from([0, 0, 1, 2]),
       drop=st.floats(0.5, 1.2))
def test_admitted_extreme_records_never_crash_the_lane(events: list, partition: int, drop: float) -> None:
    """Whatever ``admit`` lets through — subnormal and huge prices, unknown instruments and
    assets, negative balances, event times at the window's edges — the lane takes, releases,
    drains and revalues without raising, and its outputs encode. What it must not let through
    (zero index, oracle and vol prices, instruments that do not parse, ...) it refuses."""
    lane = warm_lane()
    latest = last_warmup_time()
    for record, value, topic in events:
        wire = CODEC.encode(record, value)
        if topic in ("backstop.positions", "backstop.collateral"):
            partition = 0  # the lane holds account partition 0 (of 1): every account
        offset = lane.next_offset(f"{topic}/{partition}")
        result = admit(CODEC, VALIDATOR, wire, topic, partition, offset, NOW_MS)
        reason = _must_refuse(record, value)
        if topic != TOPIC_OF[record]:
            assert isinstance(result, Refused) and result.reason == "wrong_record_type"
        elif reason is not None:
            assert isinstance(result, Refused), f"admitted although {reason}"
        if isinstance(result, Refused):
            assert result.reason in REASONS
            continue
        assert result.record == record and result.value == CODEC.decode(wire).value
        lane.push(result)
        latest = max(latest, value["event_time_ms"])
        encode_outputs(lane.release())
    encode_outputs(drain(lane))
    # two later index ticks: the fuzzed state is revalued at the next event-time tick, and once more
    for k in (1, 2):
        record, tick = index_tick(round(BASE_INDEX * drop ** k, 2), latest + 1_000 * k)
        lane.push(message(record, tick, next_offset(lane, record)))
        encode_outputs(lane.release())
        encode_outputs(drain(lane))
    assert lane.engine.accounts.positions  # the warm accounts are still there to revalue


# ---------------------------------------------------------------------- (c) refused messages change nothing

@st.composite
def bad_messages(draw: st.DrawFn) -> tuple[str, bytes | None, str, int]:
    """(kind, value, topic, partition) that must be refused, by construction, at the input's next offset."""
    kind = draw(st.sampled_from(["noise", "damaged", "other_topic", "wrong_record", "bad_price", "bad_time",
                                 "bad_quantity"]))
    index = ("backstop.market.index", 0)
    good = CODEC.encode(*index_tick(60_000.0, NOW_MS - 1_000))
    if kind == "noise":
        return kind, draw(st.one_of(st.none(), st.binary(max_size=80))), *index
    if kind == "damaged":  # truncated (a record always ends in a complete field) or with bytes appended
        if draw(st.booleans()):
            return kind, good[:draw(st.integers(0, len(good) - 1))], *index
        return kind, good + draw(st.binary(min_size=1, max_size=16)), *index
    if kind == "other_topic":  # a valid record from a topic the worker does not read
        return kind, good, draw(st.sampled_from(["backstop.market.fanout", "backstop.actions", "backstop.deadletters",
                                                 "backstop.worker.checkpoints", "", "backstop.market.index/0"])), 0
    if kind == "wrong_record":
        from tests.kit.records import sample

        record = draw(st.sampled_from([r for r in record_names() if r != "IndexPrice"]))
        return kind, CODEC.encode(record, sample(record, event_time_ms=NOW_MS - 1_000)), *index
    if kind == "bad_price":
        price = draw(st.one_of(st.sampled_from([math.nan, math.inf, -math.inf, -1.0, -5e-324, 0.0, -0.0,
                                                1.0000001e12, 1e300]),  # above MAX_PRICE: implausible
                               st.floats(max_value=-1e-300)))
        return kind, CODEC.encode(*index_tick(price, NOW_MS - 1_000)), *index
    if kind == "bad_time":
        t = draw(st.one_of(st.integers(-(2**63), NOW_MS - MAX_PAST_MS - 1),
                           st.integers(NOW_MS + MAX_FUTURE_MS + 1, 2**63 - 1)))
        return kind, CODEC.encode(*index_tick(60_000.0, t)), *index
    quantity = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    from tests.kit.records import sample

    value = sample("PositionUpdate", account="levered-long", instrument=PERP, quantity=quantity,
                   event_time_ms=NOW_MS - 1_000)
    return kind, CODEC.encode("PositionUpdate", value), "backstop.positions", 0


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=HEALTH)
@given(data=st.data(), steps=st.lists(st.booleans(), min_size=1, max_size=12))
def test_a_refused_message_leaves_the_lane_unchanged_but_read_past(data: st.DataObject, steps: list[bool]) -> None:
    """Valid ticks and bad messages interleaved, as the worker takes them: each bad one is
    refused, the engine's state (market, accounts, what it applied of each input), the events
    held back and the late count are unchanged, releasing after it applies nothing, and its
    input is read past it. At the end, its checkpoint is that of a lane that read only the
    valid ticks."""
    lane, twin = warm_lane(), warm_lane()
    t = last_warmup_time()
    for good in steps:
        before = lane_state(lane)
        if good:
            t += data.draw(st.integers(1, 3_000))
            record, tick = index_tick(data.draw(st.floats(40_000, 80_000)), t)
            result = take(lane, CODEC.encode(record, tick), "backstop.market.index", 0, next_offset(lane, record))
            assert isinstance(result, Message), result
            assert lane_state(lane) != before
            assert twin.push(result) == TAKEN
            assert summary(lane.release()) == summary(twin.release())
        else:
            kind, value, topic, partition = data.draw(bad_messages())
            name = f"{topic}/{partition}"
            reads = lane.reads(name)
            offset = lane.next_offset(name) if reads else data.draw(OFFSETS)
            result = admit(CODEC, VALIDATOR, value, topic, partition, offset, NOW_MS)
            assert isinstance(result, Refused), f"{kind} admitted: {result!r}"
            if reads:  # the worker reads only its inputs: a record of another topic never reaches it
                lane.skip(name, offset)
                assert lane.next_offset(name) == offset + 1, kind
            assert lane_state(lane) == before, kind
            out = lane.release()
            assert summary(out) == ([], [], []) and lane_state(lane) == before, kind
    assert engine_state(lane) == engine_state(twin)


# ---------------------------------------------------------------------- (d) redeliveries, lateness, determinism

@settings(max_examples=150, deadline=None, database=None, suppress_health_check=HEALTH)
@given(data=st.data(), n=st.integers(1, 12))
def test_a_redelivered_offset_is_again_and_changes_nothing(data: st.DataObject, n: int) -> None:
    """Every offset at or below one already taken from its input — the same message again, or
    any older one — is dropped: ``push`` says ``AGAIN``, the lane is unchanged, and the run's
    outputs are those of the run without redeliveries."""
    plain, redelivering = warm_lane(), warm_lane()
    t = last_warmup_time()
    taken: list[Message] = []
    outputs = (EngineOutput(), EngineOutput())
    for _ in range(n):
        t += data.draw(st.integers(-8_000, 3_000))  # some out of order, some late
        kind = data.draw(st.sampled_from(["IndexPrice", "PositionUpdate", "CollateralUpdate"]))
        if kind == "IndexPrice":
            record, value = index_tick(data.draw(st.floats(40_000, 80_000)), t)
        elif kind == "PositionUpdate":
            record, value = kind, {"account": data.draw(st.sampled_from(["levered-long", "new-acct"])),
                                   "instrument": PERP, "quantity": data.draw(st.floats(-20, 20)),
                                   "average_price": 60_000.0, "sequence": 1, "event_time_ms": t}
        else:
            amount = data.draw(st.floats(0, 1e6))
            record, value = kind, {"account": "levered-long", "asset": "USDC", "amount": amount, "change": amount,
                                   "reason": "deposit", "sequence": 1, "event_time_ms": t}
        m = message(record, value, next_offset(plain, record))
        assert plain.push(m) == redelivering.push(m) != AGAIN  # both take it, or both find it late
        for lane, out in zip((plain, redelivering), outputs):
            out.extend(lane.release())
        taken.append(m)
        for again in data.draw(st.lists(st.sampled_from(taken), max_size=3)):
            before = lane_state(redelivering)
            assert redelivering.push(again) == AGAIN
            assert lane_state(redelivering) == before
            outputs[1].extend(redelivering.release())
    for lane, out in zip((plain, redelivering), outputs):
        out.extend(drain(lane))
    assert summary(outputs[0]) == summary(outputs[1])
    assert lane_state(plain) == lane_state(redelivering)
    assert engine_state(plain) == engine_state(redelivering)


LATENESS_MS = 5_000  # DetectorParams.allowed_lateness_ms, the sequencer's allowed lateness
INPUTS = {"index0": ("IndexPrice", 0), "index1": ("IndexPrice", 1), "positions": ("PositionUpdate", 0),
          "collateral": ("CollateralUpdate", 0), "vol": ("VolatilityUpdate", 0), "depth": ("OrderBookDepth", 0)}


@st.composite
def input_streams(draw: st.DrawFn) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Per input, its own sequence of valid events: mostly moving forward, some out of order
    within the allowed lateness, some very late (minutes to hours before the input's newest)."""
    streams: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    start = last_warmup_time() + 1_000
    for name in draw(st.lists(st.sampled_from(sorted(INPUTS)), min_size=1, max_size=4, unique=True)):
        record, _ = INPUTS[name]
        t, price, events = start, draw(st.floats(50_000, 70_000)), []
        for _ in range(draw(st.integers(1, 10))):
            step = draw(st.one_of(st.integers(0, 4_000), st.integers(-LATENESS_MS, 0),
                                  st.integers(-3 * 3_600_000, -LATENESS_MS - 1)))
            t += step
            price *= draw(st.floats(0.8, 1.1))
            if record == "IndexPrice":
                events.append(index_tick(round(price, 2), t))
            elif record == "PositionUpdate":
                events.append((record, {"account": draw(st.sampled_from(["levered-long", "short-puts", "fresh"])),
                                        "instrument": draw(st.sampled_from([PERP, "BTC-27DEC26-55000-P"])),
                                        "quantity": draw(st.floats(-30, 30)), "average_price": 60_000.0,
                                        "sequence": len(events), "event_time_ms": t}))
            elif record == "CollateralUpdate":
                amount = draw(st.floats(0, 2e5))
                events.append((record, {"account": draw(st.sampled_from(["levered-long", "short-puts"])),
                                        "asset": draw(st.sampled_from(["USDC", "BTC"])), "amount": amount,
                                        "change": -amount, "reason": "withdrawal", "sequence": len(events),
                                        "event_time_ms": t}))
            elif record == "VolatilityUpdate":
                events.append((record, {"underlying": "BTC", "instrument": None, "iv": draw(st.floats(0.2, 2.0)),
                                        "smile": [], "source": "fuzz", "event_time_ms": t}))
            else:
                from tests.kit.crash import deep_depth

                events.append((record, deep_depth(t, price, draw(st.sampled_from([0.1, 20.0])))))
        streams[name] = events
    return streams


def _input_of(name: str) -> str:
    record, partition = INPUTS[name]
    return f"{TOPIC_OF[record]}/{partition}"


def _late_oracle(name: str, events: list[tuple[str, dict[str, Any]]]) -> int:
    """How many events of one input are late: older than the newest event time of that input so
    far (the warm-up's included) minus the allowed lateness."""
    history = [v["event_time_ms"] for r, v in WARMUP if f"{TOPIC_OF[r]}/0" == _input_of(name)]
    newest, late = max(history, default=None), 0
    for _, value in events:
        t = value["event_time_ms"]
        late += newest is not None and t < newest - LATENESS_MS
        newest = t if newest is None else max(newest, t)
    return late


def _run(streams: dict, order: list[str], cut: int | None) -> tuple[EngineOutput, Lane, list[str]]:
    """A fresh lane holding every account: the warm-up, then the streams interleaved in ``order``
    (one input name per message). Inputs that do not speak after the warm-up are marked idle once
    it is in (the same in every run), so events are released as the speaking inputs' watermarks
    pass them. With ``cut``: after that many messages the lane is told to park at its next tick
    boundary; once parked there, its checkpoint (encoded and decoded) is restored into a new lane,
    which reads on from the checkpoint's offsets: what the old lane had read past them is pushed
    again, as a worker taking the partition over reads it again."""
    lane = Lane.fresh(KEY, EngineParams(), 1, [0])
    out = EngineOutput()
    sent: list[Message] = []  # every message pushed, the warm-up's too
    for record, value in WARMUP:
        sent.append(message(record, value, next_offset(lane, record)))
        lane.push(sent[-1])
        out.extend(lane.release())
    speaking = {_input_of(name) for name in streams}
    silent = [name for name in lane.inputs() if name not in speaking]
    for name in silent:
        lane.idle(name)
    out.extend(lane.release())
    pushed: list[str] = []
    cursors = dict.fromkeys(streams, 0)
    for k, name in enumerate(order):
        if cut is not None and k == cut:
            lane.cut_at(lane.next_boundary())
        record, value = streams[name][cursors[name]]
        cursors[name] += 1
        m = message(record, value, next_offset(lane, record, INPUTS[name][1]), INPUTS[name][1])
        sent.append(m)
        pushed.append(lane.push(m))
        out.extend(lane.release())
        if lane.cut is not None and not lane.parked:
            out.extend(lane.park() or EngineOutput())
        if lane.parked:
            lane = _restored(lane, silent, sent)
    lane.resume()  # a cut not reached by the end of the streams is not taken
    out.extend(drain(lane))
    return out, lane, pushed


def _restored(lane: Lane, silent: list[str], sent: list[Message]) -> Lane:
    """A new lane from ``lane``'s checkpoint, the records after it pushed again."""
    [taken] = lane.checkpoints()
    restored = Lane.restore(KEY, EngineParams(), 1, [decode_checkpoint(encode_checkpoint(taken))])
    for name in silent:
        restored.idle(name)
    for m in sent:
        if m.offset >= restored.next_offset(m.input):
            restored.push(m)
    return restored


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=HEALTH)
@given(streams=input_streams(), seed=st.randoms(use_true_random=False), cut_at=st.floats(0, 1))
def test_late_and_out_of_order_events_give_the_same_outputs_in_every_lane(streams: dict, seed: random.Random,
                                                                         cut_at: float) -> None:
    """The same messages in two fresh lanes give the same breach ids, action ids and exposures;
    so do another interleaving of the inputs, and a lane restored from its checkpoint midway.
    Exactly the events older than their own input's newest minus the allowed lateness are late."""
    order = [name for name, events in streams.items() for _ in events]
    shuffled = _interleave(streams, seed)
    cut = int(cut_at * len(order))
    first, a, pushed_a = _run(streams, order, None)
    second, b, _ = _run(streams, order, None)
    third, c, pushed_c = _run(streams, shuffled, cut)
    assert summary(first) == summary(second) == summary(third)
    assert engine_state(a) == engine_state(b) == engine_state(c)
    expected_late = sum(_late_oracle(name, events) for name, events in streams.items())
    assert a.sequencer.late_events == expected_late
    assert pushed_a.count(LATE) == pushed_c.count(LATE) == expected_late
    assert set(pushed_a) <= {TAKEN, LATE}
    for out in (first, third):
        encode_outputs(out)


def _interleave(streams: dict, rnd: random.Random) -> list[str]:
    """Another merge of the inputs that keeps each input's own order."""
    left = {name: len(events) for name, events in streams.items()}
    order = []
    while left:
        name = rnd.choice(sorted(left))
        order.append(name)
        left[name] -= 1
        if not left[name]:
            del left[name]
    return order


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=HEALTH)
@given(record=st.sampled_from(["IndexPrice", "PositionUpdate", "CollateralUpdate", "VolatilityUpdate"]),
       behind=st.integers(LATENESS_MS + 1, MAX_PAST_MS - 60_000), data=st.data())
def test_a_very_late_event_is_dropped_without_touching_the_engine(record: str, behind: int,
                                                                  data: st.DataObject) -> None:
    """An admitted event far behind its input's watermark: ``push`` says ``LATE``, the sequencer
    counts it late, and the engine's state and outputs are those of a lane that never saw it."""
    lane, twin = warm_lane(), warm_lane()
    newest = max(v["event_time_ms"] for r, v in WARMUP if r == record)
    value = {"IndexPrice": lambda t: index_tick(data.draw(st.floats(1, 1e6)), t)[1],
             "PositionUpdate": lambda t: {"account": "levered-long", "instrument": PERP, "quantity": 50.0,
                                          "average_price": 1.0, "sequence": 99, "event_time_ms": t},
             "CollateralUpdate": lambda t: {"account": "levered-long", "asset": "USDC", "amount": 0.0,
                                            "change": -50_000.0, "reason": "withdrawal", "sequence": 99,
                                            "event_time_ms": t},
             "VolatilityUpdate": lambda t: {"underlying": "BTC", "instrument": None, "iv": 3.0, "smile": [],
                                            "source": "late", "event_time_ms": t}}[record](newest - behind)
    admitted = admit(CODEC, VALIDATOR, CODEC.encode(record, value), TOPIC_OF[record], 0, next_offset(lane, record),
                     newest + 1_000)
    assert isinstance(admitted, Message), admitted  # within a day of the clock: the validator lets it in
    late = lane.sequencer.late_events
    assert lane.push(admitted) == LATE
    assert lane.sequencer.late_events == late + 1
    assert summary(lane.release()) == summary(drain(lane)) == ([], [], [])
    # the input moved on: the same offset again is a redelivery now
    assert lane.push(admitted) == AGAIN and lane.sequencer.late_events == late + 1
    assert engine_state(lane) == engine_state(twin)


# ---------------------------------------------------------------------- regressions
# Each of these inputs once crashed the engine or the worker's dead-lettering (found by the
# property tests above, pinned as strict xfails); they are fixed, and these tests keep them so.

NEAR = st.integers(T0 + 26_000, T0 + 40_000)  # just after the warm-up: on time, inside the clock's window


def _run_on(lane: Lane, t: int, offset: int | None = None) -> EngineOutput:
    """Two later index ticks (at ``offset`` and the next one, by default the input's next), each
    released and drained: the next event-time tick revalues the accounts (where the crashes
    were), and once more. Everything emitted encodes."""
    out = EngineOutput()
    first = next_offset(lane, "IndexPrice") if offset is None else offset
    for k in (1, 2):
        record, tick = index_tick(round(BASE_INDEX * 0.9 ** k, 2), t + 1_000 * k)
        assert lane.push(message(record, tick, first + k - 1)) == TAKEN
        out.extend(lane.release())
        out.extend(drain(lane))
    encode_outputs(out)
    assert lane.engine.accounts.positions  # the warm accounts are still there, revalued
    return out


def _refused_and_run_on(record: str, value: dict[str, Any], reason: str) -> None:
    """As the worker takes it: refused with exactly ``reason``, the lane unchanged and releasing
    applies nothing; it then runs on exactly as a lane that never saw it."""
    lane = warm_lane()
    before = lane_state(lane)
    result = take(lane, CODEC.encode(record, value), TOPIC_OF[record], 0, next_offset(lane, record))
    assert isinstance(result, Refused), f"admitted: {result!r}"
    assert result.reason == reason, result
    assert lane_state(lane) == before
    assert summary(lane.release()) == ([], [], []) and lane_state(lane) == before
    t = max(last_warmup_time(), value["event_time_ms"])
    twin = warm_lane()  # the same later ticks, at the same offsets (the lane read past the refused one)
    offset = next_offset(lane, "IndexPrice")
    assert summary(_run_on(lane, t, offset)) == summary(_run_on(twin, t, offset))
    assert engine_state(lane) == engine_state(twin)


def _admitted(record: str, value: dict[str, Any]) -> tuple[Lane, EngineOutput]:
    """As the worker takes it: admitted and pushed, released and drained, every output encodable."""
    lane = warm_lane()
    result = admit(CODEC, VALIDATOR, CODEC.encode(record, value), TOPIC_OF[record], 0, next_offset(lane, record),
                   NOW_MS)
    assert isinstance(result, Message), f"refused: {result!r}"
    assert lane.push(result) == TAKEN
    out = lane.release()
    out.extend(drain(lane))
    encode_outputs(out)
    return lane, out


#: names the risk core cannot parse, of the priced underlying (BTC) and otherwise
UNPARSEABLE = st.one_of(st.sampled_from([n for n in MALFORMED_INSTRUMENTS if not parses(n)]),
                        short_text.map(lambda s: f"BTC-{s}").filter(lambda n: not parses(n)))


def _with_instrument(record: str, instrument: str, t: int) -> dict[str, Any]:
    from tests.kit.records import sample

    if record == "PositionUpdate":  # a position of a warm account, in the book at every revaluation
        return {"account": "levered-long", "instrument": instrument, "quantity": 1.0, "average_price": 1.0,
                "sequence": 9, "event_time_ms": t}
    return sample(record, instrument=instrument, event_time_ms=t)


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=HEALTH)
@example(record="PositionUpdate", instrument="BTC-FOO", t=T0 + 30_000)
@example(record="PositionUpdate", instrument="BTC-31FEB27", t=T0 + 30_000)
@example(record="PositionUpdate", instrument="BTC-27DEC26-0-C", t=T0 + 30_000)
@example(record="MarkPrice", instrument="BTC", t=T0 + 30_000)
@given(record=st.sampled_from(INSTRUMENT_RECORDS), instrument=UNPARSEABLE, t=NEAR)
def test_an_unparseable_instrument_is_refused_and_the_lane_runs_on(record: str, instrument: str, t: int) -> None:
    """Was: admitted (the worker's Validator has no instrument list), then every later revaluation
    raised InstrumentError from AccountBook._build -> parse_instrument."""
    _refused_and_run_on(record, _with_instrument(record, instrument, t), "bad_instrument_name")


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=HEALTH)
@example(price=0.0, t=T0 + 30_000)
@example(price=-0.0, t=T0 + 30_000)
@given(price=st.sampled_from([0.0, -0.0]), t=NEAR)
def test_a_zero_index_price_is_refused_and_the_lane_runs_on(price: float, t: int) -> None:
    """Was: 0.0 passed the 'price' check and Detectors.on_index divided by it (ZeroDivisionError),
    or MarketBoard kept index 0 and the next revaluation raised MarketError."""
    _refused_and_run_on(*index_tick(price, t), "not_positive")


@pytest.mark.filterwarnings("ignore:divide by zero encountered:RuntimeWarning",  # log(f / k) of a tiny index
                            "ignore:invalid value encountered:RuntimeWarning")  # 0 * inf in a tiny index's Greeks
@settings(max_examples=25, deadline=None, database=None, suppress_health_check=HEALTH)
@example(price=5e-324, t=T0 + 30_000)
@given(price=st.floats(min_value=5e-324, max_value=1e-300), t=NEAR)
def test_a_subnormal_index_price_is_admitted_and_the_lane_runs_on(price: float, t: int) -> None:
    """Was: 5e-324 after 59254.48 made price / previous underflow to 0.0 and IndexHistory.append
    raised 'math domain error' on its log. A positive price is valid: it is taken, becomes the
    index, and the lane revalues on it and on the ticks after it."""
    lane, _ = _admitted(*index_tick(price, t))
    assert lane.engine.board.index["BTC"] == price
    _run_on(lane, t)
    assert lane.engine.board.index["BTC"] == round(BASE_INDEX * 0.9 ** 2, 2)


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=HEALTH)
@example(price=5e-324, t=T0 + 30_000)
@example(price=1e-323, t=T0 + 30_000)
@given(price=st.floats(min_value=5e-324, max_value=1e-300), t=NEAR)
@pytest.mark.filterwarnings("ignore:divide by zero encountered:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning")
def test_a_subnormal_index_price_gives_numeric_margins_and_no_under_water_account_stays_normal(price: float,
                                                                                             t: int) -> None:
    """Was (found by the test above, once its crash was fixed): at an index of 5e-324 or 1e-323,
    black76_greeks computed gamma = pdf1 / (s * sd) = 0 / 0 (s * sd underflows to 0), so NaN
    margins; NaN compares false against every ladder threshold and the revaluation reported
    hedged-desk with margin_ratio NaN and short-puts, at equity -145000, as 'normal'."""
    lane, out = _admitted(*index_tick(price, t))
    out.extend(_run_on(lane, t))
    for e in out.exposures:
        margins = (e["maintenance_margin_usd"], e["initial_margin_usd"], e["margin_ratio"])
        assert not any(math.isnan(m) for m in margins), e
        assert not (e["equity_usd"] < 0 and e["state"] == "normal"), e


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=HEALTH)
@example(price=0.0, t=T0 + 30_000)
@example(price=-0.0, t=T0 + 30_000)
@given(price=st.sampled_from([0.0, -0.0]), t=NEAR)
def test_a_zero_oracle_price_is_refused_and_the_lane_runs_on(price: float, t: int) -> None:
    """Was: 0.0 passed the 'price' check and Detectors._check_twap divided by a zero TWAP."""
    _refused_and_run_on("OraclePrice", {"underlying": "BTC", "source": "pyth", "price": price, "confidence": None,
                                        "publish_time_ms": t, "event_time_ms": t}, "not_positive")


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=HEALTH)
@example(iv=0.0, where="underlying", t=T0 + 30_000)
@given(iv=st.one_of(st.sampled_from([0.0, -0.0]), st.floats(max_value=0.0, allow_infinity=False)),
       where=st.sampled_from(["underlying", "instrument", "smile"]), t=NEAR)
def test_a_zero_vol_is_refused_and_the_lane_runs_on(iv: float, where: str, t: int) -> None:
    """Was: an underlying-level iv 0.0 passed the 'nonnegative' check, MarketBoard kept vol 0 and
    every later revaluation raised MarketError. The iv of an instrument and of a smile point are
    held to the same check."""
    value = {"underlying": "BTC", "instrument": None, "iv": iv, "smile": [], "source": "fuzz", "event_time_ms": t}
    if where == "instrument":
        value["instrument"] = PUT
    elif where == "smile":
        value.update(iv=0.6, smile=[{"expiry_ms": 1_798_358_400_000, "strike": 55_000.0, "iv": 0.6},
                                    {"expiry_ms": 1_798_358_400_000, "strike": 60_000.0, "iv": iv}])
    _refused_and_run_on("VolatilityUpdate", value, "not_positive")


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=HEALTH)
@example(value=b"\x00\x80\x00\x00\x00")
@example(value=b"\x00\xff\xff\xff\xff")
@given(value=over_int32_schema_ids())
def test_a_schema_id_above_int32_is_dead_lettered_by_the_worker(value: bytes) -> None:
    """Was: dead_letter copied the id into DeadLetter.schema_id, an Avro int, and encoding the dead
    letter raised EncodeError in the worker's dead-lettering -- five bytes stopped the worker.
    Now: refused, the lane unchanged, and the dead letter encodes with schema_id None and the
    original bytes (which keep the header)."""
    lane = warm_lane()
    before = lane_state(lane)
    result = take(lane, value, "backstop.positions", 0, next_offset(lane, "PositionUpdate"))
    assert isinstance(result, Refused) and result.reason == "unknown_schema_id", result
    assert lane_state(lane) == before
    letter = dead_letter_as_the_worker_does(result, value, "backstop.positions", 0, 7, b"acct")
    assert (letter["reason"], letter["schema_id"], letter["original_value"], letter["original_key"]) == (
        "unknown_schema_id", None, value, b"acct")
