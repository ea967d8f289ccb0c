"""The audit sink SIGKILLed mid-stream and restarted: every message of its topics is one row
of the audit store (FINAL), none lost; redelivered rows collapse; the time from the restart to
rows flowing again is reported."""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path

import pytest

from pipelines.audit.store import ServerStore, StoreError
from tests.chaos.harness import Feed, cli
from tests.kit.probes import stop, wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.slow, pytest.mark.timeout(400)]

ACTIONS = 3000


def start_sink(bootstrap: str, url: str, group: str, topic: str, tmp_path: Path, name: str):
    # batches of 500 rows lingering 1 s: a kill always finds rows held in memory, not yet stored
    return cli(["audit-sink", "--clickhouse", url, "--bootstrap", bootstrap, "--group", group, "--topics", topic,
                "--batch-rows", "500", "--linger-ms", "1000"], tmp_path, name)


def test_audit_sink_sigkill_mid_stream(kafka_bootstrap, clickhouse, clickhouse_address, topic_factory,
                                       tmp_path: Path, recovery_report) -> None:
    host, port = clickhouse_address
    database = clickhouse.connection.database
    url = f"clickhouse://{host}:{port}/{database}"
    topic = topic_factory(partitions=3, prefix="chaos-actions")
    group = f"chaos-sink-{uuid.uuid4().hex[:8]}"
    store = ServerStore(host, port, database=database)

    def stored() -> int:
        try:
            return store.count("actions")
        except StoreError:
            return 0  # not migrated yet

    feed = Feed(kafka_bootstrap, topic, ACTIONS, per_second=300)
    sink = start_sink(kafka_bootstrap, url, group, topic, tmp_path, "sink")
    try:
        feed.start()
        wait_for(lambda: stored() >= ACTIONS // 3, 120, "a third of the actions stored")
        stop(sink, signal.SIGKILL)
        at_kill = stored()
        sink = start_sink(kafka_bootstrap, url, group, topic, tmp_path, "sink-restarted")
        restarted = time.monotonic()
        wait_for(lambda: stored() > at_kill, 120, "rows flowing after the restart")
        recovery = time.monotonic() - restarted
        feed.join(120)
        wait_for(lambda: stored() >= ACTIONS, 120, "every action stored")
        time.sleep(2)  # anything still to come would be a duplicate: give it the chance to show
    finally:
        stop(sink)
    assert not feed.failed and len(feed.delivered) == ACTIONS, list(feed.failed.values())[:3]
    assert store.count("actions") == ACTIONS  # FINAL: one row per action id
    distinct = store.query(f"SELECT uniqExact(kafka_partition, kafka_offset) FROM {database}.actions").scalar()
    assert distinct == ACTIONS
    physical = store.count("actions", final=False)
    stored_ids = {r["action_id"] for r in store.query(f"SELECT DISTINCT action_id FROM {database}.actions").dicts()}
    assert stored_ids == {a["action_id"] for a in feed.actions}
    recovery_report("audit sink SIGKILLed", recovery,
           f"{ACTIONS} actions: {ACTIONS} rows (FINAL), {physical - ACTIONS} redelivered copies collapsed")
    store.close()
