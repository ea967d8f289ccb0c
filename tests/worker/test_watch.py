"""Nothing silent: a partition whose records stop arriving while the broker holds them (a fetch
that never returns, the shape the faust worker's lost partitions had) is reported — an ERROR
naming it and the input it waits for, its stall gauge, ``ready()`` false — and recovers; every
bad record is dead-lettered once, under its own coordinates, however many partitions and
workers read it."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from pipelines.engine.shards import partition_for
from pipelines.events.codec import default_codec
from pipelines.scenarios.generate import KEY_FIELD, TOPIC_OF
from pipelines.topics import spec_for
from pipelines.worker.memory import MemorySource
from pipelines.worker.worker import DEAD_LETTERS
from tests.kit.crash import crash_events
from tests.worker.cluster import CONFIG, Cluster, publish


def stick(source: MemorySource, tp: tuple[str, int]) -> None:
    """``source`` reads nothing more of ``tp`` while the broker holds more of it."""
    poll = source.poll

    def stuck_poll(max_records: int, timeout_s: float):
        start = source.next.get(tp)
        records = poll(max_records, timeout_s)
        if start is not None and tp in source.next:
            source.next[tp] = start
        return [r for r in records if (r.topic, r.partition) != tp]
    source.poll = stuck_poll


def test_a_partition_whose_input_stops_arriving_is_reported_and_recovers(caplog: pytest.LogCaptureFixture) -> None:
    config = dataclasses.replace(CONFIG, stall_ms=2_000, checkpoint_ms=10**9)
    cluster = Cluster(config)
    events = crash_events()
    cluster.feed(events[:40], per_step=40)
    worker = cluster.start("a")
    cluster.group.move([3, 4], "a")
    cluster.settle()
    assert worker.ready()
    (track,) = worker.tracks
    index = ("backstop.market.index", partition_for("BTC", 3))
    poll = track.source.poll
    stick(track.source, index)
    cluster.feed(events[40:400], per_step=5)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        cluster.step(100)  # 5 s on the fake clock
        assert not worker.ready()
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and errors[0].startswith("partition(s) [3, 4] have applied nothing for "), errors
        assert f"waiting for backstop.market.index/{index[1]}" in errors[0]
        gauge = worker.metrics.registry.get_sample_value("backstop_partition_stalled_seconds", {"partition": "3"})
        assert gauge > 2.0
        track.source.poll = poll  # the fetch returns
        cluster.settle()
    assert worker.ready()
    assert worker.metrics.registry.get_sample_value("backstop_partition_stalled_seconds", {"partition": "3"}) == 0
    assert "partition(s) [3, 4] move again" in caplog.text


def test_every_bad_record_is_dead_lettered_once_under_its_own_coordinates() -> None:
    cluster = Cluster(CONFIG)
    publish(cluster.broker, crash_events()[:200])
    bad = []
    for topic, partitions in (("backstop.market.index", 3), ("backstop.market.volatility", 3),
                              ("backstop.positions", 12), ("backstop.collateral", 12)):
        for partition in range(partitions):
            offset = cluster.broker.append(topic, partition, b"k", b"\x00not avro")
            bad.append((topic, partition, offset))
    cluster.start("a")
    cluster.start("b")
    cluster.group.move(range(0, 5), "a")
    cluster.group.move(range(5, 12), "b")
    cluster.settle()
    codec = default_codec()
    letters = [codec.decode(r.value, expected="DeadLetter").value for r in cluster.broker.records(DEAD_LETTERS)]
    assert sorted((d["topic"], d["partition"], d["offset"]) for d in letters) == sorted(bad)
    assert {d["reason"] for d in letters} == {"unknown_schema_id"}


def test_event_times_are_judged_against_their_message_not_the_wall_clock() -> None:
    """A takeover reads days-old records again: they are admitted or refused as they were the first
    time. The crash script is dated 2026-11-18; stamped with their own event times, its records pass
    a one-day age limit whatever today's date, and one stamped ten days after its event time does not."""
    config = dataclasses.replace(CONFIG, max_event_age_ms=24 * 3600 * 1000)
    cluster = Cluster(config)
    codec = default_codec()
    events = crash_events()[:200]
    for record, value in events:
        topic, key = TOPIC_OF[record], str(value[KEY_FIELD[record]])
        cluster.broker.append(topic, partition_for(key, spec_for(topic).partitions), key.encode(),
                              codec.encode(record, value), timestamp_ms=value["event_time_ms"])
    record, value = events[-1]
    stale = cluster.broker.append(TOPIC_OF[record], partition_for(value[KEY_FIELD[record]], 3), b"k",
                                  codec.encode(record, value), timestamp_ms=value["event_time_ms"] + 10 * 86_400_000)
    cluster.start("a")
    cluster.group.move(range(12), "a")
    cluster.settle()
    letters = [codec.decode(r.value, expected="DeadLetter").value for r in cluster.broker.records(DEAD_LETTERS)]
    assert [(d["reason"], d["offset"]) for d in letters] == [("event_time_out_of_range", stale)]


def test_a_mark_publishing_a_share_of_open_interest_outside_0_1_is_dead_lettered_once() -> None:
    cluster = Cluster(CONFIG)
    codec = default_codec()
    events = crash_events()[:200]
    publish(cluster.broker, events)
    index = next(value for record, value in events if record == "IndexPrice")
    key = f"{index['underlying']}-PERPETUAL"
    mark = {"instrument": key, "underlying": index["underlying"], "mark_price": index["price"],
            "index_price": index["price"], "open_interest": 100.0, "event_time_ms": index["event_time_ms"]}
    partition = partition_for(key, spec_for(TOPIC_OF["MarkPrice"]).partitions)
    bad = cluster.broker.append(TOPIC_OF["MarkPrice"], partition, key.encode(),
                                codec.encode("MarkPrice", dict(mark, largest_holder_share=1.5)))
    cluster.start("a")
    cluster.start("b")
    cluster.group.move(range(0, 5), "a")
    cluster.group.move(range(5, 12), "b")
    cluster.settle()
    letters = [codec.decode(r.value, expected="DeadLetter").value for r in cluster.broker.records(DEAD_LETTERS)]
    assert [(d["topic"], d["partition"], d["offset"], d["reason"]) for d in letters] == [
        (TOPIC_OF["MarkPrice"], partition, bad, "out_of_range")]
