"""A worker taking a partition over whose checkpoint is gone reads the partition again from its
first records, not from the offsets its group committed.

Staged on the real broker: a worker runs the crash script and stores checkpoints (each one lets
the group commit the offsets it covers, past ``whale-safe``'s position); it stops; the checkpoint
of ``whale-safe``'s partition is deleted from the compacted checkpoint topic (a tombstone under
its key ``group/partition``), as a checkpoint lost to compaction or an operator would look. A
second worker then takes over while the index keeps ticking. Had it read the partition from the
committed offsets, it would never learn ``whale-safe``'s position and value nothing there; it
reads the partition from its first records and values the account exactly as the in-process
run does."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from pipelines.engine.engine import EngineParams
from pipelines.engine.shard import run_shards
from pipelines.engine.shards import partition_for
from pipelines.events.codec import default_codec
from pipelines.policy.signing import SigningKey
from pipelines.topics import ACCOUNT_PARTITIONS
from pipelines.worker.kafka import CHECKPOINTS
from tests.kit.crash import T0
from tests.kit.probes import stop, wait_for
from tests.kit.worker_processes import SECRET, collect, publish, start_worker, worker_logs

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(600)]

KEY = SigningKey("default", SECRET.encode())
ACCOUNT = "whale-safe"  # alone on its partition, never breaches: only its exposures show its partition at work
LATER = [("IndexPrice", {"underlying": "BTC", "index_name": "btc_usd", "price": 41_000.0 + s,
                         "event_time_ms": T0 + s * 1000}) for s in range(601, 661)]
TOOK_OVER = re.compile(r"took over partition\(s\) \[([\d, ]+)\] from (their checkpoint at \d+|their first records)")


def committed(bootstrap: str, group: str, topic: str, partition: int) -> int:
    """The group's committed offset on one partition (-1: none yet)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    request = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, partition)])]
    answer = admin.list_consumer_group_offsets(request)[group].result(timeout=30)
    return answer.topic_partitions[0].offset


def stored_checkpoint(bootstrap: str, topic: str, partition: int, key: bytes) -> bool:
    """Whether the newest record under ``key`` in ``partition`` of the checkpoint topic is a
    checkpoint (not a tombstone)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        consumer.assign([TopicPartition(topic, partition, low)])
        deadline, offset, found = time.monotonic() + 60, low, False
        while offset < high and time.monotonic() < deadline:
            for m in consumer.consume(100, 1.0):
                if m.error() is None:
                    offset = m.offset() + 1
                    if m.key() == key:
                        found = m.value() is not None
        return found
    finally:
        consumer.close()


def later_exposures(bootstrap: str, prefix: str, want: int, timeout_s: float) -> list[dict]:
    """``ACCOUNT``'s exposure snapshots valued on the index ticks published after the first worker stopped."""
    codec = default_codec()
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([f"{prefix}backstop.exposures"])
    seen: list[dict] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len({e["event_time_ms"] for e in seen}) < want and time.monotonic() < deadline:
            for m in consumer.consume(500, 0.5):
                if m.error() is None:
                    value = codec.decode(m.value(), expected="ExposureSnapshot").value
                    if value["account"] == ACCOUNT and value["event_time_ms"] >= LATER[0][1]["event_time_ms"]:
                        seen.append(value)
    finally:
        consumer.close()
    return seen


def test_a_partition_whose_checkpoint_is_gone_is_read_from_its_first_records(kafka_bootstrap: str, prefix: str,
                                                                            tmp_path: Path) -> None:
    partition = partition_for(ACCOUNT, ACCOUNT_PARTITIONS)
    params = EngineParams(hedged_accounts=frozenset({"hedged-desk"}))
    messages = publish(kafka_bootstrap, prefix)
    first_actions = {a.action_id for a in run_shards(messages, ACCOUNT_PARTITIONS, KEY, params).actions}
    group, positions = f"{prefix}workers", f"{prefix}backstop.positions"
    checkpoints, key = prefix + CHECKPOINTS, f"{prefix}workers/{partition}".encode()
    account_offsets = [m.offset for _, m in messages
                       if m.input == f"backstop.positions/{partition}" and m.value["account"] == ACCOUNT]
    assert account_offsets

    worker = start_worker(kafka_bootstrap, prefix, tmp_path, "w1")
    try:
        actions = collect(kafka_bootstrap, f"{prefix}backstop.actions", "Action", "action_id", first_actions, 240)
        assert set(actions) == first_actions, worker_logs(tmp_path)
        # a checkpoint holding the account's position is stored, and the group committed past the position
        wait_for(lambda: committed(kafka_bootstrap, group, positions, partition) > max(account_offsets), 120,
                 f"the group's commit past {ACCOUNT}'s position on positions/{partition}")
    finally:
        assert stop(worker) == 0
    assert stored_checkpoint(kafka_bootstrap, checkpoints, partition, key)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(checkpoints, None, key, partition=partition)  # the tombstone: no checkpoint under the key
    assert producer.flush(30) == 0
    assert not stored_checkpoint(kafka_bootstrap, checkpoints, partition, key)

    later = publish(kafka_bootstrap, prefix, events=LATER)
    expected = [e for e in run_shards(messages + later, ACCOUNT_PARTITIONS, KEY, params).exposures
                if e["account"] == ACCOUNT and e["event_time_ms"] >= LATER[0][1]["event_time_ms"]]
    assert len(expected) >= 5  # the account is valued on the later ticks

    worker = start_worker(kafka_bootstrap, prefix, tmp_path, "w2")
    try:
        seen = later_exposures(kafka_bootstrap, prefix, len(expected), 180)
    finally:
        stop(worker)
    logs = worker_logs(tmp_path)
    assert {e["event_time_ms"] for e in seen} == {e["event_time_ms"] for e in expected}, logs
    assert all(e in expected for e in seen), [e for e in seen if e not in expected][:2]
    w2 = (tmp_path / "w2.log").read_text()
    assert f"partition {partition} has no checkpoint: reading it from its first records" in w2, logs
    # the other partitions were restored from their checkpoints
    sources = {int(p): source.split(" at ")[0] for ps, source in TOOK_OVER.findall(w2) for p in ps.split(", ")}
    assert sources == {p: "their first records" if p == partition else "their checkpoint"
                       for p in range(ACCOUNT_PARTITIONS)}, logs
