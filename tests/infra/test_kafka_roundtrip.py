"""Round trips through the real broker with the Kafka client the project uses (confluent-kafka)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, Producer

pytestmark = pytest.mark.kafka


def consume(bootstrap: str, topic: str, expected: int, timeout_s: float = 60.0, group: str | None = None) -> list:
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group or f"test-{topic}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    messages = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(messages) < expected and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=500, timeout=0.5):
                assert message.error() is None, message.error()
                messages.append(message)
    finally:
        consumer.close()
    return messages


def test_confluent_kafka_produce_consume_keeps_keys_and_per_partition_order(
        kafka_bootstrap: str, topic_factory: Callable[..., str]) -> None:
    topic = topic_factory(partitions=3)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all", "enable.idempotence": True})
    sent = [(f"acct-{i % 7}".encode(), f"{i}".encode()) for i in range(300)]
    for key, value in sent:
        producer.produce(topic, key=key, value=value, headers={"seq": value})
    assert producer.flush(30) == 0

    received = consume(kafka_bootstrap, topic, expected=len(sent))
    assert sorted((m.key(), m.value()) for m in received) == sorted(sent)
    # one key always lands on one partition, in the order it was produced
    by_key: dict[bytes, list[int]] = {}
    partitions: dict[bytes, set[int]] = {}
    for message in received:
        by_key.setdefault(message.key(), []).append(int(message.value()))
        partitions.setdefault(message.key(), set()).add(message.partition())
        assert dict(message.headers())["seq"] == message.value()
    assert all(values == sorted(values) for values in by_key.values())
    assert all(len(parts) == 1 for parts in partitions.values())
    assert len({p for parts in partitions.values() for p in parts}) > 1
