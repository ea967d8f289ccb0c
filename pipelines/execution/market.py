"""The venue's market data: the market topics' depth and marks, fed to the executor's venue.

Fills are only as good as the books they are against. ``MarketFeed`` reads
``backstop.market.depth`` (``OrderBookDepth``) and ``backstop.market.mark`` (``MarkPrice``) and
hands every record to the venue (``on_depth``, ``on_mark``), so the simulated venue fills
against the latest depth placed at the latest mark, as the backtest does, instead of the books
in its configuration.

The feed is not a member of any consumer group: it assigns itself every partition of both
topics and reads them from their start (each topic is keyed by instrument, so within a partition
the last record of an instrument is its latest). ``start`` reads up to where the topics ended
when it was called before the executor takes its first action; ``poll`` applies whatever has
arrived since, without waiting, and the executor calls it before every batch of actions. A record
that cannot be decoded is skipped and counted (the stream worker dead-letters it on the same
topic; the executor only reads).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from pipelines.errors import UserError
from pipelines.events.codec import Codec, DecodeError

log = logging.getLogger(__name__)

MARKET_RECORDS = {"backstop.market.depth": "OrderBookDepth", "backstop.market.mark": "MarkPrice"}


class MarketSink(Protocol):
    """What the feed needs of a venue."""

    def on_depth(self, depth: Mapping[str, Any]) -> None: ...
    def on_mark(self, instrument: str, mark: float) -> None: ...


class MarketFeed:
    def __init__(self, consumer: Consumer, codec: Codec, venue: MarketSink, records: Mapping[str, str]) -> None:
        """``records``: topic name (with its prefix) -> the record it carries (``MARKET_RECORDS``'
        values); ``consumer``: a consumer of its own, read_committed, not subscribed to anything."""
        self.consumer, self.codec, self.venue = consumer, codec, venue
        self.records = dict(records)
        self.applied = 0
        self.skipped = 0
        self._partitions: list[TopicPartition] = []

    def start(self, timeout_s: float = 30.0) -> None:
        """Assign every partition of the market topics from its start and apply them up to where
        they end now. Raises ``TimeoutError`` if that takes longer than ``timeout_s``."""
        metadata = self.consumer.list_topics(timeout=timeout_s)
        for topic in self.records:
            found = metadata.topics.get(topic)
            if found is None or found.error is not None:
                raise UserError(f"market topic {topic} not found: create the topics first (backstop topics create), "
                                "or run with --static-books")
            self._partitions += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(found.partitions)]
        self.consumer.assign(self._partitions)
        deadline = time.monotonic() + timeout_s
        ends = {(tp.topic, tp.partition): self.consumer.get_watermark_offsets(tp, timeout=timeout_s)
                for tp in self._partitions}
        while not self._reached(ends):
            if time.monotonic() > deadline:
                raise TimeoutError(f"market topics not read to their end within {timeout_s:g} s")
            self._apply_all(self.consumer.consume(500, 0.2))
        log.info("market feed: %d records applied (%d skipped) from %d partitions", self.applied, self.skipped,
                 len(self._partitions))

    def poll(self) -> int:
        """Apply the market records that have arrived, without waiting; how many were applied."""
        before = self.applied
        while True:
            messages = self.consumer.consume(500, 0)
            if not messages:
                return self.applied - before
            self._apply_all(messages)

    def close(self) -> None:
        self.consumer.close()

    def _reached(self, ends: Mapping[tuple[str, int], tuple[int, int]]) -> bool:
        """Whether every partition is read up to the high watermark in ``ends`` (low, high): the
        consumer's position, which also moves past transaction markers no record stands for."""
        for tp in self.consumer.position(self._partitions):
            low, high = ends[(tp.topic, tp.partition)]
            if high > low and tp.offset < high:
                return False
        return True

    def _apply_all(self, messages: list[Message]) -> None:
        for message in messages:
            error = message.error()
            if error is None:
                self._apply(message)
            elif error.fatal():
                raise KafkaException(error)

    def _apply(self, message: Message) -> None:
        record = self.records[message.topic()]
        try:
            value = self.codec.decode(message.value(), expected=record).value
        except DecodeError as exc:
            self.skipped += 1
            log.warning("market feed: %s[%d]@%d skipped: %s", message.topic(), message.partition(), message.offset(),
                        exc)
            return
        if record == "OrderBookDepth":
            self.venue.on_depth(value)
        else:
            self.venue.on_mark(value["instrument"], value["mark_price"])
        self.applied += 1
