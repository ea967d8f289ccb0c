"""A worker that takes a partition over and finds less state than the group committed reads the
partition again from where its state ends, instead of going on without the records in between.

Staged on the real broker: a worker runs the crash script and stores snapshots (which lets the
group commit past the accounts' positions); it stops; the snapshot of ``whale-safe``'s partition
is deleted from the table's changelog (a tombstone), as state lost by the table would look. A
second worker then takes over while the index keeps ticking. Without the check it would read
from the committed offsets with an empty shard, never learn ``whale-safe``'s position, and value
nothing there; with it, the shard is rebuilt from the log start and values the account exactly
as the in-process run does."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from pipelines.engine.engine import EngineParams
from pipelines.engine.shard import run_shards
from pipelines.engine.shards import partition_for
from pipelines.events.codec import default_codec
from pipelines.policy.signing import SigningKey
from pipelines.streams.settled import read_progress
from pipelines.topics import ACCOUNT_PARTITIONS

from crash_script import T0  # noqa: I001
from ops_helpers import stop, wait_for  # noqa: I001
from workers import SECRET, collect, publish, start_worker, worker_logs

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(600)]

KEY = SigningKey("default", SECRET.encode())
ACCOUNT = "whale-safe"  # alone on its partition, never breaches: only its exposures show its shard at work
LATER = [("IndexPrice", {"underlying": "BTC", "index_name": "btc_usd", "price": 41_000.0 + s,
                         "event_time_ms": T0 + s * 1000}) for s in range(601, 661)]


def committed(bootstrap: str, group: str, topic: str, partition: int) -> int:
    """The group's committed offset on one partition, as the worker reads it (-1: none yet)."""
    reading = read_progress(AdminClient({"bootstrap.servers": bootstrap}), group, [(topic, partition)], 10)
    return reading.committed.get((topic, partition), -1)


def delete_snapshot(bootstrap: str, changelog: str, partition: int) -> None:
    """A tombstone for the last key written to ``partition`` of the snapshot table's changelog
    (the key is read back, so faust's key encoding needs no guessing here)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    low, high = consumer.get_watermark_offsets(TopicPartition(changelog, partition), timeout=10)
    assert high > low, f"no snapshot of partition {partition} was stored"
    consumer.assign([TopicPartition(changelog, partition, high - 1)])
    deadline, message = time.monotonic() + 60, None
    while (message is None or message.error() is not None) and time.monotonic() < deadline:
        message = consumer.poll(5)
    consumer.close()
    assert message is not None and message.error() is None, f"the last snapshot of partition {partition} not read"
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(changelog, None, message.key(), partition=partition)
    assert producer.flush(30) == 0


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


def test_a_shard_missing_its_snapshot_is_rebuilt_from_the_log_start(kafka_bootstrap: str, prefix: str,
                                                                    tmp_path: Path) -> None:
    partition = partition_for(ACCOUNT, ACCOUNT_PARTITIONS)
    params = EngineParams(hedged_accounts=frozenset({"hedged-desk"}))
    messages = publish(kafka_bootstrap, prefix)
    first_actions = {a["action_id"] for a in run_shards(messages, ACCOUNT_PARTITIONS, KEY, params).actions}
    group, positions = f"{prefix}workers", f"{prefix}backstop.positions"

    worker = start_worker(kafka_bootstrap, prefix, tmp_path, "w1")
    try:
        actions = collect(kafka_bootstrap, f"{prefix}backstop.actions", "Action", "action_id", first_actions, 240)
        assert set(actions) == first_actions, worker_logs(tmp_path)
        # a snapshot holding the account's position is stored, and the group committed past it
        wait_for(lambda: committed(kafka_bootstrap, group, positions, partition) > 0, 120,
                 f"the group's commit on positions/{partition}")
    finally:
        assert stop(worker) == 0
    delete_snapshot(kafka_bootstrap, f"{group}-engine-snapshots-changelog", partition)

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
    assert f"shard {partition} holds less than its group committed (no snapshot was found)" in logs, logs
    # the other shards were restored from snapshots that say how far they read their fan-out partitions
    restored = re.findall(r"shard (\d+) restored from its snapshot, which holds \{.*'backstop.market.fanout/\1': \d+\}",
                          (tmp_path / "w2.log").read_text())
    assert sorted(int(p) for p in restored) == [p for p in range(ACCOUNT_PARTITIONS) if p != partition], logs
