"""What a worker needs from the outside, as small interfaces: the broker behind them is Kafka
(``worker/kafka.py``) or an in-memory log (``worker/memory.py``, for tests and benchmarks).

Topics are named without the deployment prefix; an adapter adds it. Offsets are Kafka's: the
offset of a record, and "next offset to read" where a position is meant.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Protocol

TP = tuple[str, int]  # (topic, partition)
Clock = Callable[[], float]  # monotonic seconds


@dataclasses.dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int  # the message's timestamp (producer's create time or the broker's append time)


class Source(Protocol):
    """A reader of explicitly assigned topic-partitions (no group)."""

    def assign(self, starts: dict[TP, int]) -> None:
        """Read each topic-partition from the given next offset (0: the first record still held)."""

    def unassign(self, tps: Iterable[TP]) -> None: ...

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        """Up to ``max_records`` records, each topic-partition's in offset order."""

    def settled(self, tp: TP) -> bool:
        """Whether everything the broker holds of ``tp`` has been read."""

    def lag(self, tp: TP) -> int:
        """Records the broker holds of ``tp`` beyond what was read (0 when unknown)."""

    def close(self) -> None: ...


class Membership(Protocol):
    """The worker's seat in its group: which account partitions it holds."""

    def poll(self) -> tuple[set[int], set[int]]:
        """Partitions assigned and revoked since the last call."""

    def commit(self, offsets: dict[TP, int]) -> None:
        """Record the group's progress: next offsets covered by a stored checkpoint."""

    def close(self) -> None: ...


Encoded = list[tuple[int, bytes]]  # (account partition, its encoded checkpoint)


class CheckpointStore(Protocol):
    """The latest checkpoint of each account partition."""

    def load(self, partition: int) -> bytes | None: ...

    def begin(self, encode: Callable[[], Encoded]) -> None:
        """Store the checkpoints ``encode`` gives, taken of the state as it is at this call (the
        caller may change it right after: a store that works on after returning runs ``encode``
        on a copy, e.g. a forked process). One at a time."""

    def finished(self) -> bool | None:
        """None while the last ``begin`` is in flight; then True if it was stored, False if not."""


class Sink(Protocol):
    """Where outputs go."""

    def send(self, topic: str, key: bytes | None, value: bytes) -> None: ...

    def flush(self) -> None:
        """Return once everything sent is on the broker; raise if anything was refused."""


class Ports(Protocol):
    membership: Membership
    store: CheckpointStore
    sink: Sink

    def open_source(self) -> Source:
        """A new reader (one per lane)."""
