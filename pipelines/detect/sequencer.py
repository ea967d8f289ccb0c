"""Merge several input streams into one deterministic event-time order.

A Kafka consumer interleaves its partitions (and topics) as fetches happen to return; an
in-process replay reads them from files. For both to hand the core the *same* sequence, a worker
passes everything through a ``Sequencer``. Each input's watermark is the newest event time it
has shown minus ``allowed_lateness_ms``; an event older than its own input's watermark is late
(judged within that input alone, so the same events are late in every run). An event is
released once it is older than every open input's watermark, and released events come out
sorted by ``(event_time_ms, input, position within the input)``. That order depends only on
the events, never on arrival timing, so the core's output is the same both ways.

An input with nothing to say would hold everyone back; a live shell marks it ``idle`` after a
wall-clock timeout (the one place timing enters, and only for inputs that are silent), and a
replay ``close``s each input at its end.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from typing import Any


class Sequencer:
    def __init__(self, allowed_lateness_ms: int = 0) -> None:
        self.allowed_lateness_ms = allowed_lateness_ms
        self._heap: list[tuple[int, Any, int, Any]] = []
        self._watermarks: dict[Hashable, int] = {}
        self._open: set[Hashable] = set()
        self._idle: set[Hashable] = set()
        self._positions: dict[Hashable, int] = {}
        self.late_events = 0

    def add_input(self, name: Hashable) -> None:
        """Declare an input (e.g. a topic-partition) before or while events flow."""
        if name not in self._watermarks:
            self._watermarks[name] = -(2**63)
            self._open.add(name)
            self._positions[name] = 0

    def push(self, name: Hashable, event_time_ms: int, event: Any) -> bool:
        """Queue an event of input ``name``; False if it is late for its input (older than the
        input's watermark): the caller counts or dead-letters it, the order stays intact."""
        self.add_input(name)
        self._idle.discard(name)
        if event_time_ms < self._watermarks[name]:
            self.late_events += 1
            return False
        position = self._positions[name]
        self._positions[name] = position + 1
        heapq.heappush(self._heap, (event_time_ms, _rank(name), position, event))
        self._watermarks[name] = max(self._watermarks[name], event_time_ms - self.allowed_lateness_ms)
        return True

    def idle(self, name: Hashable) -> None:
        """Stop waiting for a silent input until it speaks again."""
        self._idle.add(name)

    def idle_all(self) -> None:
        """Stop waiting for every input known so far (the stream has gone quiet)."""
        self._idle.update(self._open)

    def close(self, name: Hashable) -> None:
        """An input has ended (replay end of file, partition revoked)."""
        self._open.discard(name)
        self._idle.discard(name)

    def low_watermark(self) -> int | None:
        """The smallest watermark of the open, non-idle inputs; None if there is none."""
        waiting = [self._watermarks[name] for name in self._open if name not in self._idle]
        if not waiting:
            return None
        return min(waiting)

    def pop_ready(self) -> list[Any]:
        """Every queued event strictly before the low watermark (an input may still send more
        events at exactly its watermark), in the deterministic order; everything once no input
        is open."""
        limit = self.low_watermark()
        out = []
        while self._heap and (limit is None or self._heap[0][0] < limit):
            out.append(heapq.heappop(self._heap)[3])
        return out

    def __len__(self) -> int:
        return len(self._heap)


def _rank(name: Hashable) -> str:
    """Inputs tie-break by name, so two events with the same time come out in a fixed order."""
    return repr(name)
