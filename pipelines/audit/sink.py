"""``backstop audit-sink``: Kafka topics -> ClickHouse audit rows, at least once, without duplicate rows.

The loop::

    consume (up to the batch size) -> decode -> Batch (rows keyed by Kafka coordinates)
        -> when full or older than linger: insert one columnar block per table
        -> only then commit offset+1 per partition (synchronously)

* ``enable.auto.commit=false``: an offset is committed only after its row is stored, so a crash
  or a ClickHouse outage never commits past what is stored (it keeps its place).
* ClickHouse down (``StoreUnavailable``): the assignment is paused (backpressure: nothing more
  is fetched or buffered; the batch is bounded by ``batch_rows`` plus one consume call), the
  insert is retried with exponential backoff (``backoff_initial_s`` doubling to
  ``backoff_max_s``), and the consumer keeps polling so it stays in the group. Once the insert
  succeeds, offsets are committed and the partitions resumed.
* Tables already inserted for a batch are not inserted again on a retry; a retried block carries
  the same ``insert_deduplication_token`` where the server supports it (22.2+). Everything else
  that can re-deliver (a crash between insert and commit, a rebalance) produces rows with the
  same sorting key, which ``ReplacingMergeTree`` collapses and reads with ``FINAL`` ignore.
* A message the codec rejects becomes a ``dead_letters`` row at its own coordinates, so the row
  count always equals the message count.
* A rebalance that revokes partitions flushes once; if ClickHouse is down then, the revoked
  partitions' rows are dropped uncommitted and their new owner re-reads them.
* Observability (``pipelines.ops``): messages consumed per topic, undecodable ones by reason,
  rows inserted per table, failed inserts; ``make_sink`` has the consumer report its lag through
  librdkafka's statistics every ``lag_interval_s``. ``ready()`` (``/readyz``) is true while the
  sink is a member of its group and its last insert reached the store: a sink paused on a
  ClickHouse outage is not ready. Its log says when partitions are assigned, revoked or lost, and
  every ``progress_interval_s`` what it has stored: a sink that stops logging is blocked in a call.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pipelines.audit.rows import Batch, Coordinates
from pipelines.audit.store import Store, StoreUnavailable
from pipelines.kafka import Watchdog, exit_stuck
from pipelines.ops.metrics import Metrics

log = logging.getLogger(__name__)

DEFAULT_GROUP = "backstop-audit-sink"


def audit_topics(prefix: str = "") -> list[str]:
    """The catalogue topics the sink stores: inputs, exposures, breaches, actions, executions, dead letters."""
    from pipelines.topics import CATALOGUE, topic_name

    return [topic_name(spec, prefix) for spec in CATALOGUE if spec.audited]


@dataclasses.dataclass
class SinkStats:
    messages: int = 0
    rows_inserted: int = 0
    batches: int = 0
    commits: int = 0
    insert_failures: int = 0
    undecodable: int = 0
    max_buffered: int = 0
    paused_s: float = 0.0
    by_table: dict[str, int] = dataclasses.field(default_factory=dict)


class AuditSink:
    """The consume -> batch -> insert -> commit loop on a confluent-kafka ``Consumer``.

    ``codec`` is the events codec (``pipelines.events.codec.Codec``) or any object with
    ``decode(bytes) -> Decoded(record, schema_id, value)`` raising an error with a ``reason``.
    """

    def __init__(self, store: Store, consumer: Any, codec: Any, *, batch_rows: int = 5000, linger_s: float = 0.5,
                 poll_timeout_s: float = 0.2, backoff_initial_s: float = 0.2, backoff_max_s: float = 5.0,
                 consumer_name: str = "audit-sink", sleep: Callable[[float], None] | None = None,
                 metrics: Metrics | None = None, progress_interval_s: float = 30.0, commit_stuck_s: float = 30.0,
                 on_stuck: Callable[[str], None] | None = None) -> None:
        """``commit_stuck_s``: how long an offset commit may block before ``on_stuck`` (default
        ``kafka.exit_stuck``: the process exits for its supervisor to restart it; the rows are
        stored first, and a redelivery is de-duplicated by the coordinates key)."""
        self.store = store
        self.consumer = consumer
        self.codec = codec
        self.batch_rows = batch_rows
        self.linger_s = linger_s
        self.poll_timeout_s = poll_timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.consumer_name = consumer_name
        self.progress_interval_s = progress_interval_s
        self.commit_stuck_s = commit_stuck_s
        self.on_stuck = on_stuck or exit_stuck
        self.stats = SinkStats()
        self._batch = Batch(consumer_name)
        self._paused: list[Any] = []
        self._backoff = backoff_initial_s
        self._next_retry = 0.0
        self._sleep = sleep or time.sleep
        self.metrics = metrics or Metrics("audit-sink")
        self._member = False  # of the consumer group: set by an assignment, cleared when lost or done
        self._store_ok = True  # the last insert reached the store

    def ready(self) -> bool:
        """For ``/readyz``: a member of the group whose last insert reached the store."""
        return self._member and self._store_ok

    # ------------------------------------------------------------------ kafka glue

    def subscribe(self, topics: Sequence[str]) -> None:
        self.consumer.subscribe(list(topics), on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        self._member = True
        log.info("assigned %d partitions", len(partitions))

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        log.info("revoked %d partitions", len(partitions))
        if len(self._batch) and not self._flush_once():
            dropped = self._batch.drop_partitions({(p.topic, p.partition) for p in partitions})
            log.warning("rebalance while ClickHouse is unavailable: %d uncommitted rows of revoked partitions "
                        "left for their new owner", dropped)
        self._paused = [tp for tp in self._paused if (tp.topic, tp.partition) not in
                        {(p.topic, p.partition) for p in partitions}]

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        self._member = False
        dropped = self._batch.drop_partitions({(p.topic, p.partition) for p in partitions})
        log.warning("lost %d partitions (out of the group): %d uncommitted rows dropped, read again from the "
                    "committed offsets once assigned", len(partitions), dropped)

    def _log_progress(self) -> None:
        s = self.stats
        log.info("progress: %d messages, %d rows stored in %d batches, %d commits, %d failed inserts; "
                 "%d rows buffered, %s, %d partitions paused", s.messages, s.rows_inserted, s.batches, s.commits,
                 s.insert_failures, len(self._batch), "a group member" if self._member else "not a group member",
                 len(self._paused))

    def _add_message(self, msg: Any) -> None:
        ts_type, ts = msg.timestamp()
        coords = Coordinates(msg.topic(), msg.partition(), msg.offset(), ts if ts_type and ts and ts > 0 else 0)
        value = msg.value()
        try:
            decoded = self.codec.decode(value)
        except Exception as exc:  # every undecodable message becomes a dead_letters row
            reason = getattr(exc, "reason", None)
            if reason is None:
                if exc.__class__.__name__ == "RegistryUnavailable":
                    raise  # not the message's fault: stop before committing past it
                reason = "processing_error"
            self.stats.undecodable += 1
            self.metrics.dead_letter(reason)
            self._batch.add_undecodable(reason, str(exc), coords, key=msg.key(), value=value,
                                        schema_id=getattr(exc, "schema_id", None), record=getattr(exc, "record", None))
            return
        self._batch.add(decoded.record, decoded.value, coords)

    # ------------------------------------------------------------------ loop

    def poll_once(self) -> int:
        """One consume call (unless the batch is full or we are paused); returns the messages taken."""
        from confluent_kafka import KafkaError, KafkaException

        room = self.batch_rows - len(self._batch)
        if room <= 0 or self._paused:
            # paused: poll anyway to serve rebalances and stay in the group; paused partitions return nothing
            msgs = self.consumer.consume(num_messages=1, timeout=0) if self._paused else []
        else:
            msgs = self.consumer.consume(num_messages=min(room, 1000), timeout=self.poll_timeout_s)
        taken = 0
        per_topic: dict[str, int] = {}
        for msg in msgs:
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                if error.fatal():
                    raise KafkaException(error)
                log.warning("Kafka: %s", error.str())  # e.g. a topic not created yet: keep going
                continue
            self._add_message(msg)
            taken += 1
            per_topic[msg.topic()] = per_topic.get(msg.topic(), 0) + 1
        for topic, count in per_topic.items():
            self.metrics.consumed(topic, count)
        self.stats.messages += taken
        self.stats.max_buffered = max(self.stats.max_buffered, len(self._batch))
        return taken

    def due(self) -> bool:
        if not len(self._batch):
            return False
        return len(self._batch) >= self.batch_rows or time.monotonic() - self._batch.created >= self.linger_s

    def step(self) -> None:
        """Poll once and flush if the batch is due (respecting the retry backoff)."""
        self.poll_once()
        if self.due() and time.monotonic() >= self._next_retry:
            self.flush()

    def flush(self) -> bool:
        """Try to store the batch and commit its offsets; on an outage pause and schedule a retry."""
        if self._flush_once():
            return True
        self._pause()
        self._next_retry = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self.backoff_max_s)
        return False

    def _flush_once(self) -> bool:
        batch = self._batch
        if not len(batch):
            return True
        try:
            for table, columns, token in batch.blocks():
                count = self.store.insert(table, columns, dedup_token=token)
                batch.done_tables.add(table)
                self.stats.by_table[table] = self.stats.by_table.get(table, 0) + count
                self.stats.rows_inserted += count
                self.metrics.rows_inserted(table, count)
        except StoreUnavailable as exc:
            self.stats.insert_failures += 1
            self.metrics.insert_error()
            self._store_ok = False
            log.warning("audit insert failed, will retry in %.1fs (%d rows buffered): %s",
                        self._backoff, len(batch), exc)
            return False
        self._store_ok = True
        self._commit(batch.offsets())
        self.stats.batches += 1
        self._batch = Batch(self.consumer_name)
        self._backoff = self.backoff_initial_s
        self._next_retry = 0.0
        self._resume()
        return True

    def _commit(self, offsets: dict[tuple[str, int], int]) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        if not offsets:
            return
        try:
            # a synchronous commit can block for good across a restart of the group's coordinator
            with Watchdog("offset commit", self.commit_stuck_s, self.on_stuck):
                self.consumer.commit(offsets=[TopicPartition(t, p, o + 1) for (t, p), o in offsets.items()],
                                     asynchronous=False)
            self.stats.commits += 1
        except KafkaException as exc:
            # the rows are stored; a redelivery after this is de-duplicated by the coordinates key
            log.warning("offset commit failed (rows are stored; a redelivery is de-duplicated): %s", exc.args[0])

    def _pause(self) -> None:
        if self._paused:
            return
        assignment = self.consumer.assignment()
        if assignment:
            self.consumer.pause(assignment)
            self._paused = list(assignment)
            self._paused_at = time.monotonic()

    def _resume(self) -> None:
        if self._paused:
            try:
                self.consumer.resume(self._paused)
            except Exception as exc:  # noqa: BLE001 - partitions revoked meanwhile
                log.debug("resume: %s", exc)
            self.stats.paused_s += time.monotonic() - getattr(self, "_paused_at", time.monotonic())
            self._paused = []

    def run(self, stop: threading.Event | None = None, *, idle_exit_s: float | None = None,
            max_messages: int | None = None) -> SinkStats:
        """Run until ``stop`` is set, or no message arrived for ``idle_exit_s``, or ``max_messages`` were stored.

        Idleness counts only while the consumer is a member of its group: a broker still loading its
        group coordinator (as just after a start) delays the first assignment by seconds, and a sink
        that gave up before it was assigned anything would have stored nothing.
        Before returning it flushes what it holds, retrying while ClickHouse is unavailable (unless stopped).
        """
        stop = stop or threading.Event()
        last_message = next_progress = time.monotonic()
        while not stop.is_set():
            if time.monotonic() >= next_progress:
                next_progress = time.monotonic() + self.progress_interval_s
                self._log_progress()
            if self.poll_once() or not self._member:
                last_message = time.monotonic()
            if self.due() and time.monotonic() >= self._next_retry:
                self.flush()
            elif self._paused:
                self._sleep(min(0.05, max(0.0, self._next_retry - time.monotonic())))
            if max_messages is not None and self.stats.rows_inserted >= max_messages and not len(self._batch):
                break
            if idle_exit_s is not None and not len(self._batch) and time.monotonic() - last_message >= idle_exit_s:
                break
        self._member = False  # draining: no longer taking work
        while len(self._batch) and not stop.is_set():
            if not self.flush():
                self._sleep(max(0.0, self._next_retry - time.monotonic()))
        if len(self._batch):
            self._flush_once()
        return self.stats


def consumer_config(kafka: Any, group: str, **overrides: Any) -> dict[str, Any]:
    """confluent-kafka consumer config for the sink: manual commits, earliest start, cooperative-sticky."""
    from pipelines.kafka import client_config

    return client_config(kafka, **{
        "group.id": group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        "max.poll.interval.ms": 300_000,
        # a dead sink's partitions move after 10 s without heartbeats (librdkafka's default is 45 s),
        # as the executors' and workers' do; heartbeats come from librdkafka's own thread, so a slow
        # insert never counts against it (max.poll.interval.ms does)
        "session.timeout.ms": 10_000,
        **overrides,
    })


def make_sink(store: Store, kafka: Any, *, group: str = DEFAULT_GROUP, topics: Iterable[str] | None = None,
              codec: Any = None, metrics: Metrics | None = None, **kwargs: Any) -> AuditSink:
    """A subscribed sink on a new confluent-kafka consumer, which reports its lag to ``metrics``."""
    from confluent_kafka import Consumer

    if codec is None:
        from pipelines.events.codec import default_codec

        codec = default_codec()
    metrics = metrics or Metrics("audit-sink")
    consumer = Consumer(consumer_config(kafka, group, **metrics.consumer_config()))
    sink = AuditSink(store, consumer, codec, metrics=metrics, **kwargs)
    sink.subscribe(list(topics) if topics else audit_topics(kafka.topic_prefix))
    return sink
