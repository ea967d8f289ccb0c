"""Replay a recording into Kafka: keys, partitions (explicit), per-partition order and event
times preserved (the value bytes are the recorded ones, event times inside them). As fast as
possible, or paced at ``speed`` × real time by event time.

The Kafka timestamp is the time of the replay, and the recorded one travels in the
``RECORDED_TIMESTAMP_HEADER`` header: a broker applies ``retention.ms`` to message timestamps,
so a recording older than a topic's retention, replayed with its own timestamps, would be
deleted while the cluster still reads it (docs/decisions/0009-replay-timestamps.md).
``keep_timestamps=True`` writes the recorded timestamps, for topics that keep them
(``retention.ms`` -1, or a recording younger than the retention). Nothing in Backstop reads
event time from Kafka timestamps."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from pipelines.errors import UserError
from pipelines.replay.reading import replay_records

RECORDED_TIMESTAMP_HEADER = "backstop-recorded-timestamp-ms"


def replay_to_kafka(path: str | Path, producer_config: dict, *, prefix: str = "", speed: float | None = None,
                    keep_timestamps: bool = False, sleep: Callable[[float], None] = time.sleep,
                    clock: Callable[[], float] = time.monotonic) -> int:
    """Produce every record of ``path``; returns how many. ``speed`` None: as fast as possible.
    A file problem, or messages the broker did not take, is a ``UserError``."""
    from confluent_kafka import Producer

    producer = Producer({"enable.idempotence": True, "acks": "all", "linger.ms": 5, **producer_config})
    errors: list[str] = []

    def delivered(err, msg) -> None:
        if err is not None:
            errors.append(str(err))

    count = 0
    start_wall = first_event = None
    for r in replay_records(path):
        if speed:
            if first_event is None:
                first_event, start_wall = r["event_time_ms"], clock()
            due = start_wall + (r["event_time_ms"] - first_event) / 1000.0 / speed
            wait = due - clock()
            if wait > 0:
                producer.poll(0)
                sleep(wait)
        topic = r["topic"] if not prefix or r["topic"].startswith(prefix) else prefix + r["topic"]
        recorded = r["timestamp_ms"] or r["event_time_ms"]
        kwargs = {"key": r["key"], "value": r["value"], "on_delivery": delivered,
                  "headers": [(RECORDED_TIMESTAMP_HEADER, str(recorded).encode())]}
        if keep_timestamps:
            kwargs["timestamp"] = recorded
        if r["partition"] is not None and r["partition"] >= 0:
            kwargs["partition"] = r["partition"]
        while True:
            try:
                producer.produce(topic, **kwargs)
                break
            except BufferError:
                producer.poll(0.1)
        count += 1
        if count % 10_000 == 0:
            producer.poll(0)
    remaining = producer.flush(60)
    if remaining or errors:
        raise UserError(f"replay into Kafka failed: {remaining} undelivered after 60 s, {len(errors)} refused"
                        + (f" (first: {errors[0]})" if errors else ""))
    return count
