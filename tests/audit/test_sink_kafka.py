"""Topics -> rows -> timeline end to end through the real broker, into the real server and chdb."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Producer

from pipelines.audit import migrations, timeline
from pipelines.audit.sink import make_sink
from pipelines.config import KafkaSettings
from pipelines.events.codec import Codec
from tests.kit.incident import ACCOUNT, EXPECTED, incident

pytestmark = pytest.mark.kafka  # and ClickHouse on the store fixture's server variant


def make_topics(topic_factory) -> dict[str, str]:
    """A fresh topic per catalogue topic the scenario uses (account topics with 3 partitions)."""
    names = sorted({topic for topic, _, _ in incident()})
    return {name: topic_factory(partitions=3 if name.split(".")[1] in ("positions", "breaches", "actions", "executions")
                                else 1, prefix=name.replace(".", "-")) for name in names}


def produce_incident(bootstrap: str, topics: dict[str, str], codec: Codec, garbage: int = 1) -> int:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    count = 0
    for topic, record, value in incident():
        producer.produce(topics[topic], codec.encode(record, value), key=codec.key(record, value),
                         timestamp=value["event_time_ms"])
        count += 1
    for i in range(garbage):
        producer.produce(topics["backstop.positions"], b"{not avro}", key=f"junk-{i}".encode())
        count += 1
    assert producer.flush(30) == 0
    return count


def run_sink(store, bootstrap: str, topics: dict[str, str], codec: Codec, group: str | None = None, **kwargs):
    sink = make_sink(store, KafkaSettings(bootstrap=bootstrap), group=group or f"audit-{uuid.uuid4().hex[:8]}",
                     topics=list(topics.values()), codec=codec, linger_s=0.2, **kwargs)
    try:
        return sink.run(idle_exit_s=4.0)
    finally:
        sink.consumer.close()


def test_topics_to_rows_to_timeline_and_redelivery_adds_no_rows(migrated, kafka_bootstrap, topic_factory) -> None:
    codec = Codec()
    topics = make_topics(topic_factory)
    produced = produce_incident(kafka_bootstrap, topics, codec)
    stats = run_sink(migrated, kafka_bootstrap, topics, codec, group="g1")
    assert stats.rows_inserted == produced and stats.undecodable == 1
    expected = dict(EXPECTED, dead_letters=EXPECTED["dead_letters"] + 1)
    assert {t: migrated.count(t) for t in migrations.AUDIT_TABLES} == expected
    junk = migrated.query("SELECT reason, source_topic, original_key FROM dead_letters FINAL "
                          "WHERE consumer = 'audit-sink'").rows
    assert junk == [("bad_magic", topics["backstop.positions"], "junk-0")]
    coords = migrated.query("SELECT kafka_topic, kafka_partition, kafka_offset FROM breaches FINAL").rows
    assert all(topic == topics["backstop.breaches"] and offset >= 0 for topic, _, offset in coords)

    story = timeline.timeline(migrated, ACCOUNT)
    assert [e.id for e in story if e.kind == "action"] == ["a-1", "a-2", "a-3"]
    assert next(e for e in story if e.id == "a-1").causes == ["b-1", "b-2"]

    # the whole stream delivered again (a new group re-reads everything): no new rows
    again = run_sink(migrated, kafka_bootstrap, topics, codec, group="g2", batch_rows=7)
    assert again.rows_inserted == produced
    assert {t: migrated.count(t) for t in migrations.AUDIT_TABLES} == expected
    assert len(timeline.timeline(migrated, ACCOUNT)) == len(story)

    # the first group committed everything: restarting it reads nothing
    assert run_sink(migrated, kafka_bootstrap, topics, codec, group="g1").messages == 0
