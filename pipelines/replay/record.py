"""Recording: input topics over an event-time range into a replay file, from Kafka or from the
audit store. Records keep topic (without the configured prefix), partition, offset, key, Kafka
timestamp, event time and the exact value bytes (Confluent-framed)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pipelines.events.codec import Codec, default_codec
from pipelines.events.files import replay_record, write_replay
from pipelines.topics import CATALOGUE

INPUT_TOPICS = tuple(s.name for s in CATALOGUE if s.name.startswith("backstop.market.")
                     ) + ("backstop.positions", "backstop.collateral")


def record_kafka(path: str | Path, consumer_config: dict, *, topics=INPUT_TOPICS, prefix: str = "",
                 start_ms: int | None = None, end_ms: int | None = None, idle_s: float = 3.0,
                 codec: Codec | None = None) -> int:
    """Read ``topics`` from the beginning until ``idle_s`` without messages; keep those whose event
    time is in [start_ms, end_ms]; write them sorted by (topic, partition, offset)."""
    from confluent_kafka import Consumer

    codec = codec or default_codec()
    consumer = Consumer({"group.id": f"backstop-recorder-{time.time_ns()}", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, "isolation.level": "read_committed", **consumer_config})
    consumer.subscribe([prefix + t for t in topics])
    rows: list[dict[str, Any]] = []
    last = time.monotonic()
    try:
        while time.monotonic() - last < idle_s:
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            last = time.monotonic()
            event_time = codec.decode(msg.value()).value["event_time_ms"]
            if (start_ms is not None and event_time < start_ms) or (end_ms is not None and event_time > end_ms):
                continue
            topic = msg.topic()[len(prefix):] if prefix else msg.topic()
            ts_type, ts = msg.timestamp()
            rows.append(replay_record(topic, msg.value(), key=msg.key(), partition=msg.partition(), offset=msg.offset(),
                                      timestamp_ms=ts if ts_type else None, event_time_ms=event_time))
    finally:
        consumer.close()
    rows.sort(key=lambda r: (r["topic"], r["partition"], r["offset"]))
    return write_replay(path, rows, codec=codec)


def export_store(store, path: str | Path, *, start_ms: int | None = None, end_ms: int | None = None,
                 codec: Codec | None = None) -> int:
    """The ``inputs`` rows of an event-time range, re-encoded from their JSON payload, at their
    recorded Kafka coordinates (one row per coordinate: the store's FINAL view)."""
    codec = codec or default_codec()
    where = []
    params: dict[str, Any] = {}
    if start_ms is not None:
        where.append("event_time_ms >= %(start)s")
        params["start"] = start_ms
    if end_ms is not None:
        where.append("event_time_ms <= %(end)s")
        params["end"] = end_ms
    sql = (f"SELECT kafka_topic, kafka_partition, kafka_offset, kafka_timestamp_ms, record, payload "
           f"FROM {store.table('inputs')} FINAL {'WHERE ' + ' AND '.join(where) if where else ''} "
           f"ORDER BY kafka_topic, kafka_partition, kafka_offset")
    rows = []
    for topic, partition, offset, ts, record, payload in store.query(sql, params or None).rows:
        value = json.loads(payload)
        rows.append(replay_record(topic, codec.encode(record, value), key=codec.key(record, value),
                                  partition=partition, offset=offset, timestamp_ms=ts or None,
                                  event_time_ms=value["event_time_ms"]))
    return write_replay(path, rows, codec=codec)
