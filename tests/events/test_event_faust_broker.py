"""Faust and confluent-kafka share the codec through the real broker: bytes written by one are
read by the other."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer

from event_samples import sample
from pipelines.events.codec import Codec
from pipelines.events.registry import EmbeddedRegistry

HERE = Path(__file__).resolve().parent
pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_faust_agent_reads_and_writes_the_codec(kafka_bootstrap: str, topic_factory, tmp_path: Path):
    codec = Codec(EmbeddedRegistry())
    source, sink = topic_factory(partitions=2), topic_factory(partitions=2)
    env = dict(os.environ, FAUSTCODEC_BROKER=f"kafka://{kafka_bootstrap}", FAUSTCODEC_SOURCE=source,
               FAUSTCODEC_SINK=sink, FAUSTCODEC_APP_ID=f"faustcodec-{source}",
               FAUSTCODEC_DATADIR=str(tmp_path / "faust"), BACKSTOP_SCHEMA_REGISTRY_URL="")
    log = tmp_path / "faust.log"
    sent = [sample("PositionUpdate", account=f"acct-{i % 4}", sequence=i, quantity=float(i)) for i in range(40)]
    with open(log, "wb") as out:
        worker = subprocess.Popen([sys.executable, str(HERE / "faust_codec_app.py"), "worker", "-l", "warn",
                                   "--without-web"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True, cwd=str(HERE))
    try:
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        for datum in sent:
            producer.produce(source, key=codec.key("PositionUpdate", datum), value=codec.encode("PositionUpdate", datum))
        assert producer.flush(30) == 0
        consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"test-{sink}",
                             "auto.offset.reset": "earliest", "enable.auto.commit": False})
        consumer.subscribe([sink])
        received = []
        deadline = time.monotonic() + 90
        while len(received) < len(sent) and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=100, timeout=0.5):
                assert msg.error() is None, msg.error()
                received.append(codec.decode(msg.value(), "PositionUpdate").value)
        consumer.close()
        assert worker.poll() is None, log.read_text()[-2000:]
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
    assert len(received) == len(sent), log.read_text()[-2000:]
    key = lambda d: d["sequence"]  # noqa: E731
    assert sorted(received, key=key) == [dict(d, quantity=d["quantity"] * 2) for d in sorted(sent, key=key)]
