"""The worker's ports on an in-memory log: a broker in a dict, for tests and benchmarks.

``MemoryBroker`` holds topic-partitions as lists; ``MemoryGroup`` hands account partitions to
the workers joined to it, as a test tells it to; ``MemoryPorts`` is one worker's view of both.
Reads interleave topic-partitions in a seeded random order (a broker promises no order across
partitions), so a test that passes holds for any interleaving the seed picks.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable

from pipelines.worker.ports import TP, Encoded, Record


class MemoryBroker:
    def __init__(self) -> None:
        self.logs: dict[TP, list[tuple[bytes | None, bytes | None, int]]] = {}

    def append(self, topic: str, partition: int, key: bytes | None, value: bytes | None,
               timestamp_ms: int | None = None) -> int:
        """Append a record stamped ``timestamp_ms`` (default: the wall clock now, as a producer would)."""
        log = self.logs.setdefault((topic, partition), [])
        log.append((key, value, int(time.time() * 1000) if timestamp_ms is None else timestamp_ms))
        return len(log) - 1

    def records(self, topic: str) -> list[Record]:
        """Every record of ``topic``, partition by partition."""
        return [Record(t, p, offset, *entry) for (t, p), log in sorted(self.logs.items()) if t == topic
                for offset, entry in enumerate(log)]


class MemorySource:
    def __init__(self, broker: MemoryBroker, rng: random.Random) -> None:
        self.broker, self.rng = broker, rng
        self.next: dict[TP, int] = {}

    def assign(self, starts: dict[TP, int]) -> None:
        self.next.update(starts)

    def unassign(self, tps: Iterable[TP]) -> None:
        for tp in tps:
            self.next.pop(tp, None)

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:  # never waits
        out: list[Record] = []
        tps = [tp for tp in self.next if self.next[tp] < len(self.broker.logs.get(tp, ()))]
        self.rng.shuffle(tps)
        for tp in tps:
            log, start = self.broker.logs[tp], self.next[tp]
            take = min(len(log) - start, self.rng.randint(1, 50), max_records - len(out))
            out += [Record(tp[0], tp[1], offset, *log[offset]) for offset in range(start, start + take)]
            self.next[tp] = start + take
            if len(out) >= max_records:
                break
        return out

    def settled(self, tp: TP) -> bool:
        return self.lag(tp) == 0

    def lag(self, tp: TP) -> int:
        return max(0, len(self.broker.logs.get(tp, ())) - self.next.get(tp, 0))

    def close(self) -> None:
        self.next.clear()


class MemoryGroup:
    """Account partitions and who holds them; offsets the workers committed."""

    def __init__(self) -> None:
        self.members: dict[str, MemoryMembership] = {}
        self.committed: dict[TP, int] = {}

    def join(self, name: str) -> MemoryMembership:
        member = self.members[name] = MemoryMembership(self)
        return member

    def move(self, partitions: Iterable[int], to: str | None) -> None:
        """Revoke ``partitions`` from whoever holds them and assign them to member ``to`` (None:
        to nobody, as after a crash)."""
        moved = set(partitions)
        for member in self.members.values():
            member.revoked |= member.held & moved
            member.assigned -= moved
            member.held -= moved
        if to is not None:
            self.members[to].assigned |= moved
            self.members[to].held |= moved

    def leave(self, name: str) -> set[int]:
        """A member's crash: its partitions, assigned to nobody."""
        member = self.members.pop(name)
        return set(member.held)


class MemoryMembership:
    def __init__(self, group: MemoryGroup) -> None:
        self.group = group
        self.held: set[int] = set()
        self.assigned: set[int] = set()
        self.revoked: set[int] = set()

    def poll(self) -> tuple[set[int], set[int]]:
        changes = (self.assigned, self.revoked)
        self.assigned, self.revoked = set(), set()
        return changes

    def commit(self, offsets: dict[TP, int]) -> None:
        self.group.committed.update(offsets)

    def close(self) -> None:
        pass


class MemoryStore:
    """The checkpoints stored, shared by the workers."""

    def __init__(self) -> None:
        self.stored: dict[int, bytes] = {}


class MemoryCheckpoints:
    """One worker's writer of checkpoints: encoded at ``begin``, stored when ``finished`` is asked
    (a crash in between loses them)."""

    def __init__(self, store: MemoryStore) -> None:
        self.shared = store
        self.pending: Encoded | None = None

    def load(self, partition: int) -> bytes | None:
        return self.shared.stored.get(partition)

    def begin(self, encode: Callable[[], Encoded]) -> None:
        if self.pending is not None:
            raise RuntimeError("a checkpoint is in flight")
        self.pending = encode()

    def finished(self) -> bool | None:
        if self.pending is not None:
            self.shared.stored.update(self.pending)
            self.pending = None
        return True


class MemorySink:
    """Outputs queue here and reach the broker at ``flush`` (or when ``deliver`` says), as a
    producer's do: a crash loses what was not delivered yet."""

    def __init__(self, broker: MemoryBroker, partitions: int) -> None:
        self.broker, self.partitions = broker, partitions
        self.queued: list[tuple[str, bytes | None, bytes]] = []

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.queued.append((topic, key, value))

    def flush(self) -> None:
        for topic, key, value in self.queued:
            self.broker.append(topic, 0, key, value)
        self.queued.clear()


class MemoryPorts:
    """One worker's ports on a shared broker, group and checkpoint store."""

    def __init__(self, broker: MemoryBroker, group: MemoryGroup, store: MemoryStore, name: str, seed: int = 0,
                 partitions: int = 12) -> None:
        self.broker = broker
        self.membership = group.join(name)
        self.store = MemoryCheckpoints(store)
        self.sink = MemorySink(broker, partitions)
        self.rng = random.Random(seed)

    def open_source(self) -> MemorySource:
        return MemorySource(self.broker, random.Random(self.rng.random()))
