"""Merge several input streams into one deterministic event-time order.

A Kafka consumer interleaves its partitions (and topics) as fetches happen to return; an
in-process replay reads them from files. For both to hand the core the *same* sequence, a worker
passes everything through a ``Sequencer``.

Each input keeps its own order (its offsets): an event's place in the merge is its *sequence
time*, the newest event time its input has shown so far, itself included — its own event time
when the input is in order, which is the normal case. Events come out sorted by ``(sequence
time, input, position within the input)``, and an event is released once its sequence time is
no newer than every open input's newest event time and no input can later send anything that
sorts before it (``pop_ready``). That order depends only on the events, never on arrival timing, so
the core's output is the same both ways — and an in-order event waits only for the slower
inputs to reach it, never for a lateness allowance.

An event older than its own input's newest by more than ``allowed_lateness_ms`` is late
(judged within that input alone, so the same events are late in every run) and refused; one
out of order by less is released at its input's place, with its own event time inside it, so
the core sees it after the newer events it trails (the market board keeps the newer values).

An input with nothing to say would hold everyone back; a live shell marks it ``idle`` after a
wall-clock timeout (the one place timing enters, and only for inputs that are silent), and a
replay ``close``s each input at its end.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from typing import Any

NEVER_MS = -(2**63)  # the newest event time of an input that has shown none


class Sequencer:
    def __init__(self, allowed_lateness_ms: int = 0) -> None:
        self.allowed_lateness_ms = allowed_lateness_ms
        self._heap: list[tuple[int, Any, int, Any]] = []
        self._newest: dict[Hashable, int] = {}  # per input: the newest event time shown
        self._open: set[Hashable] = set()
        self._idle: set[Hashable] = set()
        self._positions: dict[Hashable, int] = {}
        self._ranks: dict[Hashable, str] = {}
        self.late_events = 0
        # ``bound()`` as last computed, while no change can have moved it
        self._bound_valid = False
        self._bound_value: tuple[Hashable, int] | None = None

    def add_input(self, name: Hashable, newest_ms: int = NEVER_MS) -> None:
        """Declare an input (e.g. a topic-partition) before or while events flow; ``newest_ms``:
        the newest event time it had shown, where it resumes from a snapshot (``released``)."""
        if name not in self._newest:
            self._bound_valid = False
            self._newest[name] = newest_ms
            self._open.add(name)
            self._positions[name] = 0
            self._ranks[name] = input_rank(name)

    def push(self, name: Hashable, event_time_ms: int, event: Any) -> bool:
        """Queue an event of input ``name``; False if it is late for its input (older than the
        input's newest by more than the allowed lateness): the caller counts or dead-letters it,
        the order stays intact."""
        if name not in self._newest:
            self.add_input(name)
        if name in self._idle:
            self._idle.discard(name)
            self._bound_valid = False  # a waking input may bound the release again
        elif self._bound_value is not None and self._bound_value[0] == name:
            self._bound_valid = False  # the bounding input's newest moves (no other input's can move the bound)
        newest = self._newest[name]
        if event_time_ms < newest - self.allowed_lateness_ms:
            self.late_events += 1
            return False
        positions = self._positions
        position = positions[name]
        positions[name] = position + 1
        if event_time_ms > newest:
            newest = self._newest[name] = event_time_ms
        heapq.heappush(self._heap, (newest, self._ranks[name], position, event))
        return True

    def idle(self, name: Hashable) -> None:
        """Stop waiting for a silent input until it speaks again."""
        self._idle.add(name)
        self._bound_valid = False

    def wake(self, name: Hashable) -> None:
        """Wait for an idle input again (it has something to say that is not read yet)."""
        if name in self._idle:
            self._idle.discard(name)
            self._bound_valid = False

    def idle_inputs(self) -> set[Hashable]:
        return set(self._idle)

    def idle_all(self) -> None:
        """Stop waiting for every input known so far (the stream has gone quiet)."""
        self._idle.update(self._open)
        self._bound_valid = False

    def close(self, name: Hashable) -> None:
        """An input has ended (replay end of file, partition revoked)."""
        self._open.discard(name)
        self._idle.discard(name)
        self._bound_valid = False

    def pop_ready(self, limit: int | None = None, before_ms: int | None = None) -> list[Any]:
        """Every queued event that nothing still to come can sort before, in the deterministic
        order; everything once no input is open and speaking. At most ``limit`` of them, if
        given, and only those of sequence time before ``before_ms``, if given: the rest stay
        queued, first in line.

        Every open, non-idle input will only send sequence times at or after its newest; the
        oldest of those newest times is the bound. An event before the bound is safe. One at
        the bound is safe too unless an input standing at the limit ranks before it (a future
        event of its own input comes after it by position): so an event does not wait for its
        own input's next one when that input is the slowest."""
        heap = self._heap
        if not heap or (before_ms is not None and heap[0][0] >= before_ms):
            return []
        if before_ms is not None:
            return self._pop_before(limit, before_ms)
        bound = self.bound()
        if bound is None:
            if limit is None or limit >= len(heap):  # everything, in order: one sort, not a pop each
                heap.sort()
                out = [entry[3] for entry in heap]
                heap.clear()
                return out
            until, first = None, ""
        else:
            until, first = bound[1], self._ranks[bound[0]]
            if heap[0][0] > until or (heap[0][0] == until and heap[0][1] > first):
                return []  # the common case while an input lags: nothing is safe yet
        out = []
        room = len(heap) if limit is None else limit
        while heap and len(out) < room and (until is None or heap[0][0] < until
                                            or (heap[0][0] == until and heap[0][1] <= first)):
            out.append(heapq.heappop(heap)[3])
        return out

    def _pop_before(self, limit: int | None, before_ms: int) -> list[Any]:
        """``pop_ready`` restricted to sequence times before ``before_ms``."""
        bound = self.bound()
        heap = self._heap
        out: list[Any] = []
        room = len(heap) if limit is None else limit
        if bound is None:
            while heap and len(out) < room and heap[0][0] < before_ms:
                out.append(heapq.heappop(heap)[3])
            return out
        until, first = bound[1], self._ranks[bound[0]]
        while heap and len(out) < room and heap[0][0] < before_ms and (
                heap[0][0] < until or (heap[0][0] == until and heap[0][1] <= first)):
            out.append(heapq.heappop(heap)[3])
        return out

    def released_before(self, before_ms: int) -> bool:
        """Whether every event of sequence time before ``before_ms`` has been released and
        nothing still to come can have one: every open, speaking input has reached it, or,
        all of them idle, the next in line is at or after it."""
        if self._heap and self._heap[0][0] < before_ms:
            return False
        bound = self.bound()
        return bool(self._heap) if bound is None else bound[1] >= before_ms

    def drop(self, names: set[Hashable]) -> int:
        """Forget the inputs ``names`` and every event of theirs still queued (a partition moved
        away); how many events were dropped."""
        for name in names:
            self.close(name)
            self._newest.pop(name, None)
            self._positions.pop(name, None)
        ranks = {self._ranks.pop(name) for name in names if name in self._ranks}
        kept = [entry for entry in self._heap if entry[1] not in ranks]
        dropped = len(self._heap) - len(kept)
        if dropped:
            heapq.heapify(kept)
            self._heap = kept
        self._bound_valid = False
        return dropped

    def bound(self) -> tuple[Hashable, int] | None:
        """The input every release waits for, and its newest event time: of the open, non-idle
        inputs, the one with the oldest newest time (the first by rank on a tie). None when no
        input bounds the release. What an operator wants to know when a shard holds events."""
        if self._bound_valid:
            return self._bound_value
        found: tuple[Hashable, int] | None = None
        first = ""
        newest, ranks, idle = self._newest, self._ranks, self._idle
        for name in self._open:
            if name in idle:
                continue
            t = newest[name]
            if found is None or t < found[1] or (t == found[1] and ranks[name] < first):
                found, first = (name, t), ranks[name]
        self._bound_value, self._bound_valid = found, True
        return found

    def head_time(self) -> int | None:
        """The sequence time of the next event in line, None when nothing is queued."""
        return self._heap[0][0] if self._heap else None

    def __len__(self) -> int:
        return len(self._heap)


def input_rank(name: Hashable) -> str:
    """Inputs tie-break by name, so two events with the same time come out in a fixed order."""
    return repr(name)
