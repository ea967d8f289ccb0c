"""The audit sink's counts and readiness without Kafka: a fake consumer, a store that goes down."""

from __future__ import annotations

import collections
import time

import pytest

from pipelines.audit.sink import AuditSink
from pipelines.audit.store import StoreUnavailable
from pipelines.events.codec import Codec
from pipelines.ops.metrics import Metrics
from pipelines.policy.actions import ActionType
from pipelines.policy.signing import SigningKey
from tests.kit.actions import signed
from tests.kit.fakes import FakeConsumer, FakeMessage
from tests.kit.probes import samples

pytestmark = pytest.mark.ops

KEY = SigningKey("default", b"ops-test-key-0123456789abcdef")


class Store:
    def __init__(self) -> None:
        self.down, self.rows = False, collections.Counter()

    def insert(self, table, columns, *, dedup_token=None) -> int:
        if self.down:
            raise StoreUnavailable("ClickHouse 127.0.0.1:9 unavailable")
        n = len(next(iter(columns.values())))
        self.rows[table] += n
        return n


def test_counts_match_the_store_and_readiness_follows_membership_and_the_store() -> None:
    codec = Codec()
    good = [signed(KEY, ActionType.MARGIN_CALL, f"acct-{i}", 1_795_000_000_000 + i) for i in range(12)]
    messages = [FakeMessage("actions", 0, i, codec.encode("Action", a)) for i, a in enumerate(good)]
    messages += [FakeMessage("actions", 0, 12, b"\x07junk"), FakeMessage("actions", 0, 13, b"")]
    consumer, store, metrics = FakeConsumer(messages, joins_on_subscribe=False), Store(), Metrics("audit-sink")
    sink = AuditSink(store, consumer, codec, batch_rows=5, linger_s=0.0, backoff_initial_s=0.001,
                     backoff_max_s=0.002, metrics=metrics)
    sink.subscribe(["actions"])
    assert not sink.ready()  # not a member of the group yet
    consumer.on_assign(consumer, consumer.assignment())
    assert sink.ready()

    store.down = True
    for _ in range(20):
        sink.step()
    assert not sink.ready() and consumer.paused  # paused on the outage: not ready
    failures = samples(metrics.registry)[("backstop_clickhouse_insert_errors_total", ())]
    assert failures >= 1 and failures == sink.stats.insert_failures

    store.down = False
    deadline = time.monotonic() + 5
    while (consumer.queue or len(sink._batch)) and time.monotonic() < deadline:
        sink.step()
        time.sleep(0.001)
    assert sink.ready()
    s = samples(metrics.registry)
    assert s[("backstop_events_consumed_total", (("stage", "audit-sink"), ("topic", "actions")))] == 14
    assert s[("backstop_audit_rows_inserted_total", (("table", "actions"),))] == store.rows["actions"] == 12
    assert s[("backstop_audit_rows_inserted_total", (("table", "dead_letters"),))] == store.rows["dead_letters"] == 2
    reasons = {dict(k)["reason"]: v for (n, k), v in s.items() if n == "backstop_dead_letters_total"}
    assert reasons == {"bad_magic": 1, "missing_value": 1}
