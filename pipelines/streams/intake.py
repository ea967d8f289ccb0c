"""What a worker lets into a shard: one message's bytes in, a ``Message`` or a ``Refused`` out.

Pure, so the worker, the fuzz tests and anything else that feeds a shard from the wire apply
the same rules. A message is refused (and the caller dead-letters it) when

- its source reference is not ``topic:partition:offset`` of a topic the shards read
  (``unknown_source``: a forged or garbled fan-out header);
- its value does not decode (the codec's reason: ``not_framed``, ``unknown_schema``, ...);
- it decodes to a record that does not belong on its source topic (``wrong_record_type``: an
  ``Action`` written to the positions topic would otherwise reach the engine as market data);
- a field fails its schema check (``Validator``: NaN prices, negative sizes, event times out
  of range, ...).

A refused message never reaches the engine; where its source names a shard input, the shard
notes that input was read past it (``Shard.read_past``).
"""

from __future__ import annotations

import dataclasses

from pipelines.engine.shard import ACCOUNT_TOPICS, MARKET_TOPICS, Message
from pipelines.events.codec import Codec, DecodeError
from pipelines.events.validation import Validator
from pipelines.topics import spec_for

UNKNOWN_SOURCE = "unknown_source"

#: the record each topic a shard reads must carry
SHARD_SOURCES: dict[str, str] = {spec.name: spec.value_record for spec in
                                 (*MARKET_TOPICS, *(spec_for(topic) for topic in ACCOUNT_TOPICS))}


@dataclasses.dataclass(frozen=True)
class Refused:
    """Why a message was kept out: the dead-letter reason code and a line for a person."""

    reason: str
    detail: str
    input: str | None = None  # the shard input it was read from, where its source names one
    offset: int = -1


def admit(codec: Codec, validator: Validator, value: bytes | None, ref: str, now_ms: int) -> Message | Refused:
    """The shard message for ``value``, read from the event at ``ref`` (``topic:partition:offset``)."""
    try:
        topic, partition, offset = ref.rsplit(":", 2)
        if topic not in SHARD_SOURCES or int(partition) < 0 or int(offset) < 0:
            raise ValueError
    except ValueError:
        return Refused(UNKNOWN_SOURCE, f"source {ref[:200]!r} is not topic:partition:offset of a shard input")
    name, position = f"{topic}/{int(partition)}", int(offset)
    try:
        decoded = codec.decode(value, SHARD_SOURCES[topic])
    except DecodeError as exc:
        return Refused(exc.reason, str(exc), name, position)
    problem = validator.validate(decoded.record, decoded.value, now_ms)
    if problem is not None:
        return Refused(problem.reason, str(problem), name, position)
    return Message(name, position, ref, decoded.record, decoded.value)
