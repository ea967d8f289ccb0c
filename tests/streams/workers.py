"""Stream workers as the tests run them: real ``backstop worker`` processes on the real broker,
and a consumer that collects what they emit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer

from pipelines.events.codec import default_codec

SECRET = "worker-test-signing-key-0123456789"
# An input silent this long stops holding the others back (the one wall-clock rule). A SIGKILLed
# worker's inputs go silent until the group notices (10 s session timeout) and the survivor has
# restored and caught up; on a loaded 2-core machine that took more than 12 s, and inputs idled
# mid-recovery release events out of order. Well above the stall, at the price of a slower end.
IDLE_MS = 30_000


def collect(bootstrap: str, topic: str, record: str, id_field: str, want: set[str], timeout_s: float) -> dict:
    codec = default_codec()
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
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


def start_worker(bootstrap: str, prefix: str, tmp_path: Path, name: str, hedged: str = "hedged-desk",
                 metrics_port: int = 0) -> subprocess.Popen:
    env = dict(os.environ, BACKSTOP_ACTIONS_SIGNING_KEY=SECRET, BACKSTOP_KAFKA_TOPIC_PREFIX=prefix)
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "worker", "--bootstrap", bootstrap, "--app-id", "workers",
         "--max-event-age-s", "1e9", "--idle-ms", str(IDLE_MS), "--snapshot-every", "50", "--hedged", hedged,
         "--metrics-port", str(metrics_port)],
        env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"{name}.log", "ab"), start_new_session=True,
        cwd=tmp_path)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

