"""Replay a recording into Kafka: keys, partitions (explicit), per-partition order and event
times preserved (the value bytes are the recorded ones; the Kafka timestamp is the recorded
one, else the event time). As fast as possible, or paced at ``speed`` × real time by event time."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from pipelines.events.files import read_replay


def replay_to_kafka(path: str | Path, producer_config: dict, *, prefix: str = "", speed: float | None = None,
                    sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> int:
    """Produce every record of ``path``; returns how many. ``speed`` None: as fast as possible."""
    from confluent_kafka import Producer

    producer = Producer({"enable.idempotence": True, "acks": "all", "linger.ms": 5, **producer_config})
    errors: list[str] = []

    def delivered(err, msg) -> None:
        if err is not None:
            errors.append(str(err))

    count = 0
    start_wall = first_event = None
    for r in read_replay(path):
        if speed:
            if first_event is None:
                first_event, start_wall = r["event_time_ms"], clock()
            due = start_wall + (r["event_time_ms"] - first_event) / 1000.0 / speed
            wait = due - clock()
            if wait > 0:
                producer.poll(0)
                sleep(wait)
        topic = r["topic"] if not prefix or r["topic"].startswith(prefix) else prefix + r["topic"]
        kwargs = {"key": r["key"], "value": r["value"], "on_delivery": delivered,
                  "timestamp": r["timestamp_ms"] or r["event_time_ms"]}
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
        raise RuntimeError(f"replay into Kafka failed: {remaining} undelivered; {errors[:3]}")
    return count
