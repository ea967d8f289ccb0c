"""Stand-ins for confluent-kafka's consumer side, for tests that drive a consumer loop without a
broker: a consumed message and a consumer over a fixed queue."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import TIMESTAMP_CREATE_TIME, TopicPartition

from tests.kit.records import NOW_MS

GROUP_METADATA = "group-metadata"  # what ``consumer_group_metadata`` returns, for transactional producers

Rebalance = Callable[[Any, list[TopicPartition]], None]


@dataclasses.dataclass(eq=False)
class FakeMessage:
    """A consumed message as ``confluent_kafka.Message`` shows it: accessors only, never an error.
    Compared by identity, as the real messages are."""

    _topic: str
    _partition: int
    _offset: int
    _value: bytes | None
    _key: bytes | None = None
    _timestamp: tuple[int, int] = (TIMESTAMP_CREATE_TIME, NOW_MS)

    def topic(self) -> str: return self._topic
    def partition(self) -> int: return self._partition
    def offset(self) -> int: return self._offset
    def value(self) -> bytes | None: return self._value
    def key(self) -> bytes | None: return self._key
    def timestamp(self) -> tuple[int, int]: return self._timestamp
    def headers(self) -> None: return None
    def error(self) -> None: return None


class FakeConsumer:
    """A group member over a fixed queue of messages.

    It is assigned the partitions its queue came from. ``subscribe`` joins at once (calls
    ``on_assign``) unless ``joins_on_subscribe`` is False: then the test joins it by calling
    ``consumer.on_assign``. ``consume`` hands the queue out in order and nothing while paused.
    Commits must be synchronous and are kept as ``{(topic, partition): offset}``, seeks as the
    ``TopicPartition`` given."""

    def __init__(self, messages: Iterable[FakeMessage] = (), *, joins_on_subscribe: bool = True) -> None:
        self.queue = list(messages)
        self.partitions = sorted({(m.topic(), m.partition()) for m in self.queue})
        self.joins_on_subscribe = joins_on_subscribe
        self.on_assign: Rebalance | None = None
        self.commits: list[dict[tuple[str, int], int]] = []
        self.seeks: list[TopicPartition] = []
        self.paused = False
        self.pause_calls = 0
        self.max_taken = 0

    def subscribe(self, topics: list[str], on_assign: Rebalance, on_revoke: Rebalance | None = None,
                  on_lost: Rebalance | None = None) -> None:
        self.on_assign = on_assign
        if self.joins_on_subscribe:
            on_assign(self, self.assignment())

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(topic, partition) for topic, partition in self.partitions]

    def consume(self, num_messages: int = 1, timeout: float = 0) -> list[FakeMessage]:
        if self.paused:
            return []
        taken, self.queue = self.queue[:num_messages], self.queue[num_messages:]
        self.max_taken = max(self.max_taken, len(taken))
        return taken

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused = True
        self.pause_calls += 1

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused = False

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        assert asynchronous is False, "offsets are committed synchronously, after their rows are stored"
        self.commits.append({(o.topic, o.partition): o.offset for o in offsets})

    def seek(self, partition: TopicPartition) -> None:
        self.seeks.append(partition)

    def consumer_group_metadata(self) -> str:
        return GROUP_METADATA
