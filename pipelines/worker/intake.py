"""What a worker lets into a lane: one record's bytes in, a ``Message`` or a ``Refused`` out.

Pure, so the worker, the fuzz tests and anything else that feeds the core from the wire apply
the same rules. A message is refused (and the caller dead-letters it) when

- its topic is not one a worker reads (``unknown_source``);
- its value does not decode (the codec's reason: ``not_framed``, ``unknown_schema``, ...);
- it decodes to a record that does not belong on its source topic (``wrong_record_type``: an
  ``Action`` written to the positions topic would otherwise reach the engine as market data);
- a field fails its schema check (``Validator``: NaN prices, negative sizes, event times out
  of range, ...).

A refused message never reaches the engine; the lane notes its input was read past it
(``Lane.skip``), and the worker dead-letters it once (``worker.py``).
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


def admit(codec: Codec, validator: Validator, value: bytes | None, topic: str, partition: int, offset: int,
          now_ms: int) -> Message | Refused:
    """The message for ``value``, read at ``offset`` of ``topic`` partition ``partition``."""
    name, ref = f"{topic}/{partition}", f"{topic}:{partition}:{offset}"
    record = SHARD_SOURCES.get(topic)
    if record is None:
        return Refused(UNKNOWN_SOURCE, f"topic {topic[:200]!r} is not an input of the worker")
    try:
        decoded = codec.decode(value, record)
    except DecodeError as exc:
        return Refused(exc.reason, str(exc), name, offset)
    problem = validator.validate(decoded.record, decoded.value, now_ms)
    if problem is not None:
        return Refused(problem.reason, str(problem), name, offset)
    return Message(name, offset, ref, decoded.record, decoded.value)
