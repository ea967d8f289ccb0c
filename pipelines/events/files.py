"""Replay files: Avro object container files of ``ReplayRecord`` (schemas/ReplayRecord.avsc).

Each record is one Kafka message: topic, partition, offset, key bytes, Kafka timestamp, the event
time, and the value exactly as it travels on the wire (Confluent-framed). A replay therefore
feeds consumers the same bytes the broker would, through the same ``Codec``. The file header
carries, under ``backstop.schemas``, every writer schema the embedded registry knows by id, so a
file can be decoded without the registry that wrote it (``schemas_in``).

fastavro writes and reads the files (deflate by default); any Avro implementation -- the
official ``avro`` package included -- can read them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import fastavro

from pipelines.events.codec import Codec
from pipelines.events.registry import EmbeddedRegistry
from pipelines.events.schemas import SchemaSet, default_schemas

REPLAY_RECORD = "ReplayRecord"
SCHEMAS_META = "backstop.schemas"


def replay_record(topic: str, value: bytes | None, *, key: bytes | None = None, partition: int = -1,
                  offset: int = -1, timestamp_ms: int | None = None, event_time_ms: int) -> dict[str, Any]:
    return {"topic": topic, "partition": partition, "offset": offset, "key": key, "value": value,
            "timestamp_ms": timestamp_ms, "event_time_ms": event_time_ms}


def _metadata(codec: Codec | None) -> dict[str, str]:
    if codec is not None and isinstance(codec.registry, EmbeddedRegistry):
        return {SCHEMAS_META: json.dumps({str(k): v for k, v in codec.registry.known().items()}, separators=(",", ":"))}
    return {}


def write_replay(path: str | Path | IO[bytes], records: Iterable[Mapping[str, Any]], *, codec: Codec | None = None,
                 schemas: SchemaSet | None = None, compression: str = "deflate", sync_interval: int = 64_000) -> int:
    """Write ``ReplayRecord`` dicts to a container file; returns how many were written."""
    schema = (schemas or (codec.schemas if codec else default_schemas()))[REPLAY_RECORD].parsed
    count = 0

    def counted() -> Iterator[Mapping[str, Any]]:
        nonlocal count
        for r in records:
            count += 1
            yield r

    if isinstance(path, (str, Path)):
        with open(path, "wb") as fo:
            fastavro.writer(fo, schema, counted(), codec=compression, metadata=_metadata(codec),
                            sync_interval=sync_interval)
    else:
        fastavro.writer(path, schema, counted(), codec=compression, metadata=_metadata(codec),
                        sync_interval=sync_interval)
    return count


def read_replay(path: str | Path | IO[bytes]) -> Iterator[dict[str, Any]]:
    """The ``ReplayRecord`` dicts of a replay file, in order."""
    if isinstance(path, (str, Path)):
        with open(path, "rb") as fo:
            yield from fastavro.reader(fo)
    else:
        yield from fastavro.reader(path)


def schemas_in(path: str | Path) -> dict[int, Any]:
    """The writer schemas (by id) embedded in a replay file's header; empty if none."""
    with open(path, "rb") as fo:
        meta = fastavro.reader(fo).metadata
    raw = meta.get(SCHEMAS_META)
    return {int(k): v for k, v in json.loads(raw).items()} if raw else {}
