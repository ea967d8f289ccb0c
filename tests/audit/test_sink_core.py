"""The sink loop without services: a fake consumer and a store that goes down and comes back."""

from __future__ import annotations

import threading
import time

from confluent_kafka import TopicPartition

from pipelines.audit.rows import Batch, Coordinates
from pipelines.audit.sink import AuditSink
from pipelines.audit.store import StoreUnavailable
from pipelines.events.codec import Codec
from tests.kit.fakes import FakeConsumer, FakeMessage
from tests.kit.incident import incident


class FlakyStore:
    """Accepts inserts except while ``down``; counts rows per table."""

    def __init__(self, down_for: int = 0):
        self.down_for = down_for
        self.rows: dict[str, int] = {}
        self.tokens: list[str] = []

    def insert(self, table, columns, *, dedup_token=None):
        if self.down_for > 0:
            self.down_for -= 1
            raise StoreUnavailable("down")
        n = len(next(iter(columns.values())))
        self.rows[table] = self.rows.get(table, 0) + n
        self.tokens.append(dedup_token)
        return n


def messages(codec: Codec, copies: int = 1) -> list[FakeMessage]:
    out = []
    for _ in range(copies):
        for _topic, record, value in incident():
            out.append(FakeMessage("t", 0, len(out), codec.encode(record, value)))
    out.append(FakeMessage("t", 0, len(out), b"\x07garbage"))
    return out


def test_outage_pauses_keeps_place_and_loses_nothing() -> None:
    codec = Codec()
    msgs = messages(codec, copies=4)
    consumer, store = FakeConsumer(msgs), FlakyStore(down_for=5)
    sink = AuditSink(store, consumer, codec, batch_rows=20, linger_s=0.0, backoff_initial_s=0.001,
                     backoff_max_s=0.004)
    sink.subscribe(["t"])
    stats = sink.run(idle_exit_s=0.05)
    assert sum(store.rows.values()) == len(msgs) == stats.rows_inserted
    assert store.rows["dead_letters"] == 4 + 1  # four DeadLetter records and one undecodable message
    assert stats.insert_failures == 5 and consumer.pause_calls >= 1
    assert stats.max_buffered <= 20  # backpressure: never more than one batch held
    # commits are monotone, never past what was stored, and end at the last offset + 1
    committed = [c[("t", 0)] for c in consumer.commits]
    assert committed == sorted(committed) and committed[-1] == len(msgs)


def test_idleness_counts_only_once_the_sink_has_joined_its_group() -> None:
    """A consumer not yet assigned anything is waiting for its group, not idle: the sink runs on until
    stopped, however long nothing comes. Once subscribed, the same silence ends the run by itself.
    Each empty poll takes 5 ms, so N polls mean at least 5·N ms of silence, whatever the machine's load."""
    codec = Codec()
    consumer, store = FakeConsumer(messages(codec)), FlakyStore()
    stop = threading.Event()
    polls = 0

    def silent(num_messages: int = 1, timeout: float = 0) -> list:  # a coordinator still loading: nothing yet
        nonlocal polls
        polls += 1
        time.sleep(0.005)
        if polls == stop_after:
            stop.set()
        return []

    consumer.consume = silent
    sink = AuditSink(store, consumer, codec, batch_rows=5, linger_s=0.0)
    stop_after = 20  # 100 ms or more of silence: five idle limits
    sink.run(stop, idle_exit_s=0.02)
    assert polls == stop_after  # ran until stopped, not until "idle"
    sink.subscribe(["t"])  # joined: now an empty topic is idleness
    stop.clear()
    polls, stop_after = 0, 1000
    sink.run(stop, idle_exit_s=0.02)
    assert 0 < polls < stop_after and not stop.is_set()  # ended by itself, long before the stop


def test_no_commit_while_the_store_is_down() -> None:
    codec = Codec()
    consumer, store = FakeConsumer(messages(codec)), FlakyStore(down_for=10**9)
    sink = AuditSink(store, consumer, codec, batch_rows=5, linger_s=0.0, backoff_initial_s=0.001, backoff_max_s=0.002)
    for _ in range(200):
        sink.step()
    assert consumer.commits == [] and consumer.paused and sum(store.rows.values()) == 0
    assert len(sink._batch) == 5  # held, bounded, not growing
    store.down_for = 0
    for _ in range(50):
        sink.step()
        time.sleep(0.001)  # let the retry backoff (<= 2 ms) run out
    assert consumer.commits and consumer.commits[0][("t", 0)] == 5


def test_lost_partitions_are_read_again_and_the_log_says_so(caplog) -> None:
    """A session timeout (a broker restart) loses the assignment: the uncommitted rows are dropped,
    read again from the committed offsets once assigned, and stored once; the log tells the story."""
    codec = Codec()
    msgs = messages(codec)
    consumer, store = FakeConsumer(msgs), FlakyStore()
    sink = AuditSink(store, consumer, codec, batch_rows=10**6, linger_s=10**6, progress_interval_s=0.0)
    caplog.set_level("INFO", logger="pipelines.audit.sink")
    sink.subscribe(["t"])
    sink.poll_once()
    sink.poll_once()
    buffered = len(sink._batch)
    assert buffered > 0 and not consumer.commits
    # what librdkafka calls on the next poll after the session timed out
    sink._on_lost(consumer, [TopicPartition("t", 0)])
    consumer.queue = list(msgs)  # assigned again: the fetch restarts at the committed offset (none: the start)
    sink._on_assign(consumer, [TopicPartition("t", 0)])
    sink.linger_s = 0.0
    stats = sink.run(idle_exit_s=0.05)
    assert sum(store.rows.values()) == len(msgs) == stats.rows_inserted  # once each, nothing lost
    assert consumer.commits[-1] == {("t", 0): len(msgs)}
    text = caplog.text
    assert f"lost 1 partitions (out of the group): {buffered} uncommitted rows dropped" in text
    assert text.count("assigned 1 partitions") == 2
    assert f"progress: {stats.messages} messages, {stats.rows_inserted} rows stored" in text


def test_partial_failure_does_not_reinsert_done_tables_and_tokens_repeat() -> None:
    batch = Batch()
    for i, (topic, record, value) in enumerate(incident()):
        batch.add(record, value, Coordinates(topic, 0, i, 1))
    first = {table: token for table, _, token in batch.blocks()}
    batch.done_tables.add("inputs")
    second = {table: token for table, _, token in batch.blocks()}
    assert "inputs" not in second and all(second[t] == first[t] for t in second)
    assert len({token for token in first.values()}) == len(first)
    assert batch.offsets() == {(topic, 0): max(i for i, (tp, _, _) in enumerate(incident()) if tp == topic)
                               for topic, _, _ in incident()}
    dropped = batch.drop_partitions({("backstop.breaches", 0)})
    assert dropped == 2 and ("backstop.breaches", 0) not in batch.offsets()


def test_every_column_has_one_value_per_row() -> None:
    batch = Batch()
    for i, (topic, record, value) in enumerate(incident()):
        batch.add(record, value, Coordinates(topic, 0, i, 1))
    batch.add("Breach", {"breach_id": "broken"}, Coordinates("x", 0, 0, 1))  # missing fields -> dead letter
    for table, columns, _ in batch.blocks():
        assert len({len(v) for v in columns.values()}) == 1, table
    assert sum(len(next(iter(c.values()))) for _, c, _ in batch.blocks()) == len(incident()) + 1


class StuckCommits(FakeConsumer):
    """A consumer whose first offset commit blocks until ``released`` (as librdkafka's can, for
    good, across a restart of the group's coordinator)."""

    def __init__(self, msgs: list[FakeMessage]) -> None:
        super().__init__(msgs)
        self.released = threading.Event()

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        assert self.released.wait(5), "the watchdog never fired"
        super().commit(offsets, asynchronous)


def test_an_offset_commit_that_blocks_past_its_deadline_is_reported_as_stuck() -> None:
    """The commit runs under a watchdog: blocked past ``commit_stuck_s``, the sink calls
    ``on_stuck`` (in production: exit for a restart, the rows being stored already)."""
    codec = Codec()
    msgs = messages(codec)
    consumer, store, stuck = StuckCommits(msgs), FlakyStore(), []

    def on_stuck(what: str) -> None:
        stuck.append(what)
        consumer.released.set()

    sink = AuditSink(store, consumer, codec, batch_rows=len(msgs), linger_s=0.0, commit_stuck_s=0.05,
                     on_stuck=on_stuck)
    sink.subscribe(["t"])
    sink.run(idle_exit_s=0.05)
    assert stuck == ["offset commit"]
    assert sum(store.rows.values()) == len(msgs) and consumer.commits  # stored before the commit that blocked
