"""Through the real broker: a worker fed good and bad messages handles every good one and
dead-letters every bad one, with exact counts, the original bytes and the coordinates."""

from __future__ import annotations

import collections
import math
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer

from pipelines.events.codec import Codec, frame
from pipelines.events.deadletter import ValidatingConsumer, now_ms
from pipelines.events.registry import EmbeddedRegistry
from pipelines.events.validation import Validator
from tests.kit.records import INSTRUMENTS, OPTION, sample

pytestmark = [pytest.mark.kafka]


def _produce_all(bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes | None, str]]):
    """Produce (key, value, expected reason or 'ok'); returns {(partition, offset): (value, reason)}."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    placed: dict[tuple[int, int], tuple[bytes | None, str]] = {}
    errors = []

    def report(expected):
        def cb(err, msg):
            if err is not None:
                errors.append(err)
            else:
                placed[(msg.partition(), msg.offset())] = (msg.value(), expected)
        return cb

    for key, value, expected in messages:
        producer.produce(topic, key=key, value=value, on_delivery=report(expected))
    assert producer.flush(30) == 0 and not errors
    return placed


def test_good_and_bad_messages_through_the_broker(kafka_bootstrap: str, topic_factory):
    codec = Codec(EmbeddedRegistry())
    topic = topic_factory(partitions=3)
    dlq = topic_factory(partitions=1)
    now = now_ms()

    def pos(i, **changes):
        changes = {"account": f"acct-{i % 7}", "sequence": i, "event_time_ms": now - 1000, **changes}
        datum = sample("PositionUpdate", **changes)
        return datum["account"].encode(), codec.encode("PositionUpdate", datum)

    messages: list[tuple[bytes | None, bytes | None, str]] = []
    for i in range(200):
        messages.append((*pos(i), "ok"))
    good_bytes = pos(0)[1]
    bad = [
        (b"g", b"\xde\xad\xbe\xef garbage", "bad_magic"),
        (b"j", b'{"account": "acct-1", "quantity": 1}', "bad_magic"),
        (b"t", good_bytes[:-4], "truncated"),
        (b"h", b"\x00\x00\x00", "truncated"),
        (b"u", frame(987_654, good_bytes[5:]), "unknown_schema_id"),
        (b"w", codec.encode("IndexPrice", sample("IndexPrice", event_time_ms=now)), "wrong_record_type"),
        (b"n", None, "missing_value"),
        (*pos(1000, average_price=math.nan), "nan_price"),
        (*pos(1001, average_price=-3.0), "negative_price"),
        (*pos(1002, instrument="DOGE-PERPETUAL"), "unknown_instrument"),
        (*pos(1003, quantity=math.inf), "non_finite"),
        (*pos(1004, quantity=math.nan), "non_finite"),
        (*pos(1005, event_time_ms=now + 3_600_000), "event_time_out_of_range"),
        (*pos(1006, event_time_ms=now - 10 * 86_400_000), "event_time_out_of_range"),
    ]
    # interleave the bad ones among the good ones
    for n, item in enumerate(bad):
        messages.insert(7 + n * 13, item)
    placed = _produce_all(kafka_bootstrap, topic, messages)
    assert len(placed) == len(messages)

    group = f"test-{uuid.uuid4().hex[:8]}"
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    consumer.subscribe([topic])
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    handled: list[tuple[int, int, dict]] = []

    def handler(msg, decoded):
        handled.append((msg.partition(), msg.offset(), decoded.value))

    loop = ValidatingConsumer(consumer, producer, codec=codec, dead_letter_topic=dlq,
                              validator=Validator(codec.schemas, known_instruments=INSTRUMENTS),
                              expected={topic: "PositionUpdate"}, consumer_name=group)
    deadline = time.monotonic() + 90
    try:
        while loop.counts.seen < len(messages) and time.monotonic() < deadline:
            loop.poll_batch(handler, timeout=1.0)
    finally:
        consumer.close()

    expected_reasons = collections.Counter(reason for _, _, reason in bad)
    assert loop.counts.processed == 200
    assert loop.counts.dead_lettered == len(bad)
    assert loop.counts.by_reason == expected_reasons
    assert {(p, o) for p, o, _ in handled} == {c for c, (_, r) in placed.items() if r == "ok"}
    assert all(v["instrument"] == OPTION for _, _, v in handled)

    # the dead-letter topic holds one record per bad message, with its bytes and coordinates
    reader = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"{group}-dlq",
                       "auto.offset.reset": "earliest", "enable.auto.commit": False})
    reader.subscribe([dlq])
    letters = []
    deadline = time.monotonic() + 60
    while len(letters) < len(bad) and time.monotonic() < deadline:
        for msg in reader.consume(num_messages=100, timeout=1.0):
            if msg.error() is None:
                assert msg.key() == topic.encode()
                letters.append(codec.decode(msg.value(), "DeadLetter").value)
    reader.close()
    assert len(letters) == len(bad)
    for letter in letters:
        value, reason = placed[(letter["partition"], letter["offset"])]
        assert letter["topic"] == topic
        assert letter["reason"] == reason
        assert letter["original_value"] == value
        assert letter["consumer"] == group
        assert letter["message_timestamp_ms"] is not None
    assert collections.Counter(letter["reason"] for letter in letters) == expected_reasons
    # offsets were committed: a restarted worker in the same group sees nothing new
    again = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                      "enable.auto.commit": False})
    again.subscribe([topic])
    leftover = [m for m in again.consume(num_messages=500, timeout=5.0) if m.error() is None]
    again.close()
    assert leftover == []


def test_handler_exception_is_dead_lettered_not_fatal(kafka_bootstrap: str, topic_factory):
    codec = Codec(EmbeddedRegistry())
    topic, dlq = topic_factory(partitions=1), topic_factory(partitions=1)
    now = now_ms()
    values = [codec.encode("IndexPrice", sample("IndexPrice", price=100.0 + i, event_time_ms=now)) for i in range(10)]
    _produce_all(kafka_bootstrap, topic, [(b"BTC", v, "ok") for v in values])
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": uuid.uuid4().hex,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    loop = ValidatingConsumer(consumer, Producer({"bootstrap.servers": kafka_bootstrap}), codec=codec,
                              dead_letter_topic=dlq)

    def handler(msg, decoded):
        if decoded.value["price"] == 103.0:
            raise RuntimeError("boom")

    try:
        counts = loop.run(handler, max_messages=10, idle_timeout_s=30)
    finally:
        consumer.close()
    assert (counts.processed, counts.dead_lettered, dict(counts.by_reason)) == (9, 1, {"processing_error": 1})
