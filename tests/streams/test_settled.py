"""When silence may idle an input: only once it is read to the end of what the broker holds."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from pipelines.streams.settled import (BrokerProgress, deleted_unread, describe_input, read_progress,
                                       settled_inputs)

TOPIC = {"backstop.positions": "p.positions", "backstop.market.index": "p.index"}
ACCOUNT = ("backstop.positions",)
FANOUT = "p.fanout"
INPUTS = ["backstop.positions/3", "backstop.market.index/1"]


def progress(ends: dict, committed: dict | None = None, starts: dict | None = None) -> BrokerProgress:
    return BrokerProgress(starts=starts or {}, ends=ends, committed=committed or {})


def settled(reading: BrokerProgress | None, taken: dict, heard: dict | None = None) -> set[str]:
    return settled_inputs(INPUTS, 3, reading, taken, heard or {}, TOPIC, ACCOUNT, FANOUT)


def lost(reading: BrokerProgress | None, heard: dict, taken: dict | None = None) -> dict:
    return deleted_unread(3, reading, taken or {}, heard, TOPIC, ACCOUNT, FANOUT)


def test_records_deleted_before_the_shard_took_them_are_reported_with_their_offsets() -> None:
    ends = {("p.positions", 3): 20, ("p.index", 1): 90, (FANOUT, 3): 7}
    starts = {("p.positions", 3): 15, ("p.index", 1): 90}
    heard = {"backstop.positions/3": 9, "backstop.market.index/1": 40}
    # the fan-out not read to its end: the index records may still be on their way through it
    assert lost(progress(ends, starts=starts), heard) == {"backstop.positions/3": (10, 15)}
    assert lost(progress(ends, starts=starts), heard, {(FANOUT, 3): 7}) == {
        "backstop.positions/3": (10, 15), "backstop.market.index/1": (41, 90)}


def test_nothing_is_lost_where_the_shard_took_up_to_the_log_start_or_never_read_the_input() -> None:
    ends = {("p.positions", 3): 20, ("p.index", 1): 90, (FANOUT, 3): 7}
    starts = {("p.positions", 3): 15, ("p.index", 1): 90}
    assert lost(progress(ends, starts=starts), {"backstop.positions/3": 14}) == {}
    assert lost(progress(ends, starts=starts), {}) == {}  # a new deployment: trimmed before it began
    assert lost(None, {"backstop.positions/3": 1}) == {}


def test_an_account_input_is_settled_once_read_to_its_end_here_or_by_the_group() -> None:
    ends = {("p.positions", 3): 10, ("p.index", 1): 0, (FANOUT, 3): 0}
    assert "backstop.positions/3" not in settled(progress(ends), {("p.positions", 3): 9})
    assert "backstop.positions/3" in settled(progress(ends), {("p.positions", 3): 10})
    # taken over, nothing read yet: the group's commit says where reading resumes
    assert "backstop.positions/3" in settled(progress(ends, committed={("p.positions", 3): 10}), {})
    assert "backstop.positions/3" not in settled(progress(ends, committed={("p.positions", 3): 4}), {})
    # read again from further back than the commit (the shard held less): what was taken counts
    assert "backstop.positions/3" not in settled(progress(ends, committed={("p.positions", 3): 10}),
                                                 {("p.positions", 3): 0})
    # what retention deleted cannot be read: the log start counts as read
    assert "backstop.positions/3" in settled(progress(ends, starts={("p.positions", 3): 10}), {})
    # restored from a snapshot that holds the last record (offset 9): nothing more can come, whatever was read here
    assert "backstop.positions/3" in settled(progress(ends), {}, {"backstop.positions/3": 9})
    assert "backstop.positions/3" not in settled(progress(ends), {}, {"backstop.positions/3": 8})


def test_a_market_input_is_settled_once_the_shard_took_the_sources_last_record() -> None:
    ends = {("p.positions", 3): 0, ("p.index", 1): 50, (FANOUT, 3): 7}
    # behind on the fan-out and the group's commit behind too: the last record (49) is here, so nothing more can come
    assert "backstop.market.index/1" in settled(progress(ends), {(FANOUT, 3): 2}, {"backstop.market.index/1": 49})
    assert "backstop.market.index/1" not in settled(progress(ends), {(FANOUT, 3): 7}, {"backstop.market.index/1": 48})
    # a source that never held a record (or whose records all expired) has nothing to wait for
    assert "backstop.market.index/1" in settled(progress({**ends, ("p.index", 1): 0}), {})
    assert "backstop.market.index/1" in settled(progress(ends, starts={("p.index", 1): 50}), {})


def test_a_last_record_that_never_reached_the_shard_settles_once_forwarded_and_the_fanout_is_read() -> None:
    ends = {("p.positions", 3): 0, ("p.index", 1): 50, (FANOUT, 3): 7}
    forwarded, heard = {("p.index", 1): 50}, {"backstop.market.index/1": 40}
    assert "backstop.market.index/1" in settled(progress(ends, forwarded), {(FANOUT, 3): 7}, heard)
    # the fan-out's owner died before committing the tail: it will be forwarded again
    assert "backstop.market.index/1" not in settled(progress(ends, {("p.index", 1): 49}), {(FANOUT, 3): 7}, heard)
    # forwarded, but still in the fan-out partition, unread here
    assert "backstop.market.index/1" not in settled(progress(ends, forwarded), {(FANOUT, 3): 6}, heard)
    # the group committed the fan-out to its end, but this worker reads it again from the start
    # (its shard held less than the commit): the records are not here yet
    assert "backstop.market.index/1" not in settled(progress(ends, {**forwarded, (FANOUT, 3): 7}), {(FANOUT, 3): 0},
                                                    heard)
    assert "backstop.market.index/1" in settled(progress(ends, {**forwarded, (FANOUT, 3): 7}), {}, heard)
    # this worker reading the source partition itself says nothing about the shard's fan-out copy
    assert "backstop.market.index/1" not in settled(progress(ends), {("p.index", 1): 50, (FANOUT, 3): 6}, heard)


def test_without_a_reading_of_the_broker_nothing_is_settled() -> None:
    assert settled(None, {("p.positions", 3): 10**9}) == set()
    assert settled(progress({}), {}) == set()  # a partition the reading does not cover


def test_an_input_is_described_by_where_the_shard_and_the_group_stand_against_the_broker() -> None:
    ends = {("p.positions", 3): 10, ("p.index", 1): 50, (FANOUT, 3): 7}
    reading = progress(ends, committed={("p.positions", 3): 4})
    assert describe_input("backstop.positions/3", 3, reading, {("p.positions", 3): 9}, {}, TOPIC, ACCOUNT,
                          FANOUT) == "end 10, committed 4, read to 9"
    assert describe_input("backstop.market.index/1", 3, reading, {(FANOUT, 3): 6}, {"backstop.market.index/1": 40},
                          TOPIC, ACCOUNT, FANOUT) == ("end 50, committed -, last taken 40; fan-out partition 3: "
                                                      "end 7, read to 6")
    assert describe_input("backstop.positions/3", 3, None, {}, {}, TOPIC, ACCOUNT, FANOUT) == "broker progress unknown"


@pytest.mark.kafka
def test_read_progress_reports_the_broker_ends_starts_and_the_groups_commits(kafka_bootstrap: str) -> None:
    topic, group = f"settled-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result()
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for n in range(5):
        producer.produce(topic, b"x", partition=0)
    producer.produce(topic, b"x", partition=1)
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
    consumer.commit(offsets=[TopicPartition(topic, 0, 3)], asynchronous=False)
    consumer.close()

    reading = read_progress(admin, group, [(topic, 0), (topic, 1)], timeout_s=30)
    assert reading.ends == {(topic, 0): 5, (topic, 1): 1}
    assert reading.starts == {(topic, 0): 0, (topic, 1): 0}
    assert reading.committed == {(topic, 0): 3}  # partition 1: no commit, no entry
    assert reading.read_to((topic, 0), {}) == 3 and reading.read_to((topic, 1), {}) == 0
