"""The market fan-out's wire format: many market records in one ``MarketBatch`` message.

Why batches: every market record must reach every account partition (the shards of each apply
it), and a faust consumer pays a fixed cost per Kafka message, whatever its size — about
0.4 ms on the benchmark machine, where a plain faust passthrough moves ~2,200 messages/s. One
copy per record and partition made the worker spend most of its time receiving the same
index tick twelve times. One ``MarketBatch`` per partition per batch the fan-out reads pays
that cost once per batch instead; the shards then take each record with its own source
coordinates, exactly as if it had come alone (same dedup by source offset, same refs).

Pure: the worker's agents and the tests build and open batches with the same two functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from pipelines.events.codec import Codec, DecodeError
from pipelines.streams.intake import Refused

#: values carried per batch, at most: a fan-out message stays well under Kafka's 1 MB default
MAX_BATCH_BYTES = 512 * 1024


def batches(items: Iterable[tuple[str, bytes | None, bytes | None]], event_time_ms: int,
            max_bytes: int = MAX_BATCH_BYTES) -> Iterator[dict[str, Any]]:
    """``MarketBatch`` data for (source, key, value) items, in order, each carrying values of at
    most ``max_bytes`` (a single larger record travels alone)."""
    chunk: list[dict[str, Any]] = []
    size = 0
    for source, key, value in items:
        length = len(value or b"") + len(key or b"")
        if chunk and size + length > max_bytes:
            yield {"batch_id": chunk[0]["source"], "items": chunk, "event_time_ms": event_time_ms}
            chunk, size = [], 0
        chunk.append({"source": source, "key": key, "value": value})
        size += length
    if chunk:
        yield {"batch_id": chunk[0]["source"], "items": chunk, "event_time_ms": event_time_ms}


def unpack(codec: Codec, value: bytes | None) -> list[dict[str, Any]] | Refused:
    """The items of a fan-out message, or why it cannot be read (the whole message is then
    dead-lettered: its bytes keep every record it carried)."""
    try:
        return codec.decode(value, "MarketBatch").value["items"]
    except DecodeError as exc:
        return Refused(exc.reason, str(exc))
