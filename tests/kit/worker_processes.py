"""Stream workers as the tests run them: real ``backstop worker`` processes on the real broker,
and a consumer that collects what they emit."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer

from pipelines.engine.shard import Message, shard_of
from pipelines.engine.shards import partition_for
from pipelines.engine.wire import record_target
from pipelines.events.codec import default_codec
from pipelines.topics import ACCOUNT_PARTITIONS
from tests.kit.crash import crash_events

SECRET = "worker-test-signing-key-0123456789"
# An input silent this long, and read to its end on the broker, stops holding the others back.
# Only the second condition keeps a SIGKILL from reordering events (a survivor's recovery outlasts
# any timeout on a busy broker), so the tests use a short one: a longer one would hide a regression.
IDLE_MS = 2_000

TOPIC_OF = {"IndexPrice": "backstop.market.index", "VolatilityUpdate": "backstop.market.volatility",
            "OrderBookDepth": "backstop.market.depth", "PositionUpdate": "backstop.positions",
            "CollateralUpdate": "backstop.collateral"}
KEY_FIELD = {"IndexPrice": "underlying", "VolatilityUpdate": "underlying", "OrderBookDepth": "instrument",
             "PositionUpdate": "account", "CollateralUpdate": "account"}


def publish(bootstrap: str, prefix: str, client: dict | None = None,
            events: list[tuple[str, dict]] | None = None) -> list[tuple[int | None, Message]]:
    """Produce ``events`` (the crash script by default); return the messages as the in-process
    run must see them. ``client``: extra librdkafka settings (e.g. SASL)."""
    codec = default_codec()
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "enable.idempotence": True,
                         **(client or {})})
    placed: dict[int, tuple[str, int, int]] = {}
    events = crash_events() if events is None else events
    for n, (record, value) in enumerate(events):
        def delivered(err, msg, n=n):
            assert err is None, err
            placed[n] = (msg.topic().removeprefix(prefix), msg.partition(), msg.offset())
        producer.produce(prefix + TOPIC_OF[record], key=value[KEY_FIELD[record]].encode(),
                         value=codec.encode(record, value), on_delivery=delivered)
        producer.poll(0)
    assert producer.flush(60) == 0
    messages = []
    for n, (record, value) in enumerate(events):
        topic, partition, offset = placed[n]
        messages.append((shard_of(record, value, ACCOUNT_PARTITIONS),
                         Message(f"{topic}/{partition}", offset, f"{topic}:{partition}:{offset}", record, value)))
    return messages


def collect(bootstrap: str, topic: str, record: str, id_field: str, want: set[str], timeout_s: float,
            client: dict | None = None) -> dict:
    codec = default_codec()
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False, **(client or {})})
    consumer.subscribe([topic])
    seen: dict[str, list[dict]] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while not want <= set(seen) and time.monotonic() < deadline:
            for m in consumer.consume(500, 0.5):
                if m.error() is None:
                    value = codec.decode(m.value(), expected=record).value
                    seen.setdefault(value[id_field], []).append(value)
    finally:
        consumer.close()
    return seen


def missing_by_partition(expected: dict[str, dict], got: dict) -> str:
    """Which expected actions did not arrive, per account partition and account (halts by their
    underlying): the first question when a parity test fails is whether one shard went silent."""
    missing: dict[tuple[int, str], list[int]] = {}
    for action_id, action in expected.items():
        if action_id not in got:
            key = (partition_for(record_target(action), ACCOUNT_PARTITIONS), record_target(action))
            missing.setdefault(key, []).append(action["event_time_ms"])
    return "; ".join(f"partition {p} {account}: {len(times)} missing of "
                     f"{sum(a['account'] == account for a in expected.values())}, from event time {min(times)}"
                     for (p, account), times in sorted(missing.items())) or "none missing"


NOTABLE = re.compile(r"WARNING|ERROR|CRITICAL|took over|caught up|no checkpoint|Traceback")


def worker_logs(tmp_path: Path, tail: int = 1500) -> str:
    """What a failing test shows of its workers' logs: per worker, the lines that tell a story
    (warnings, errors, partitions taken over and caught up), then the tail."""
    parts = []
    for path in sorted(tmp_path.glob("*.log")):
        text = path.read_text()
        notable = [line for line in text.splitlines() if NOTABLE.search(line)]
        parts.append(f"--- {path.name}\n" + "\n".join(notable[-60:]) + f"\n... tail:\n{text[-tail:]}")
    return "\n".join(parts)


def start_worker(bootstrap: str, prefix: str, tmp_path: Path, name: str, hedged: str = "hedged-desk",
                 metrics_port: int = 0, env: dict[str, str] | None = None, idle_ms: int = IDLE_MS) -> subprocess.Popen:
    """A ``backstop worker`` process; ``env``: extra settings (e.g. ``BACKSTOP_KAFKA_SASL_*``)."""
    env = {**os.environ, "BACKSTOP_ACTIONS_SIGNING_KEY": SECRET, "BACKSTOP_KAFKA_TOPIC_PREFIX": prefix, **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "worker", "--bootstrap", bootstrap, "--app-id", "workers",
         "--max-event-age-s", "1e9", "--idle-ms", str(idle_ms), "--checkpoint-ms", "500", "--hedged", hedged,
         "--metrics-port", str(metrics_port), "--loglevel", "info"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"{name}.log", "ab"), start_new_session=True,
        cwd=tmp_path)


