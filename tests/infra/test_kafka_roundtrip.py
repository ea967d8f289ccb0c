"""Round trips through the real broker with both Kafka clients the project uses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer

pytestmark = pytest.mark.kafka
HERE = Path(__file__).resolve().parent


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


def stop(worker: subprocess.Popen) -> None:
    """SIGTERM the worker's process group (faust drains and commits), SIGKILL if it hangs."""
    if worker.poll() is not None:
        return
    os.killpg(worker.pid, signal.SIGTERM)
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


@pytest.mark.slow
def test_faust_agent_consumes_one_topic_and_produces_to_another(
        kafka_bootstrap: str, topic_factory: Callable[..., str], tmp_path: Path) -> None:
    source, sink = topic_factory(partitions=2), topic_factory(partitions=2)
    env = dict(os.environ, PASSTHROUGH_BROKER=f"kafka://{kafka_bootstrap}", PASSTHROUGH_SOURCE=source,
               PASSTHROUGH_SINK=sink, PASSTHROUGH_APP_ID=f"passthrough-{source}",
               PASSTHROUGH_DATADIR=str(tmp_path / "faust"))
    log = tmp_path / "faust.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen([sys.executable, str(HERE / "faust_passthrough.py"), "worker", "-l", "warn",
                                   "--without-web"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        for i in range(50):
            producer.produce(source, key=f"k{i % 5}".encode(), value=f"v{i}".encode())
        assert producer.flush(30) == 0
        out_messages = consume(kafka_bootstrap, sink, expected=50, timeout_s=90)
        assert worker.poll() is None, log.read_text()[-2000:]
    finally:
        stop(worker)
    assert len(out_messages) == 50, log.read_text()[-2000:]
    assert sorted(m.value() for m in out_messages) == sorted(f"seen:v{i}".encode() for i in range(50))
    assert {m.key() for m in out_messages} == {f"k{i}".encode() for i in range(5)}
