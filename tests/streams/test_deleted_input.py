"""Records deleted from an input before a worker read them (retention counts from message
timestamps, so an input stamped with old event times can vanish mid-stream) are reported as an
ERROR naming the input and the deleted offsets, not only in the consumer's offset reset."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from pipelines.events.files import read_replay, write_replay
from pipelines.replay.kafka_replay import replay_to_kafka
from pipelines.scenarios import library
from pipelines.scenarios.generate import generate, write_recording
from pipelines.topics import spec_for
from tests.kit.ports import free_ports
from tests.kit.probes import get, parse, series, stop, total, wait_for
from tests.kit.worker_processes import start_worker

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(300)]

INPUT = "backstop.market.index/1"
LOST = re.compile(r"backstop\.market\.index/1: offsets (\d+)\.\.(\d+) were deleted by the broker before this "
                  r"worker read them")


def read_to_the_end(port: int, topic: str, partition: int, records: int) -> bool:
    """Whether the worker on metrics ``port`` has read ``topic`` partition ``partition`` to the end
    the broker reports (its lag 0) and taken at least ``records`` records of ``topic``."""
    status, body = get(port, "/metrics")
    if status != 200:
        return False  # the endpoint is not up yet
    page = parse(body)
    lag = [v for labels, v in series(page, "backstop_consumer_lag").items()
           if dict(labels)["topic"] == topic and dict(labels)["partition"] == str(partition)]
    return lag == [0.0] and total(page, "backstop_events_consumed_total", topic=topic) >= records


def test_a_worker_reports_input_records_the_broker_deleted_before_it_read_them(kafka_bootstrap: str, prefix: str,
                                                                              tmp_path: Path) -> None:
    generated = generate(library.get("black-thursday-2020"))
    write_recording(generated, tmp_path / "scenario.avro")
    records = list(read_replay(tmp_path / "scenario.avro"))
    half = len(records) // 2
    write_replay(tmp_path / "first.avro", records[:half])
    write_replay(tmp_path / "second.avro", records[half:])
    replay_to_kafka(tmp_path / "first.avro", {"bootstrap.servers": kafka_bootstrap}, prefix=prefix)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    topic, partition = INPUT.rsplit("/", 1)
    index = TopicPartition(prefix + topic, int(partition))

    def end(tp: TopicPartition = index) -> int:
        return admin.list_offsets({tp: OffsetSpec.latest()})[tp].result().offset

    port = free_ports()
    worker = start_worker(kafka_bootstrap, prefix, tmp_path, "w", hedged=",".join(sorted(generated.hedged)),
                          metrics_port=port)
    log = tmp_path / "w.log"
    try:
        first_end = end()
        assert first_end > 0
        index_records = sum(end(TopicPartition(index.topic, p)) for p in range(spec_for(topic).partitions))
        wait_for(lambda: read_to_the_end(port, topic, index.partition, index_records), 120,
                 f"the worker to read the first half of {INPUT}")
        os.killpg(worker.pid, signal.SIGSTOP)  # the second half arrives and is deleted while the worker is away
        replay_to_kafka(tmp_path / "second.avro", {"bootstrap.servers": kafka_bootstrap}, prefix=prefix)
        second_end = end()
        assert second_end > first_end
        admin.delete_records([TopicPartition(index.topic, index.partition, second_end)])[index].result()
        os.killpg(worker.pid, signal.SIGCONT)
        wait_for(lambda: LOST.search(log.read_text()), 120, f"the worker to report the deleted records of {INPUT}")
        assert worker.poll() is None, log.read_text()[-3000:]  # it goes on without them
    finally:
        stop(worker)
    reported = {(int(a), int(b)) for a, b in LOST.findall(log.read_text())}
    assert reported == {(first_end, second_end - 1)}, log.read_text()[-3000:]
    assert all(" ERROR " in line for line in log.read_text().splitlines() if LOST.search(line))
