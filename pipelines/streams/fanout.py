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

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any

from pipelines.engine.shard import Message
from pipelines.events.codec import Codec, DecodeError
from pipelines.events.validation import Validator
from pipelines.streams.intake import Refused, admit

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


Opened = list[tuple[dict[str, Any], Message | Refused]]  # each item with what admission made of it


class OpenedBatches:
    """Fan-out messages opened once per worker, however many of its partitions receive them.

    Why: the fan-out sends each batch to every account partition, and a worker holding several
    of them decoded and validated every record once per partition it holds (about 13 µs per
    record and partition on the benchmark machine, twelve times over for a worker owning all
    twelve). The copies are the same bytes, so the first copy is opened and the others get the
    same admitted records. Keyed by the message's bytes, never by its batch id alone: a fan-out
    that forwards again after a restart may cut its batches differently. Holds the records of
    the most recent batches, at most ``max_records`` of them (the latest batch always).

    A record's event time is checked against the ``now_ms`` of the first copy opened: every
    shard of the worker then takes the same decision on a record at the edge of the range.
    """

    def __init__(self, codec: Codec, validator: Validator, max_records: int = 20_000) -> None:
        self.codec, self.validator, self.max_records = codec, validator, max_records
        self._opened: OrderedDict[bytes, Opened] = OrderedDict()
        self._records = 0

    def open(self, value: bytes | None, now_ms: int) -> Opened | Refused:
        """The items of fan-out message ``value``, each admitted (``intake.admit``), or why the
        message cannot be read at all (``unpack``; such messages are not kept)."""
        if value in self._opened:
            return self._opened[value]
        items = unpack(self.codec, value)
        if isinstance(items, Refused):  # a missing value among them: only bytes are ever kept
            return items
        opened = [(item, admit(self.codec, self.validator, item["value"], item["source"], now_ms)) for item in items]
        self._opened[value] = opened
        self._records += len(opened)
        while self._records > self.max_records and len(self._opened) > 1:
            self._records -= len(self._opened.popitem(last=False)[1])
        return opened
