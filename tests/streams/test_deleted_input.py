"""Records deleted from an input before a worker read them (retention counts from message
timestamps, so an input stamped with old event times can vanish mid-stream) are reported as an
error naming the shard, the input and the offsets, not only in the consumer's offset reset."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from pipelines.events.files import read_replay, write_replay
from pipelines.replay.kafka_replay import replay_to_kafka
from pipelines.scenarios import library
from pipelines.scenarios.generate import generate, write_recording
from pipelines.topics import ACCOUNT_PARTITIONS

from ops_helpers import stop, wait_for  # noqa: I001
from workers import start_worker

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(300)]

LOST = re.compile(r"shard (\d+) never read backstop\.market\.index/1 offsets (\d+)\.\.(\d+)")


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
    index = TopicPartition(prefix + "backstop.market.index", 1)

    def end() -> int:
        return admin.list_offsets({index: OffsetSpec.latest()})[index].result().offset

    def fanned_out_to(offset: int) -> bool:
        group = [ConsumerGroupTopicPartitions(prefix + "workers", [TopicPartition(index.topic, 1)])]
        answer = admin.list_consumer_group_offsets(group)[prefix + "workers"].result()
        return answer.topic_partitions[0].offset >= offset

    worker = start_worker(kafka_bootstrap, prefix, tmp_path, "w", hedged=",".join(sorted(generated.hedged)))
    try:
        first_end = end()
        assert first_end > 0
        wait_for(lambda: fanned_out_to(first_end), 120, "the fan-out to forward the first half of index/1")
        os.killpg(worker.pid, signal.SIGSTOP)  # the second half arrives and is deleted while the worker is away
        replay_to_kafka(tmp_path / "second.avro", {"bootstrap.servers": kafka_bootstrap}, prefix=prefix)
        second_end = end()
        assert second_end > first_end
        admin.delete_records([TopicPartition(index.topic, 1, second_end)])[TopicPartition(index.topic, 1)].result()
        os.killpg(worker.pid, signal.SIGCONT)
        log = tmp_path / "w.log"
        wait_for(lambda: len({m.group(1) for m in LOST.finditer(log.read_text())}) == ACCOUNT_PARTITIONS, 120,
                 "every shard to report the deleted index records")
    finally:
        stop(worker)
    reported = {(int(s), int(a), int(b)) for s, a, b in LOST.findall((tmp_path / "w.log").read_text())}
    assert reported == {(shard, first_end, second_end - 1) for shard in range(ACCOUNT_PARTITIONS)}
