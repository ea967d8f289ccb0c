"""Event-time building blocks for the detectors: watermarks, rolling windows, held conditions.

Nothing here reads a clock. Time is the ``event_time_ms`` of the events fed in, so the same
events in the same per-key order give the same results whether they come from Kafka or from a
replay file. Events may arrive out of order: within ``allowed_lateness_ms`` of the newest event
seen for a key they are used; older ones are *late*, rejected, and the caller counts them.

Each class's ``state()`` is its whole state as plain data (str, int, float, bool, None, lists
and str-keyed dicts), parameters included, and ``from_state`` rebuilds an object that behaves
identically on any further events; ``pipelines/engine/state_schema.py`` holds the Avro schemas.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections import deque
from typing import NamedTuple, Self


@dataclasses.dataclass
class Watermark:
    """The newest event time seen for one key, and what counts as late relative to it."""

    allowed_lateness_ms: int
    max_event_time_ms: int | None = None

    def admit(self, event_time_ms: int) -> bool:
        """Advance with an event; False (and no change) if the event is late."""
        newest = self.max_event_time_ms
        if newest is None:
            self.max_event_time_ms = event_time_ms
            return True
        if event_time_ms < newest - self.allowed_lateness_ms:
            return False
        if event_time_ms > newest:
            self.max_event_time_ms = event_time_ms
        return True

    @property
    def now_ms(self) -> int | None:
        """Event-time 'now' for this key: the newest event seen."""
        return self.max_event_time_ms

    def state(self) -> dict:
        """Plain data (``WatermarkState``)."""
        return {"allowed_lateness_ms": self.allowed_lateness_ms, "max_event_time_ms": self.max_event_time_ms}

    @classmethod
    def from_state(cls, state: dict) -> Self:
        return cls(state["allowed_lateness_ms"], state["max_event_time_ms"])


class Sample(NamedTuple):
    """One observation in a window, with the reference of the event that carried it."""

    event_time_ms: int
    value: float
    ref: str

    def state(self) -> dict:
        """Plain data (``SampleState``)."""
        return {"event_time_ms": self.event_time_ms, "value": self.value, "ref": self.ref}

    @classmethod
    def from_state(cls, state: dict) -> Self:
        return cls(state["event_time_ms"], state["value"], state["ref"])


class _BucketedWindow:
    """What the rolling windows share: the last ``length_ms`` of event time of one key, in
    buckets of ``length_ms // buckets`` (at least 1 ms), with a bounded memory.

    Why buckets: a window that kept every sample grew with the tick rate — an hour of index
    ticks was most of a worker's snapshot — and its worst case is the one that matters: in a
    steady fall every sample of the hour is the high of some later window. So the window's
    start moves in whole buckets: the window ending at ``end_ms`` holds the samples from the
    start of the bucket of ``end_ms - length_ms + 1`` to ``end_ms`` (up to one bucket longer
    than ``length_ms``, never shorter), and a bucket that is over keeps only what the window
    asks of it (its extremes, or where a running time-weighted sum stood).

    A bucket is over once no admissible sample can still fall in it: it ends before the bucket
    of ``newest - allowed_lateness_ms``. Samples since then are kept whole, sorted by event
    time, so a late one is inserted in place and a query at a late event's time sees exactly
    the window ending there: the content depends on which samples arrived, never on their order.
    """

    def __init__(self, length_ms: int, allowed_lateness_ms: int = 0, buckets: int = 360) -> None:
        if length_ms <= 0 or buckets <= 0:
            raise ValueError("window length and bucket count must be positive")
        self.length_ms = length_ms
        self.allowed_lateness_ms = allowed_lateness_ms
        self.bucket_ms = max(1, length_ms // buckets)
        self.first_ms: int | None = None  # the earliest sample ever added
        self._times: list[int] = []  # the recent samples, sorted, beside their values for C-speed scans
        self._values: list[float] = []
        self._samples: list[Sample] = []

    def add(self, sample: Sample) -> bool:
        """Add a sample; False (and nothing changes) if it is older than the newest by more than
        ``allowed_lateness_ms`` — it would land in a bucket already settled. A sample its key's
        ``Watermark`` admitted never is."""
        t, times, bucket_ms = sample.event_time_ms, self._times, self.bucket_ms
        if times and t < times[-1]:
            newest = times[-1] - self.allowed_lateness_ms
            if t < newest - newest % bucket_ms:
                return False
            index = bisect.bisect_right(times, t)
            times.insert(index, t)
            self._values.insert(index, sample.value)
            self._samples.insert(index, sample)
        else:  # in order, the common case
            index = len(times)
            times.append(t)
            self._values.append(sample.value)
            self._samples.append(sample)
        if self.first_ms is None or t < self.first_ms:
            self.first_ms = t
        self._inserted(index)
        horizon = times[-1] - self.allowed_lateness_ms
        horizon -= horizon % bucket_ms  # its bucket's start
        if times[0] >= horizon:
            return True  # no bucket is over yet
        over = bisect.bisect_left(times, horizon)
        start = 0
        while start < over:  # settle whole buckets, oldest first
            end = bisect.bisect_left(times, self._bucket_start(times[start]) + self.bucket_ms, start, over)
            self._settle(start, end)
            start = end
        del times[:over]
        del self._values[:over]
        del self._samples[:over]
        self._forget(over, horizon)
        self._expire(self._bucket_start(horizon - self.length_ms + 1))
        return True

    def state(self) -> dict:
        """Plain data: the window's parameters (``bucket_ms`` as derived from the bucket count),
        the earliest sample, the recent samples and what the subclass keeps of settled buckets
        (``RollingExtremesState``, ``RollingTwapState``). What is derived from the recent samples
        (sorted times and values, monotonic queues, running sums) is rebuilt by ``from_state``."""
        return {"length_ms": self.length_ms, "allowed_lateness_ms": self.allowed_lateness_ms,
                "bucket_ms": self.bucket_ms, "first_ms": self.first_ms,
                "recent": [sample.state() for sample in self._samples], **self._settled_state()}

    @classmethod
    def from_state(cls, state: dict) -> Self:
        window = cls(state["length_ms"], state["allowed_lateness_ms"])
        window.bucket_ms = state["bucket_ms"]
        window.first_ms = state["first_ms"]
        window._samples = [Sample.from_state(sample) for sample in state["recent"]]
        window._times = [sample.event_time_ms for sample in window._samples]
        window._values = [sample.value for sample in window._samples]
        window._restore_settled(state)
        return window

    def start_ms(self, end_ms: int) -> int:
        """Where the window ending at ``end_ms`` starts: its first bucket's start, or the first
        sample ever seen if that is later."""
        start = self._bucket_start(end_ms - self.length_ms + 1)
        return start if self.first_ms is None else max(start, self.first_ms)

    def _bucket_start(self, t: int) -> int:
        return t - t % self.bucket_ms

    def _inserted(self, index: int) -> None:
        """A sample was inserted at ``index`` of the recent ones (the end, unless it came late)."""
        raise NotImplementedError

    def _settle(self, start: int, end: int) -> None:
        """The recent samples ``[start, end)`` are one bucket that is over (never empty)."""
        raise NotImplementedError

    def _forget(self, count: int, horizon_ms: int) -> None:
        """The first ``count`` recent samples, all before ``horizon_ms``, were settled and dropped."""
        raise NotImplementedError

    def _expire(self, start_ms: int) -> None:
        """Forget settled buckets starting before ``start_ms``: no admissible window reaches them."""
        raise NotImplementedError

    def _settled_state(self) -> dict:
        """The subclass's own fields of ``state()``."""
        raise NotImplementedError

    def _restore_settled(self, state: dict) -> None:
        """Rebuild the subclass's own state from ``state()``, the recent samples being restored."""
        raise NotImplementedError


def _push_high(queue: deque[Sample], sample: Sample) -> None:
    """Append to a queue of decreasing highs: what ``sample`` tops can no longer be a high."""
    while queue and queue[-1].value < sample.value:
        queue.pop()
    queue.append(sample)


def _push_low(queue: deque[Sample], sample: Sample) -> None:
    """Append to a queue of increasing lows: what ``sample`` undercuts can no longer be a low."""
    while queue and queue[-1].value > sample.value:
        queue.pop()
    queue.append(sample)


def _first_since(queue: deque[Sample], start_ms: int) -> Sample | None:
    """The front of a monotonic queue for a window starting at ``start_ms`` (older entries are
    skipped, not dropped: a late event may still ask for an earlier window)."""
    if queue and queue[0].event_time_ms >= start_ms:
        return queue[0]
    return next((sample for sample in queue if sample.event_time_ms >= start_ms), None)


class RollingExtremes(_BucketedWindow):
    """The highest and the lowest sample of a rolling window (the earliest of equals).

    Monotonic queues answer the common query — the window ending at the newest sample — in
    amortised O(1) instead of a scan of minutes of ticks: one pair over the recent samples
    (rebuilt when a late one arrives), one over the settled buckets, each bucket entering with
    its own high and low. A bucket's high leaves once a later one is higher, so a settled queue
    holds at most one entry per bucket of the window, and usually a few.
    """

    def __init__(self, length_ms: int, allowed_lateness_ms: int = 0, buckets: int = 360) -> None:
        super().__init__(length_ms, allowed_lateness_ms, buckets)
        self._high: deque[Sample] = deque()  # settled
        self._low: deque[Sample] = deque()
        self._recent_high: deque[Sample] = deque()
        self._recent_low: deque[Sample] = deque()

    def _inserted(self, index: int) -> None:
        samples, highs, lows = self._samples, self._recent_high, self._recent_low
        if index < len(samples) - 1:
            highs.clear()
            lows.clear()
            for sample in samples[:-1]:
                _push_high(highs, sample)
                _push_low(lows, sample)
        sample = samples[-1]
        value = sample.value  # _push_high and _push_low, inline: once per sample
        while highs and highs[-1].value < value:
            highs.pop()
        highs.append(sample)
        while lows and lows[-1].value > value:
            lows.pop()
        lows.append(sample)

    def _settle(self, start: int, end: int) -> None:
        values = self._values[start:end]
        _push_high(self._high, self._samples[start + values.index(max(values))])
        _push_low(self._low, self._samples[start + values.index(min(values))])

    def _forget(self, count: int, horizon_ms: int) -> None:
        for queue in (self._recent_high, self._recent_low):
            while queue[0].event_time_ms < horizon_ms:
                queue.popleft()

    def _expire(self, start_ms: int) -> None:
        for queue in (self._high, self._low):
            while queue and queue[0].event_time_ms < start_ms:
                queue.popleft()

    def _settled_state(self) -> dict:
        return {"settled_high": [sample.state() for sample in self._high],
                "settled_low": [sample.state() for sample in self._low]}

    def _restore_settled(self, state: dict) -> None:
        """The recent queues are those of the recent samples in time order: a queue entry is a
        sample no later one tops, and ``_forget`` drops exactly the entries of dropped samples."""
        self._high = deque(Sample.from_state(sample) for sample in state["settled_high"])
        self._low = deque(Sample.from_state(sample) for sample in state["settled_low"])
        for sample in self._samples:
            _push_high(self._recent_high, sample)
            _push_low(self._recent_low, sample)

    def extremes(self, end_ms: int) -> tuple[Sample, Sample]:
        """The highest and the lowest sample of the window ending at ``end_ms``, which must not
        be empty."""
        start = end_ms - self.length_ms + 1
        start -= start % self.bucket_ms  # its bucket's start
        high: Sample | None
        low: Sample | None
        if end_ms == self._times[-1]:  # the common query: both recent queues hold the sample at end_ms
            high, low = self._recent_high[0], self._recent_low[0]
            if high.event_time_ms < start:
                high = _first_since(self._recent_high, start)
            if low.event_time_ms < start:
                low = _first_since(self._recent_low, start)
        else:
            lo, hi = bisect.bisect_left(self._times, start), bisect.bisect_right(self._times, end_ms)
            values = self._values[lo:hi]
            high = self._samples[lo + values.index(max(values))] if values else None
            low = self._samples[lo + values.index(min(values))] if values else None
        settled: Sample | None
        settled_high, settled_low = self._high, self._low  # _first_since, its front tried inline
        if settled_high:
            settled = settled_high[0]
            if settled.event_time_ms < start:
                settled = _first_since(settled_high, start)
            if settled is not None and (high is None or settled.value >= high.value):
                high = settled  # an equal settled sample is the earlier one
        if settled_low:
            settled = settled_low[0]
            if settled.event_time_ms < start:
                settled = _first_since(settled_low, start)
            if settled is not None and (low is None or settled.value <= low.value):
                low = settled
        if high is None or low is None:
            raise ValueError(f"the window ending at {end_ms} is empty")
        return high, low


class RollingTwap(_BucketedWindow):
    """The time-weighted average of a rolling window: each value weighted by how long it stood
    until the next sample, the last counting one millisecond (so one sample is its own average).

    Every sample carries the running sum of value x time up to it, so the sum over any run of
    samples is one subtraction; a settled bucket keeps only its first sample's time and sum.
    """

    def __init__(self, length_ms: int, allowed_lateness_ms: int = 0, buckets: int = 360) -> None:
        super().__init__(length_ms, allowed_lateness_ms, buckets)
        self._sums: list[float] = []  # beside the recent samples
        self._last: tuple[int, float, float] | None = None  # the last settled sample: time, value, sum
        self._buckets: deque[tuple[int, float]] = deque()  # settled: first sample's time and sum

    def _inserted(self, index: int) -> None:
        self._sums.insert(index, 0.0)
        self._sum_from(index)  # a late sample changes the sums after it

    def _sum_from(self, index: int) -> None:
        """Set the running sums of the recent samples from ``index`` on, each from the sample
        before it (the last settled one before the first): so a sum never depends on the order
        the samples arrived in, and ``from_state`` recomputes the same floats."""
        previous = (self._times[index - 1], self._values[index - 1], self._sums[index - 1]) if index else self._last
        for i in range(index, len(self._times)):
            t, value = self._times[i], self._values[i]
            self._sums[i] = 0.0 if previous is None else previous[2] + previous[1] * (t - previous[0])
            previous = (t, value, self._sums[i])

    def _settle(self, start: int, end: int) -> None:
        self._buckets.append((self._times[start], self._sums[start]))
        self._last = (self._times[end - 1], self._values[end - 1], self._sums[end - 1])

    def _forget(self, count: int, horizon_ms: int) -> None:
        del self._sums[:count]

    def _expire(self, start_ms: int) -> None:
        while self._buckets and self._buckets[0][0] < start_ms:
            self._buckets.popleft()

    def _settled_state(self) -> dict:
        last = None if self._last is None else {"event_time_ms": self._last[0], "value": self._last[1],
                                                "sum": self._last[2]}
        return {"last_settled": last,
                "settled": [{"event_time_ms": t, "sum": total} for t, total in self._buckets]}

    def _restore_settled(self, state: dict) -> None:
        last = state["last_settled"]
        self._last = None if last is None else (last["event_time_ms"], last["value"], last["sum"])
        self._buckets = deque((bucket["event_time_ms"], bucket["sum"]) for bucket in state["settled"])
        self._sums = [0.0] * len(self._times)
        self._sum_from(0)

    def average(self, end_ms: int) -> float:
        """The time-weighted average of the window ending at ``end_ms``, which must hold a recent
        sample (any admissible event time does: the event's own sample)."""
        start = self._bucket_start(end_ms - self.length_ms + 1)
        last = bisect.bisect_right(self._times, end_ms) - 1
        if last < 0:
            raise ValueError(f"no recent sample at or before {end_ms}")
        buckets = self._buckets
        if buckets and buckets[0][0] >= start:
            first: tuple[int, float] | None = buckets[0]
        else:
            first = next((bucket for bucket in buckets if bucket[0] >= start), None)
        if first is None:
            index = bisect.bisect_left(self._times, start)
            first = (self._times[index], self._sums[index])
        area = self._sums[last] - first[1] + self._values[last]
        return area / (self._times[last] - first[0] + 1)


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

    def state(self) -> dict:
        """Plain data (``HeldConditionState``)."""
        return {"hold_ms": self.hold_ms, "pending_since_ms": self.pending_since_ms, "firing": self.firing}

    @classmethod
    def from_state(cls, state: dict) -> Self:
        return cls(state["hold_ms"], state["pending_since_ms"], state["firing"])
