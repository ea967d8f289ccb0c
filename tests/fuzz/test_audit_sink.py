"""Fuzzing the audit sink's input handling: ``AuditSink.poll_once`` / ``_add_message`` on a fake
consumer, then ``flush`` into a recording store (and, for one test, the real ClickHouse server).

What must hold for any message on any audited topic:

* nothing raises; every message becomes exactly one row at its own Kafka coordinates — a row of
  its record's table, or a ``dead_letters`` row (undecodable bytes, records the sink does not
  store, records whose row cannot be built) with the original bytes;
* the counts add up: rows == dead letters + stored records == messages, ``stats.undecodable``
  is the number of undecodable values, and the committed offsets are one past the last message
  of every partition.

* a row's ``event_date`` is its event time's UTC date clamped to what a ClickHouse ``Date``
  holds (1970-01-01 .. 2149-06-06), while ``event_time_ms`` keeps the exact time.

The bug these tests found (a Kafka timestamp or event time past year 9999 made ``event_date``
raise and stopped the sink) is fixed; the tests at the end of this module that pinned it are now
regression tests, and the broad tests use any timestamp again.
"""

from __future__ import annotations

import datetime
import uuid
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipelines.audit.rows import INPUT_RECORDS, TABLE_OF_RECORD
from pipelines.audit.sink import AuditSink, audit_topics
from tests.fuzz.strategies import CODEC, DECODE_REASONS, HEALTH, NOW_MS, decodes, from_schema, record_names, wire_values
from tests.kit.fakes import FakeConsumer, FakeMessage

pytestmark = pytest.mark.fuzz

TABLES = ("inputs", "breaches", "actions", "executions", "dead_letters", "exposures")
TOPICS = tuple(audit_topics())
#: what a broker can hand out: legal topic names (the audited ones, and any other)
TOPIC_NAMES = st.one_of(st.sampled_from(TOPICS), st.sampled_from(TOPICS),
                        st.from_regex(r"[a-zA-Z0-9._-]{1,60}", fullmatch=True).filter(lambda t: t not in (".", "..")))
#: Kafka timestamps: none (-1), near the tests' clock, or anything a producer can set (CreateTime)
KAFKA_TIMESTAMPS = st.one_of(st.just((0, -1)), st.tuples(st.sampled_from([1, 2]), st.one_of(
    st.integers(NOW_MS - 10**9, NOW_MS + 10**9), st.integers(0, 253_402_300_799_999),
    st.sampled_from([-1, 0, 253_402_300_800_000, 2**62, 2**63 - 1]), st.integers(-(2**63), 2**63 - 1))))
DAY_MS = 86_400_000
FIRST_DATE, LAST_DATE = datetime.date(1970, 1, 1), datetime.date(2149, 6, 6)  # what a ClickHouse Date holds


def clamped_date(ms: int) -> datetime.date:
    """The UTC date of ``ms``, clamped to ``FIRST_DATE .. LAST_DATE`` (by whole days, so any int64 works)."""
    days = ms // DAY_MS
    if days <= 0:
        return FIRST_DATE
    return min(FIRST_DATE + datetime.timedelta(days=min(days, 10**6)), LAST_DATE)


# ---------------------------------------------------------------------- fakes

class RecordingStore:
    """Keeps every inserted block; rows are dicts per table."""

    def __init__(self) -> None:
        self.rows: dict[str, list[dict[str, Any]]] = {table: [] for table in TABLES}

    def insert(self, table: str, columns: dict[str, list[Any]], *, dedup_token: str | None = None) -> int:
        lengths = {len(values) for values in columns.values()}
        assert len(lengths) == 1, f"ragged block for {table}: {lengths}"
        assert dedup_token and dedup_token.startswith(f"{table}-")
        names = list(columns)
        count = lengths.pop()
        self.rows[table] += [{n: columns[n][i] for n in names} for i in range(count)]
        return count


# ---------------------------------------------------------------------- strategies and helpers

@st.composite
def messages(draw: st.DrawFn, values: st.SearchStrategy[tuple[str | None, bytes | None]],
             max_size: int = 25) -> list[tuple[FakeMessage, str | None, Any]]:
    """(message, record or None, datum or None) with distinct coordinates, offsets rising per partition."""
    out = []
    offsets: Counter = Counter()
    for record, datum, value in draw(st.lists(values, min_size=1, max_size=max_size)):
        topic = draw(TOPIC_NAMES)
        partition = draw(st.integers(0, 11))
        offsets[(topic, partition)] += draw(st.integers(1, 1_000))
        key = draw(st.one_of(st.none(), st.binary(max_size=16), st.text(max_size=8).map(str.encode)))
        out.append((FakeMessage(topic, partition, offsets[(topic, partition)], value, key, draw(KAFKA_TIMESTAMPS)),
                    record, datum))
    return out


def garbage() -> st.SearchStrategy[tuple[None, None, bytes | None]]:
    return wire_values().map(lambda v: (None, None, v))


def encoded_records() -> st.SearchStrategy[tuple[str, dict[str, Any], bytes]]:
    return st.sampled_from(record_names()).flatmap(
        lambda r: from_schema(r).map(lambda d: (r, d, CODEC.encode(r, d))))


def run_sink(batch: list[FakeMessage], store: Any, batch_rows: int = 5_000) -> tuple[AuditSink, FakeConsumer]:
    consumer = FakeConsumer(batch)
    sink = AuditSink(store, consumer, CODEC, batch_rows=batch_rows, sleep=lambda s: None)
    while consumer.queue:
        sink.poll_once()
        if sink.due():
            assert sink.flush()
    assert sink.flush()
    return sink, consumer


def check_rows(sink: AuditSink, consumer: FakeConsumer, store: RecordingStore,
               batch: list[tuple[FakeMessage, str | None, Any]]) -> None:
    """Exactly one row per message at its coordinates, in the right table; the counts add up."""
    where: dict[tuple[str, int, int], tuple[str, dict[str, Any]]] = {}
    for table, rows in store.rows.items():
        for row in rows:
            coords = (row["kafka_topic"], row["kafka_partition"], row["kafka_offset"])
            assert coords not in where, f"two rows for {coords}"
            where[coords] = (table, row)
    assert len(where) == len(batch) == sink.stats.messages == sink.stats.rows_inserted
    undecodable = 0
    for m, record, datum in batch:
        table, row = where[(m.topic(), m.partition(), m.offset())]
        ts_type, ts = m.timestamp()
        kafka_ms = ts if ts_type and ts > 0 else 0
        assert row["kafka_timestamp_ms"] == kafka_ms
        if record is None and not decodes(m.value()):
            undecodable += 1
            assert table == "dead_letters"
            assert row["reason"] in DECODE_REASONS
            assert (row["event_time_ms"], row["event_date"]) == (kafka_ms, clamped_date(kafka_ms))
            assert row["original_value_hex"] == (m.value() or b"").hex()
            assert (row["source_topic"], row["source_partition"], row["source_offset"]) == (
                m.topic(), m.partition(), m.offset())
            assert row["consumer"] == "audit-sink"
            continue
        if record is None:  # garbage that happens to decode: whatever it decoded to
            record, datum = (d := CODEC.decode(m.value())).record, d.value
        storable = record in TABLE_OF_RECORD or record in INPUT_RECORDS  # ReplayRecord is not
        if storable:  # as itself, whatever its event time: the exact time, the clamped date
            assert table == _table_of(record), (record, table, row)
            assert record != "DeadLetter" or row["reason"] == datum["reason"], (record, row)
            assert (row["event_time_ms"], row["event_date"]) == (
                datum["event_time_ms"], clamped_date(datum["event_time_ms"])), (record, row)
        else:
            assert table == "dead_letters" and (row["reason"], row["record"]) == ("processing_error", record), (
                record, table, row)
            assert (row["event_time_ms"], row["event_date"]) == (kafka_ms, clamped_date(kafka_ms))
    assert sink.stats.undecodable == undecodable
    assert sum(sink.stats.by_table.values()) == len(batch)
    last: dict[tuple[str, int], int] = {}
    for m, _, _ in batch:
        last[(m.topic(), m.partition())] = max(last.get((m.topic(), m.partition()), -1), m.offset())
    committed: dict[tuple[str, int], int] = {}
    for commit in consumer.commits:
        for tp, offset in commit.items():
            assert offset > committed.get(tp, -1)  # never backwards
            committed[tp] = offset
    assert committed == {tp: offset + 1 for tp, offset in last.items()}


def _table_of(record: str) -> str:
    return TABLE_OF_RECORD.get(record) or ("inputs" if record in INPUT_RECORDS else "dead_letters")


# ---------------------------------------------------------------------- properties

@settings(max_examples=200, deadline=None, database=None, suppress_health_check=HEALTH)
@given(batch=messages(garbage()), batch_rows=st.sampled_from([1, 3, 5_000]))
def test_random_bytes_become_dead_letter_rows_and_the_counts_add_up(batch: list, batch_rows: int) -> None:
    store = RecordingStore()
    sink, consumer = run_sink([m for m, _, _ in batch], store, batch_rows)
    check_rows(sink, consumer, store, batch)


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=HEALTH)
@given(batch=messages(st.one_of(encoded_records(), encoded_records(), garbage())),
       batch_rows=st.sampled_from([2, 5_000]))
def test_every_record_type_with_extreme_values_becomes_exactly_one_row(batch: list, batch_rows: int) -> None:
    """Schema-valid records of every type — NaN and huge numbers, event times from -2**63 to
    2**63-1, empty and unicode strings — mixed with garbage: one row each, nothing raises."""
    store = RecordingStore()
    sink, consumer = run_sink([m for m, _, _ in batch], store, batch_rows)
    check_rows(sink, consumer, store, batch)


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=HEALTH)
@given(value=st.one_of(st.none(), st.binary(max_size=100)), topic=TOPIC_NAMES, partition=st.integers(0, 2**31 - 1),
       offset=st.integers(0, 2**63 - 1), timestamp=KAFKA_TIMESTAMPS)
def test_add_message_counts_every_undecodable_value(value: bytes | None, topic: str, partition: int, offset: int,
                                                    timestamp: tuple[int, int]) -> None:
    sink = AuditSink(RecordingStore(), FakeConsumer([]), CODEC)
    sink._add_message(FakeMessage(topic, partition, offset, value, None, timestamp))
    assert len(sink._batch) == 1
    if decodes(value):
        return
    assert sink.stats.undecodable == 1
    assert sink._batch.offsets() == {(topic, partition): offset}
    [(table, columns, _)] = list(sink._batch.blocks())
    assert table == "dead_letters" and columns["original_value_hex"] == [(value or b"").hex()]


@pytest.mark.clickhouse
@settings(max_examples=30, deadline=None, database=None,
          suppress_health_check=[*HEALTH, HealthCheck.function_scoped_fixture])
@given(batch=messages(st.one_of(encoded_records(), garbage()), max_size=15))
def test_fuzzed_batches_are_stored_by_the_real_clickhouse_server(clickhouse: Any, clickhouse_address: tuple[str, int],
                                                                  batch: list) -> None:
    """The same batches, flushed into the migrated audit tables of the real server: the insert
    never fails (a non-transient StoreError would stop the sink on the same batch forever), and
    each message is one stored row."""
    from pipelines.audit import migrations
    from pipelines.audit.store import ServerStore

    host, port = clickhouse_address
    store = ServerStore(host, port, database=clickhouse.connection.database)
    try:
        migrations.migrate(store)
        prefix = f"fuzz{uuid.uuid4().hex[:12]}."  # this example's rows, whatever earlier examples stored
        for m, _, _ in batch:
            m._topic = prefix + m._topic  # coordinates stay distinct (the tables collapse equal ones on merge)
        sink, _ = run_sink([m for m, _, _ in batch], store)
        stored = sum(store.query(f"SELECT count() FROM {table} FINAL WHERE kafka_topic LIKE %(p)s",
                                 {"p": prefix + "%"}).scalar() for table in TABLES)
        # exposures are keyed by account and event time: snapshots equal in both are one row
        exposures = [d for _, r, d in batch if r == "ExposureSnapshot"]
        collapsed = len(exposures) - len({(d["account"], d["event_time_ms"]) for d in exposures})
        assert stored + collapsed == len(batch) == sink.stats.rows_inserted
    finally:
        store.close()


# ---------------------------------------------------------------------- regressions
# A Kafka timestamp past year 9999 (CreateTime is set by the producer, and the broker accepts it)
# once made event_date -> datetime.fromtimestamp raise ValueError ("year 10000 is out of range") in
# _add_message: nothing was committed and the sink died on the same message after every restart.

YEAR_10000_MS = 253_402_300_800_000


def _one_dead_letter_row(message: FakeMessage | Any, timestamp: int) -> dict[str, Any]:
    """``message`` through the sink into a recording store: exactly one ``dead_letters`` row, at
    the message's coordinates, with the exact time and the date clamped to the last Date."""
    store = RecordingStore()
    sink, consumer = run_sink([message], store)
    assert {t: len(rows) for t, rows in store.rows.items() if rows} == {"dead_letters": 1}
    [row] = store.rows["dead_letters"]
    assert (row["kafka_topic"], row["kafka_partition"], row["kafka_offset"]) == (
        message.topic(), message.partition(), message.offset())
    assert (row["event_date"], row["event_time_ms"], row["kafka_timestamp_ms"], row["message_timestamp_ms"]) == (
        LAST_DATE, timestamp, timestamp, timestamp)
    assert row["original_value_hex"] == (message.value() or b"").hex()
    assert (sink.stats.undecodable, sink.stats.rows_inserted) == (1, 1)
    assert consumer.commits[-1] == {(message.topic(), message.partition()): message.offset() + 1}
    return row


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=HEALTH)
@example(value=b"garbage", timestamp=YEAR_10000_MS)
@example(value=None, timestamp=2**63 - 1)
@given(value=st.one_of(st.none(), st.binary(max_size=40).filter(lambda v: not decodes(v))),
       timestamp=st.integers(YEAR_10000_MS, 2**63 - 1))
def test_a_far_future_kafka_timestamp_becomes_a_dead_letter_row_with_a_clamped_date(value: bytes | None,
                                                                                   timestamp: int) -> None:
    row = _one_dead_letter_row(FakeMessage("backstop.positions", 0, 5, value, None, (1, timestamp)), timestamp)
    assert row["reason"] in DECODE_REASONS


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=HEALTH)
@example(record="Action", event_time_ms=YEAR_10000_MS)
@example(record="IndexPrice", event_time_ms=-(2**63))
@given(record=st.sampled_from(sorted(set(TABLE_OF_RECORD) | INPUT_RECORDS)),
       event_time_ms=st.one_of(st.integers(YEAR_10000_MS, 2**63 - 1), st.integers(-(2**63), -1)))
def test_a_record_with_an_event_time_outside_the_dates_is_stored_with_a_clamped_date(record: str,
                                                                                    event_time_ms: int) -> None:
    """The same for a record's own event time (e.g. a replayed action of year 10000): stored as
    itself, not as a processing error, with the exact event time and the clamped date."""
    from tests.kit.records import sample

    datum = sample(record, event_time_ms=event_time_ms)
    message = FakeMessage("backstop.audit", 3, 11, CODEC.encode(record, datum))
    store = RecordingStore()
    run_sink([message], store)
    assert {t: len(rows) for t, rows in store.rows.items() if rows} == {_table_of(record): 1}
    [row] = store.rows[_table_of(record)]
    assert (row["event_date"], row["event_time_ms"]) == (
        LAST_DATE if event_time_ms > 0 else FIRST_DATE, event_time_ms)


@pytest.mark.clickhouse
def test_far_future_and_negative_times_are_stored_by_the_real_clickhouse_server(clickhouse: Any,
                                                                                 clickhouse_address: tuple) -> None:
    """The clamped dates are ones the real server's ``Date`` holds: a dead letter of year 10000 and
    an action of event time -2**63 are stored and read back with their exact times."""
    from pipelines.audit import migrations
    from pipelines.audit.store import ServerStore
    from tests.kit.records import sample

    host, port = clickhouse_address
    store = ServerStore(host, port, database=clickhouse.connection.database)
    try:
        migrations.migrate(store)
        topic = f"fuzz{uuid.uuid4().hex[:12]}"
        action = CODEC.encode("Action", sample("Action", event_time_ms=-(2**63)))
        run_sink([FakeMessage(topic, 0, 1, b"garbage", None, (1, YEAR_10000_MS)),
                  FakeMessage(topic, 0, 2, action, None, (1, 2**63 - 1))], store)
        stored = {table: store.query(f"SELECT event_date, event_time_ms, kafka_timestamp_ms FROM {table} FINAL "
                                     "WHERE kafka_topic = %(t)s", {"t": topic}).rows
                  for table in ("dead_letters", "actions")}
        assert stored == {"dead_letters": [(LAST_DATE, YEAR_10000_MS, YEAR_10000_MS)],
                          "actions": [(FIRST_DATE, -(2**63), 2**63 - 1)]}
    finally:
        store.close()


@pytest.mark.kafka
def test_a_far_future_timestamp_from_the_real_broker_becomes_a_dead_letter_row(kafka_bootstrap: str,
                                                                               topic_factory: Any) -> None:
    """End to end: the real broker accepts and delivers a CreateTime of year 10000; the sink,
    polling the delivered message, makes one dead_letters row with the clamped date."""
    from confluent_kafka import Consumer, Producer

    topic = topic_factory(prefix="fuzz-audit")
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topic, b"not an event", key=b"k", timestamp=YEAR_10000_MS)
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"g-{topic}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    received = []
    try:
        for _ in range(60):
            received += [m for m in consumer.consume(10, 0.5) if m.error() is None]
            if received:
                break
    finally:
        consumer.close()
    assert received and received[0].timestamp() == (1, YEAR_10000_MS)
    row = _one_dead_letter_row(received[0], YEAR_10000_MS)
    assert (row["reason"], row["original_key"]) == ("bad_magic", "k")
