"""Event-time building blocks for the detectors: watermarks, rolling windows, held conditions.

Nothing here reads a clock. Time is the ``event_time_ms`` of the events fed in, so the same
events in the same per-key order give the same results whether they come from Kafka or from a
replay file. Events may arrive out of order: within ``allowed_lateness_ms`` of the newest event
seen for a key they are used; older ones are *late*, rejected, and the caller counts them.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections import deque
from collections.abc import Iterator


@dataclasses.dataclass
class Watermark:
    """The newest event time seen for one key, and what counts as late relative to it."""

    allowed_lateness_ms: int
    max_event_time_ms: int | None = None

    def admit(self, event_time_ms: int) -> bool:
        """Advance with an event; False (and no change) if the event is late."""
        if self.max_event_time_ms is not None and event_time_ms < self.max_event_time_ms - self.allowed_lateness_ms:
            return False
        if self.max_event_time_ms is None or event_time_ms > self.max_event_time_ms:
            self.max_event_time_ms = event_time_ms
        return True

    @property
    def now_ms(self) -> int | None:
        """Event-time 'now' for this key: the newest event seen."""
        return self.max_event_time_ms


@dataclasses.dataclass(frozen=True)
class Sample:
    """One observation in a window, with the reference of the event that carried it."""

    event_time_ms: int
    value: float
    ref: str


class RollingWindow:
    """Samples of one key over the last ``length_ms`` of event time, kept sorted by event time.

    Out-of-order samples (already filtered for lateness by a ``Watermark``) are inserted in
    place, so the window's content depends only on which samples arrived, not on their order.
    Samples older than ``newest - length_ms - allowed_lateness_ms`` can no longer matter to any
    admissible event and are evicted.
    """

    def __init__(self, length_ms: int, allowed_lateness_ms: int = 0) -> None:
        if length_ms <= 0:
            raise ValueError("window length must be positive")
        self.length_ms = length_ms
        self.allowed_lateness_ms = allowed_lateness_ms
        self._times: list[int] = []
        self._values: list[float] = []  # beside the samples, for a C-speed max/min off the fast path
        self._samples: list[Sample] = []
        # Monotonic queues of the window ending at the newest sample: the highest (and lowest)
        # candidates, so the common query — extremes as of the sample just added — is O(1)
        # amortised instead of a scan of minutes of ticks. A late sample rebuilds them.
        self._high: deque[Sample] = deque()
        self._low: deque[Sample] = deque()

    def add(self, sample: Sample) -> None:
        index = bisect.bisect_right(self._times, sample.event_time_ms)
        self._times.insert(index, sample.event_time_ms)
        self._values.insert(index, sample.value)
        self._samples.insert(index, sample)
        if index == len(self._times) - 1:
            self._enqueue(sample)
        else:
            self._high.clear()
            self._low.clear()
            for earlier in self.ending_at(self._times[-1]):
                self._enqueue(earlier)
        horizon = self._times[-1] - self.length_ms - self.allowed_lateness_ms
        cut = bisect.bisect_left(self._times, horizon)
        if cut:
            del self._times[:cut]
            del self._values[:cut]
            del self._samples[:cut]

    def between(self, start_ms: int, end_ms: int) -> Iterator[Sample]:
        """Samples with start_ms <= event time <= end_ms, oldest first."""
        lo = bisect.bisect_left(self._times, start_ms)
        hi = bisect.bisect_right(self._times, end_ms)
        return iter(self._samples[lo:hi])

    def ending_at(self, end_ms: int) -> list[Sample]:
        """The window (end_ms - length_ms, end_ms]."""
        return list(self.between(end_ms - self.length_ms + 1, end_ms))

    def _enqueue(self, sample: Sample) -> None:
        """Append the newest sample to the monotonic queues (earlier equals stay in front)."""
        while self._high and self._high[-1].value < sample.value:
            self._high.pop()
        self._high.append(sample)
        while self._low and self._low[-1].value > sample.value:
            self._low.pop()
        self._low.append(sample)

    def extremes(self, end_ms: int) -> tuple[Sample, Sample]:
        """The highest and the lowest sample of the window ending at ``end_ms`` (the earliest of
        equals), which must not be empty."""
        start = end_ms - self.length_ms + 1
        if end_ms == self._times[-1]:
            for queue in (self._high, self._low):
                while queue[0].event_time_ms < start:
                    queue.popleft()
            return self._high[0], self._low[0]
        lo = bisect.bisect_left(self._times, start)
        hi = bisect.bisect_right(self._times, end_ms)
        values = self._values[lo:hi]
        return (self._samples[lo + values.index(max(values))], self._samples[lo + values.index(min(values))])

    def __len__(self) -> int:
        return len(self._samples)


@dataclasses.dataclass
class HeldCondition:
    """A condition that must hold for ``hold_ms`` of event time before it fires, with hysteresis.

    ``update(t, triggered, cleared)`` is called with two booleans computed by the detector from
    two thresholds: ``triggered`` (e.g. margin ratio >= 1.0) and ``cleared`` (e.g. margin
    ratio < 0.95). Between the two thresholds nothing changes state, so a value hovering at the
    trigger level does not flap. States: idle -> pending (since the first triggered event) ->
    firing (once held long enough; reported once) -> idle again only when cleared.
    """

    hold_ms: int
    pending_since_ms: int | None = None
    firing: bool = False

    def update(self, event_time_ms: int, triggered: bool, cleared: bool) -> str | None:
        """Return "fire" when the condition has just held for hold_ms, "clear" when it has just
        cleared after firing, else None."""
        if self.firing:
            if cleared:
                self.firing = False
                self.pending_since_ms = None
                return "clear"
            return None
        if self.pending_since_ms is None:
            if triggered:
                self.pending_since_ms = event_time_ms
            else:
                return None
        elif cleared:
            self.pending_since_ms = None
            return None
        if event_time_ms - self.pending_since_ms >= self.hold_ms:
            self.firing = True
            return "fire"
        return None
