"""The worker's ports on Kafka (confluent-kafka).

- ``KafkaMembership``: the worker's seat in its consumer group. It subscribes to the positions
  topic with cooperative rebalancing (KIP-429, ``cooperative-sticky``) and reads nothing: the
  partitions it is given are paused at once, and say which account partitions the worker holds.
  It commits the offsets a stored checkpoint covers (positions and collateral alike), so the
  group's lag shows how far the checkpoints are.
- ``KafkaSource``: a reader of explicitly assigned topic-partitions, one per lane, batched
  (``consume``); where it stands against each partition's end comes from the watermarks the
  fetches return.
- ``KafkaCheckpoints``: the compacted ``backstop.worker.checkpoints`` topic, the checkpoint of
  account partition *p* in its partition *p*, keyed ``group/p``; written by a forked child.
- ``KafkaSink``: one idempotent producer for every output; ``flush`` fails loudly if the broker
  refused anything, and the worker stops (its partitions are re-read from their checkpoints).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from pipelines.config import KafkaSettings
from pipelines.kafka import client_config
from pipelines.topics import CHECKPOINT_MAX_BYTES
from pipelines.worker.ports import TP, Encoded, Record

log = logging.getLogger(__name__)

CHECKPOINTS = "backstop.worker.checkpoints"
POSITIONS = "backstop.positions"
WATERMARK_RETRY_S = 1.0


class KafkaSource:
    def __init__(self, kafka: KafkaSettings, group_id: str) -> None:
        self.prefix = kafka.topic_prefix
        self.consumer = Consumer(client_config(kafka, **{
            "group.id": group_id, "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 10, "queued.max.messages.kbytes": 65536}))
        self.next: dict[TP, int] = {}
        self._asked: dict[TP, float] = {}  # when the broker was last asked for a watermark not yet known

    def _tp(self, tp: TP, offset: int = OFFSET_BEGINNING) -> TopicPartition:
        return TopicPartition(self.prefix + tp[0], tp[1], offset)

    def assign(self, starts: dict[TP, int]) -> None:
        fresh = {tp: start for tp, start in starts.items() if tp not in self.next}
        moved = {tp: start for tp, start in starts.items() if tp in self.next}
        if moved:
            self.unassign(moved)
        self.consumer.incremental_assign([self._tp(tp, start if start > 0 else OFFSET_BEGINNING)
                                          for tp, start in {**fresh, **moved}.items()])
        self.next.update(starts)

    def unassign(self, tps: Iterable[TP]) -> None:
        held = [tp for tp in tps if tp in self.next]
        if held:
            self.consumer.incremental_unassign([self._tp(tp) for tp in held])
        for tp in held:
            del self.next[tp]

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        out = []
        cut = len(self.prefix)
        for m in self.consumer.consume(max_records, timeout_s):
            error = m.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                if error.fatal():
                    raise KafkaException(error)
                log.warning("reading %s: %s", m.topic(), error)
                continue
            tp = (m.topic()[cut:], m.partition())
            if tp not in self.next:
                continue  # unassigned while in flight
            self.next[tp] = m.offset() + 1
            stamp = m.timestamp()[1]
            out.append(Record(tp[0], tp[1], m.offset(), m.key(), m.value(),
                              stamp if stamp >= 0 else int(time.time() * 1000)))  # (brokers before 0.10: none)
        return out

    def _high(self, tp: TP) -> int | None:
        low, high = self.consumer.get_watermark_offsets(self._tp(tp), cached=True)
        if high >= 0:
            start = self.next.get(tp, 0)
            if low > start > 0:
                # Retention counts from message timestamps: an input stamped with old event times can
                # lose records before they are read. The consumer resets to the log start; say so.
                log.error("%s/%d: offsets %d..%d were deleted by the broker before this worker read them "
                          "(retention counts from message timestamps; docs/operations.md); going on without them",
                          tp[0], tp[1], start, low - 1)
            if low > start:
                self.next[tp] = low
            return high
        now = time.monotonic()
        if now - self._asked.get(tp, 0.0) < WATERMARK_RETRY_S:
            return None
        self._asked[tp] = now
        try:
            low, high = self.consumer.get_watermark_offsets(self._tp(tp), timeout=1.0, cached=False)
        except KafkaException:
            return None
        return high

    def _position(self, tp: TP) -> int:
        """The next offset to read: past the last record read, and past control records (the
        markers transactional producers write), which the consumer skips but never returns."""
        known = self.next.get(tp, 0)
        (position,) = self.consumer.position([self._tp(tp)])
        return max(known, position.offset)

    def settled(self, tp: TP) -> bool:
        high = self._high(tp)
        return high is not None and self._position(tp) >= high

    def lag(self, tp: TP) -> int:
        high = self._high(tp)
        return 0 if high is None else max(0, high - self._position(tp))

    def close(self) -> None:
        self.consumer.close()


class KafkaMembership:
    def __init__(self, kafka: KafkaSettings, group_id: str, session_timeout_ms: int = 10_000) -> None:
        self.prefix = kafka.topic_prefix
        self.consumer = Consumer(client_config(kafka, **{
            "group.id": group_id, "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky", "session.timeout.ms": session_timeout_ms,
            "heartbeat.interval.ms": max(500, session_timeout_ms // 4)}))
        self.held: set[int] = set()
        self.reported: set[int] = set()
        self.consumer.subscribe([self.prefix + POSITIONS], on_assign=self._assigned, on_revoke=self._revoked,
                                on_lost=self._revoked)

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.incremental_assign(partitions)
        consumer.pause(partitions)  # the seat only: the worker's sources read the data
        self.held |= {tp.partition for tp in partitions}

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.held -= {tp.partition for tp in partitions}

    def poll(self) -> tuple[set[int], set[int]]:
        """Changes since the last call, as a difference of what is held: a partition revoked and
        given back between two calls stays, with its state (a valid prefix of its inputs)."""
        self.consumer.poll(0)
        assigned, revoked = self.held - self.reported, self.reported - self.held
        self.reported = set(self.held)
        return assigned, revoked

    def commit(self, offsets: dict[TP, int]) -> None:
        if not offsets:
            return
        try:
            self.consumer.commit(offsets=[TopicPartition(self.prefix + t, p, o) for (t, p), o in offsets.items()],
                                 asynchronous=False)
        except KafkaException as exc:  # the checkpoint is stored: the commit only reports progress
            log.warning("offsets not committed (%s); the checkpoints hold them", exc.args[0])

    def close(self) -> None:
        self.consumer.close()


class KafkaCheckpoints:
    """Checkpoints written by a forked child: the fork holds the state as it was at ``begin`` (copy
    on write), encodes and produces it with a producer of its own and exits 0 once the broker has
    every record; the worker goes on at once. Encoding ten thousand accounts takes seconds, and a
    worker that paused for it would hold every event behind it."""

    def __init__(self, kafka: KafkaSettings, group_id: str, deadline_s: float = 120.0) -> None:
        self.topic = kafka.topic_prefix + CHECKPOINTS
        self.group = group_id
        self.kafka = kafka
        self.deadline_s = deadline_s  # a child still writing after this is killed: its checkpoint failed
        self.child: int | None = None
        self.started = 0.0

    def load(self, partition: int) -> bytes | None:
        """The newest checkpoint of ``partition`` the topic holds for this group."""
        reader = Consumer(client_config(self.kafka, **{"group.id": f"{self.group}-checkpoints",
                                                      "enable.auto.commit": False,
                                                      "fetch.message.max.bytes": CHECKPOINT_MAX_BYTES}))
        try:
            low, high = reader.get_watermark_offsets(TopicPartition(self.topic, partition), timeout=10.0)
            if high <= low:
                return None
            key, found, offset = f"{self.group}/{partition}".encode(), None, low
            reader.assign([TopicPartition(self.topic, partition, low)])
            deadline = time.monotonic() + 30.0
            while offset < high:
                if time.monotonic() > deadline:
                    raise KafkaException(f"reading the checkpoints of partition {partition}: timed out at "
                                         f"offset {offset} of {high}")
                for m in reader.consume(500, 1.0):
                    if m.error() is not None:
                        continue
                    offset = m.offset() + 1
                    if m.key() == key:
                        found = m.value()
            return found
        finally:
            reader.close()

    def begin(self, encode: Callable[[], Encoded]) -> None:
        if self.child is not None:
            raise RuntimeError("a checkpoint is in flight")
        pid = os.fork()
        if pid == 0:  # the child: nothing of the parent's clients or threads is used here
            os._exit(self._write(encode))
        self.child, self.started = pid, time.monotonic()

    def _write(self, encode: Callable[[], Encoded]) -> int:
        try:
            errors: list[str] = []
            producer = Producer(client_config(self.kafka, **{"enable.idempotence": True, "linger.ms": 5,
                                                             "message.max.bytes": CHECKPOINT_MAX_BYTES}))
            for partition, data in encode():
                producer.produce(self.topic, data, f"{self.group}/{partition}".encode(), partition=partition,
                                 on_delivery=lambda error, _m: errors.append(str(error)) if error else None)
            left = producer.flush(60.0)
            if left or errors:
                log.error("checkpoint not stored (%d queued): %s", left, errors[0] if errors else "flush timed out")
                return 1
            return 0
        except BaseException as exc:  # noqa: BLE001 - the child reports and exits, never returns to the loop
            log.error("checkpoint not stored: %r", exc)
            return 1

    def finished(self) -> bool | None:
        if self.child is None:
            return True
        pid, status = os.waitpid(self.child, os.WNOHANG)
        if pid == 0:
            if time.monotonic() - self.started < self.deadline_s:
                return None
            log.error("the checkpoint writer (pid %d) has run %.0f s: killed", self.child, self.deadline_s)
            os.kill(self.child, signal.SIGKILL)
            os.waitpid(self.child, 0)
            self.child = None
            return False
        self.child = None
        return os.waitstatus_to_exitcode(status) == 0


class KafkaSink:
    def __init__(self, kafka: KafkaSettings) -> None:
        self.prefix = kafka.topic_prefix
        self.producer = Producer(client_config(kafka, **{"enable.idempotence": True, "linger.ms": 5}))
        self.error: str | None = None

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        while True:
            try:
                self.producer.produce(self.prefix + topic, value, key, on_delivery=self._delivered)
                self.producer.poll(0)  # serve delivery reports as they come
                return
            except BufferError:  # the local queue is full: let deliveries drain it
                self.producer.poll(0.05)

    def _delivered(self, error: Any, _message: Any) -> None:
        if error is not None and self.error is None:
            self.error = str(error)

    def flush(self) -> None:
        left = self.producer.flush(60.0)
        if left or self.error:
            raise KafkaException(f"output not delivered ({left} queued): {self.error or 'flush timed out'}")


class KafkaPorts:
    def __init__(self, kafka: KafkaSettings, group_id: str, session_timeout_ms: int = 10_000) -> None:
        self.kafka, self.group_id = kafka, group_id
        self.sink = KafkaSink(kafka)
        self.store = KafkaCheckpoints(kafka, group_id)
        self.membership = KafkaMembership(kafka, group_id, session_timeout_ms)

    def open_source(self) -> KafkaSource:
        return KafkaSource(self.kafka, f"{self.group_id}-reader")

    def close(self) -> None:
        self.membership.close()
        self.sink.flush()

