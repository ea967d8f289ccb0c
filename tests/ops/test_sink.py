"""``backstop audit-sink`` between the real broker and the real ClickHouse server, observed from
outside: /readyz, /metrics against the rows actually stored, and SIGTERM mid-stream that stores
and commits what it holds, exits 0, and leaves the next sink nothing to insert twice."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from pipelines.events.codec import default_codec
from pipelines.policy.actions import ActionType
from pipelines.policy.signing import SigningKey
from tests.kit.actions import signed
from tests.kit.ports import free_ports
from tests.kit.probes import get, json_lines, scrape, series, total, wait_for

pytestmark = [pytest.mark.ops, pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.timeout(300)]

KEY = SigningKey("default", b"ops-test-key-0123456789abcdef")
ACTIONS, GARBAGE, PARTITIONS = 3000, 3, 3


def start_sink(tmp_path: Path, name: str, port: int, clickhouse: str, bootstrap: str, group: str,
               topic: str) -> subprocess.Popen:
    """Batches large and slow to fill (1,000 rows, 2 s) against a feed of ~500 a second, so a
    SIGTERM finds rows held in memory: the drain has something to store before it commits."""
    env = dict(os.environ, BACKSTOP_OPS_LAG_INTERVAL_S="0.5")
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "audit-sink", "--clickhouse", clickhouse, "--bootstrap", bootstrap,
         "--group", group, "--topics", topic, "--batch-rows", "1000", "--linger-ms", "2000",
         "--metrics-port", str(port), "--log-format", "json"],
        env=env, stdout=subprocess.PIPE, stderr=open(tmp_path / f"{name}.log", "w"), text=True,
        start_new_session=True)


def terminate(proc: subprocess.Popen) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    return proc.returncode, out


def committed(bootstrap: str, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        offsets = consumer.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=30)
    finally:
        consumer.close()
    return sum(max(tp.offset, 0) for tp in offsets)


def test_sink_metrics_readiness_and_sigterm_drain(kafka_bootstrap, clickhouse, clickhouse_address, topic_factory,
                                                  tmp_path: Path) -> None:
    host, native_port = clickhouse_address
    database = clickhouse.connection.database
    url = f"clickhouse://{host}:{native_port}/{database}"
    topic = topic_factory(partitions=PARTITIONS, prefix="ops-sink")
    group = f"ops-sink-{uuid.uuid4().hex[:8]}"
    codec = default_codec()
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all", "enable.idempotence": True})

    def feed() -> None:  # about six seconds of actions
        for i in range(ACTIONS):
            action = signed(KEY, ActionType.MARGIN_CALL, f"acct-{i % 29}", 1_795_000_000_000 + i)
            producer.produce(topic, codec.encode("Action", action), key=action["account"].encode())
            if i % 50 == 49:
                producer.poll(0)
                time.sleep(0.1)
        assert producer.flush(30) == 0

    def physical(table: str) -> int:  # no FINAL: a row inserted twice counts twice
        return clickhouse.execute(f"SELECT count() FROM {database}.{table}")[0][0]

    feeder = threading.Thread(target=feed, daemon=True)
    port = free_ports()
    first = start_sink(tmp_path, "s1", port, url, kafka_bootstrap, group, topic)
    try:
        wait_for(lambda: get(port, "/readyz")[0] == 200, 90,
                 f"/readyz 200; log: {(tmp_path / 's1.log').read_text()[-2000:]}")
        feeder.start()
        wait_for(lambda: total(scrape(port), "backstop_audit_rows_inserted_total", table="actions") >= 500, 60,
                 "500 rows inserted")
    finally:
        code, out = terminate(first)
    assert code == 0, (tmp_path / "s1.log").read_text()[-3000:]
    assert feeder.is_alive(), "the stream had ended before the SIGTERM: not mid-stream"
    consumed_by_first, stored_by_first = map(int, re.search(r"(\d+) messages, (\d+) rows", out).groups())
    # drained: what it consumed is stored, what is stored is committed, nothing held back
    assert 500 <= consumed_by_first == stored_by_first == physical("actions") \
        == committed(kafka_bootstrap, group, topic) < ACTIONS

    feeder.join(60)
    producer.produce(topic, b"\x07garbage", key=b"junk-0")
    producer.produce(topic, b"", key=b"junk-1")
    producer.produce(topic, b"\x00\x00\x00\x00", key=b"junk-2")
    assert producer.flush(30) == 0
    port = free_ports()
    second = start_sink(tmp_path, "s2", port, url, kafka_bootstrap, group, topic)
    try:
        wait_for(lambda: get(port, "/readyz")[0] == 200, 90, "the second sink ready")
        wait_for(lambda: physical("actions") >= ACTIONS and physical("dead_letters") >= GARBAGE, 90, "every row stored")

        def settled():  # counters and lag as of after the last insert
            s = scrape(port)
            lags = {dict(k)["partition"]: v for k, v in series(s, "backstop_consumer_lag").items()}
            done = total(s, "backstop_audit_rows_inserted_total") == ACTIONS + GARBAGE - stored_by_first
            return s if done and len(lags) == PARTITIONS and not any(lags.values()) else None

        s = wait_for(settled, 30, "the rest counted and the lag 0 on every partition")
        assert total(s, "backstop_events_consumed_total", stage="audit-sink", topic=topic) == \
            ACTIONS + GARBAGE - stored_by_first
        assert total(s, "backstop_audit_rows_inserted_total", table="actions") == ACTIONS - stored_by_first
        assert total(s, "backstop_audit_rows_inserted_total", table="dead_letters") == GARBAGE
        assert total(s, "backstop_dead_letters_total", stage="audit-sink") == GARBAGE
        assert total(s, "backstop_clickhouse_insert_errors_total") == 0
    finally:
        code, _ = terminate(second)
    assert code == 0, (tmp_path / "s2.log").read_text()[-3000:]
    # nothing lost, nothing inserted twice, everything committed
    assert physical("actions") == ACTIONS and physical("dead_letters") == GARBAGE
    distinct = clickhouse.execute(f"SELECT uniqExact(kafka_partition, kafka_offset) FROM {database}.actions")[0][0]
    assert distinct == ACTIONS
    assert committed(kafka_bootstrap, group, topic) == ACTIONS + GARBAGE
    for log in ("s1.log", "s2.log"):
        records = json_lines(tmp_path / log)
        assert any(r["msg"].startswith("metrics on http://127.0.0.1:") for r in records)
