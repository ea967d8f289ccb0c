"""ClickHouse stopped for 30 s mid-stream and restarted: the sink keeps its place and loses nothing.

A private ClickHouse server (``infra/local up --only clickhouse`` in its own state folder, on free
ports) so the shared server on 9000 is never touched.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from pipelines.audit import migrations
from pipelines.audit.sink import make_sink
from pipelines.audit.store import ServerStore, StoreError
from pipelines.config import KafkaSettings
from pipelines.events.codec import Codec
from tests.kit.incident import T0
from tests.kit.ports import free_ports
from tests.kit.probes import wait_for
from tests.kit.records import sample

pytestmark = [pytest.mark.chaos, pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.slow, pytest.mark.timeout(300)]

LOCAL = Path(__file__).resolve().parents[2] / "infra" / "local"
MESSAGES = 3000
OUTAGE_S = 30


def local(*args: str, env: dict[str, str]) -> None:
    result = subprocess.run([sys.executable, str(LOCAL), *args], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.fixture
def private_clickhouse(tmp_path: Path, clickhouse_address) -> tuple[dict[str, str], int]:
    env = dict(os.environ)
    env.update({"BACKSTOP_INFRA_DIR": str(tmp_path / "infra"), "BACKSTOP_CLICKHOUSE_PORT": str(free_ports()),
                "BACKSTOP_CLICKHOUSE_HTTP_PORT": str(free_ports())})
    local("up", "--only", "clickhouse", env=env)
    try:
        yield env, int(env["BACKSTOP_CLICKHOUSE_PORT"])
    finally:
        local("down", env=env)


def test_clickhouse_outage_mid_stream_loses_nothing_and_adds_nothing(private_clickhouse, kafka_bootstrap,
                                                                     recovery_report, topic_factory) -> None:
    env, port = private_clickhouse
    store = ServerStore("127.0.0.1", port, database="audit_outage")
    migrations.migrate(store)
    checker = ServerStore("127.0.0.1", port, database="audit_outage")  # the test's own connection
    codec = Codec()
    index_topic, positions_topic = topic_factory(partitions=1, prefix="idx"), topic_factory(partitions=3, prefix="pos")
    group = f"audit-outage-{uuid.uuid4().hex[:8]}"
    sink = make_sink(store, KafkaSettings(bootstrap=kafka_bootstrap), group=group,
                     topics=[index_topic, positions_topic], codec=codec, batch_rows=200, linger_s=0.1,
                     backoff_initial_s=0.1, backoff_max_s=1.0)
    stop = threading.Event()
    result: dict = {}
    worker = threading.Thread(target=lambda: result.setdefault("stats", sink.run(stop)), daemon=True)
    worker.start()

    producer = Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all", "enable.idempotence": True})

    def produce(start: int, count: int) -> None:
        for i in range(start, start + count):
            if i % 2:
                value = sample("IndexPrice", price=60_000.0 - i, event_time_ms=T0 + i)
                producer.produce(index_topic, codec.encode("IndexPrice", value), key=b"BTC")
            else:
                value = sample("PositionUpdate", account=f"acct-{i % 17}", sequence=i, event_time_ms=T0 + i)
                producer.produce(positions_topic, codec.encode("PositionUpdate", value), key=value["account"].encode())
            producer.poll(0)
        assert producer.flush(30) == 0

    try:
        produce(0, MESSAGES // 3)
        wait_for(lambda: _count(checker) >= MESSAGES // 3, 60, "first third stored")
        local("down", env=env)  # ClickHouse stops mid-stream ...
        produce(MESSAGES // 3, MESSAGES // 3)  # ... while messages keep arriving
        time.sleep(OUTAGE_S)
        assert sink.stats.insert_failures > 0, "the sink should have tried to insert while ClickHouse was down"
        committed_during = _committed(kafka_bootstrap, group, [index_topic, positions_topic])
        assert committed_during <= MESSAGES // 3 + 200, "offsets committed past what was stored"
        local("up", "--only", "clickhouse", env=env)  # ... and comes back with its data
        back = time.monotonic()
        wait_for(lambda: _count(checker) >= 2 * MESSAGES // 3, 90, "the backlog stored after the restart")
        recovery = time.monotonic() - back
        produce(2 * MESSAGES // 3, MESSAGES - 2 * MESSAGES // 3)
        wait_for(lambda: _count(checker) >= MESSAGES, 90, "every message stored after the restart")
        time.sleep(1.0)
    finally:
        stop.set()
        worker.join(30)
        sink.consumer.close()
    stats = result["stats"]
    assert checker.count("inputs") == MESSAGES  # FINAL: one row per message, none lost, none doubled
    distinct = "SELECT uniqExact(kafka_topic, kafka_partition, kafka_offset) FROM audit_outage.inputs"
    assert checker.query(distinct).scalar() == MESSAGES
    assert stats.rows_inserted >= MESSAGES and stats.max_buffered <= 200 + 1000
    assert _committed(kafka_bootstrap, group, [index_topic, positions_topic]) == MESSAGES
    recovery_report(f"ClickHouse stopped {OUTAGE_S} s", recovery,
           f"{MESSAGES} messages: {MESSAGES} rows (FINAL), {stats.insert_failures} failed inserts retried")
    store.close()
    checker.close()


def _count(store: ServerStore) -> int:
    try:
        return store.count("inputs")
    except StoreError:
        return -1


def _committed(bootstrap: str, group: str, topics: list[str]) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(timeout=10)
        parts = [TopicPartition(t, p) for t in topics for p in metadata.topics[t].partitions]
        return sum(max(tp.offset, 0) for tp in consumer.committed(parts, timeout=10))
    finally:
        consumer.close()
