"""Dead letters: no malformed message stops a worker.

``dead_letter`` builds a ``DeadLetter`` record (reason code, detail, the original key and value
bytes unchanged, topic/partition/offset, Kafka timestamp, schema id if readable).

``ValidatingConsumer`` is the consume -> decode -> validate -> handle-or-dead-letter loop on
confluent-kafka clients that later workers build on::

    loop = ValidatingConsumer(consumer, producer, codec=codec, dead_letter_topic="backstop.deadletters",
                              validator=Validator(known_instruments=instruments), consumer_name="margin-worker")
    loop.run(handler)  # handler(message, decoded) for every good message

For every message exactly one of two things happens: ``handler`` is called with the decoded
record (``counts.processed``) or a dead letter is produced (``counts.dead_lettered`` and
``counts.by_reason``). Offsets are committed only after the batch's dead letters (and anything
the handler produced on the same producer) are flushed: at-least-once, never a silent loss.
A registry outage (``RegistryUnavailable``) is not the message's fault and propagates instead.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message

from pipelines.events.codec import Codec, Decoded, DecodeError, parse_header
from pipelines.events.validation import Validator

log = logging.getLogger(__name__)

PROCESSING_ERROR = "processing_error"
DEAD_LETTER_RECORD = "DeadLetter"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def dead_letter(*, reason: str, detail: str, topic: str, partition: int, offset: int, value: bytes | None,
                key: bytes | None = None, message_timestamp_ms: int | None = None, schema_id: int | None = None,
                record: str | None = None, consumer: str = "", event_time_ms: int | None = None) -> dict[str, Any]:
    """A ``DeadLetter`` datum (encode it with ``codec.encode("DeadLetter", ...)``)."""
    if schema_id is None and value:
        try:
            schema_id = parse_header(value)
        except DecodeError:
            schema_id = None
    if schema_id is not None and not 0 <= schema_id < 2**31:
        schema_id = None  # DeadLetter.schema_id is an Avro int; the original bytes keep the header anyway
    return {
        "reason": reason,
        "detail": detail[:2000],
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "message_timestamp_ms": message_timestamp_ms,
        "original_key": key,
        "original_value": value,
        "schema_id": schema_id,
        "record": record,
        "consumer": consumer,
        "event_time_ms": now_ms() if event_time_ms is None else event_time_ms,
    }


def message_timestamp_ms(msg: Message) -> int | None:
    ts_type, ts = msg.timestamp()
    return None if ts_type == 0 else ts  # TIMESTAMP_NOT_AVAILABLE


@dataclasses.dataclass
class Counts:
    """What the loop did: good messages handled, bad ones dead-lettered (by reason)."""

    processed: int = 0
    dead_lettered: int = 0
    by_reason: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    @property
    def seen(self) -> int:
        return self.processed + self.dead_lettered


Handler = Callable[[Message, Decoded | None], None]


class ValidatingConsumer:
    """Consume, decode, validate; hand good records to a handler and dead-letter the rest.

    ``expected``: topic -> record name (or set of names) allowed on it; other record types are
    dead-lettered as ``wrong_record_type``. Topics not in the mapping accept any known record.
    ``clock``: ms since the epoch used as 'now' for the event-time check (the replay clock in a
    replay). ``allow_tombstones``: pass null values to the handler as ``None`` (compacted topics)
    instead of dead-lettering them as ``missing_value``. ``dead_letter_handler_errors``: an
    exception from the handler dead-letters the message as ``processing_error`` (default) rather
    than stopping the worker.
    """

    def __init__(self, consumer: Any, producer: Any, *, codec: Codec, dead_letter_topic: str,
                 validator: Validator | None = None,
                 expected: Mapping[str, str | frozenset[str] | set[str]] | None = None,
                 consumer_name: str = "", clock: Callable[[], int] = now_ms, allow_tombstones: bool = False,
                 dead_letter_handler_errors: bool = True, commit: bool = True) -> None:
        self.consumer = consumer
        self.producer = producer
        self.codec = codec
        self.dead_letter_topic = dead_letter_topic
        self.validator = validator if validator is not None else Validator(codec.schemas)
        self.expected = dict(expected or {})
        self.consumer_name = consumer_name
        self.clock = clock
        self.allow_tombstones = allow_tombstones
        self.dead_letter_handler_errors = dead_letter_handler_errors
        self.commit_offsets = commit
        self.counts = Counts()
        self._delivery_errors: list[str] = []

    # ------------------------------------------------------------------ one message

    def handle(self, msg: Message, handler: Handler) -> bool:
        """Process one consumed message; True if handled, False if dead-lettered."""
        value = msg.value()
        if value is None and self.allow_tombstones:
            return self._call(msg, None, handler)
        try:
            decoded = self.codec.decode(value, self.expected.get(msg.topic()))
        except DecodeError as exc:
            self._dead_letter(msg, exc.reason, exc.detail, exc.schema_id, exc.record)
            return False
        problem = self.validator.validate(decoded.record, decoded.value, self.clock())
        if problem is not None:
            self._dead_letter(msg, problem.reason, problem.detail, decoded.schema_id, decoded.record)
            return False
        return self._call(msg, decoded, handler)

    def _call(self, msg: Message, decoded: Decoded | None, handler: Handler) -> bool:
        try:
            handler(msg, decoded)
        except Exception as exc:  # one bad record must not stop the worker
            if not self.dead_letter_handler_errors:
                raise
            log.exception("handler failed on %s[%d]@%d; dead-lettering it", msg.topic(), msg.partition(), msg.offset())
            self._dead_letter(msg, PROCESSING_ERROR, f"{exc.__class__.__name__}: {exc}",
                              decoded.schema_id if decoded else None, decoded.record if decoded else None)
            return False
        self.counts.processed += 1
        return True

    def _dead_letter(self, msg: Message, reason: str, detail: str, schema_id: int | None, record: str | None) -> None:
        datum = dead_letter(reason=reason, detail=detail, topic=msg.topic(), partition=msg.partition(),
                            offset=msg.offset(), value=msg.value(), key=msg.key(),
                            message_timestamp_ms=message_timestamp_ms(msg), schema_id=schema_id, record=record,
                            consumer=self.consumer_name)
        self._produce(msg.topic().encode(), self.codec.encode(DEAD_LETTER_RECORD, datum))
        self.counts.dead_lettered += 1
        self.counts.by_reason[reason] += 1

    def _produce(self, key: bytes, value: bytes) -> None:
        while True:
            try:
                self.producer.produce(self.dead_letter_topic, value=value, key=key, on_delivery=self._delivered)
                return
            except BufferError:  # local queue full: let deliveries drain
                self.producer.poll(0.1)

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._delivery_errors.append(str(err))

    # ------------------------------------------------------------------ batches

    def poll_batch(self, handler: Handler, num_messages: int = 500, timeout: float = 1.0) -> int:
        """Consume up to ``num_messages``, process each, flush, commit. Returns how many were consumed."""
        messages = self.consumer.consume(num_messages=num_messages, timeout=timeout)
        consumed = 0
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if err.fatal():
                    raise KafkaException(err)
                log.warning("consumer error: %s", err)
                continue
            consumed += 1
            self.handle(msg, handler)
        if consumed:
            self.flush()
            if self.commit_offsets:
                self.consumer.commit(asynchronous=False)
        else:
            self.producer.poll(0)
        return consumed

    def flush(self, timeout: float = 30.0) -> None:
        """Wait for every dead letter to be acknowledged; raise if any could not be delivered."""
        remaining = self.producer.flush(timeout)
        if remaining:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, f"{remaining} dead letters not delivered"))
        if self._delivery_errors:
            errors, self._delivery_errors = self._delivery_errors, []
            raise KafkaException(KafkaError(KafkaError._FAIL, f"dead letter delivery failed: {errors[0]}"))

    def run(self, handler: Handler, *, stop: Callable[[], bool] = lambda: False, max_messages: int | None = None,
            idle_timeout_s: float | None = None, poll_timeout_s: float = 1.0) -> Counts:
        """Loop until ``stop()``, ``max_messages`` consumed, or nothing arrives for ``idle_timeout_s``."""
        idle_since = time.monotonic()
        while not stop():
            if max_messages is not None and self.counts.seen >= max_messages:
                break
            batch = 500 if max_messages is None else max(1, min(500, max_messages - self.counts.seen))
            if self.poll_batch(handler, batch, poll_timeout_s):
                idle_since = time.monotonic()
            elif idle_timeout_s is not None and time.monotonic() - idle_since >= idle_timeout_s:
                break
        return self.counts
