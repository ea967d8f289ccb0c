"""Recent index prices of one underlying: its velocity and realised volatility, kept incrementally.

The ladder's predictive margin call needs the index velocity (over ``VELOCITY_WINDOW_MS``) and
the adaptive add-on the realised vol (over ``REALISED_WINDOW_MS``) on every revaluation tick.
A busy feed sends tens of thousands of index ticks in five minutes, and the history is part of
every checkpoint a worker writes, so it keeps one entry per second of ticks (``BUCKET_MS``): the
second's first price and the sum of the squared log returns into its prices. Both windows
therefore start on a whole second (the second of ``now - window``, never later), and both
figures come from a bisect and a running sum instead of a pass over the ticks. The running sum
is re-added exactly (``math.fsum``) whenever a second leaves the window, so rounding never
accumulates; the same events always give the same figures.
"""

from __future__ import annotations

import bisect
import math
from typing import Self

YEAR_MS = 365.0 * 86_400_000.0
VELOCITY_WINDOW_MS = 60_000
VELOCITY_MIN_SPAN_MS = 10_000  # a trend read off less than this is noise, not a trend
REALISED_WINDOW_MS = 5 * 60_000
BUCKET_MS = 1_000
CUT_BLOCK = 64  # seconds that left the window are removed from the lists this many at a time


class IndexHistory:
    def __init__(self) -> None:
        self._starts: list[int] = []  # per second held: where it starts,
        self._firsts: list[tuple[int, float, float]] = []  # its first tick (time, price, squared return into it),
        self._squares: list[float] = []  # the squared log returns into its ticks,
        self._counts: list[int] = []  # and how many ticks it had,
        self._head = 0  # from this index on: the seconds before it left the window (dropped in blocks, ``_cut``)
        self._sum = 0.0  # of _squares
        self._count = 0  # of _counts
        self._last_ms: int | None = None  # the newest tick's time,
        self._last_price = 0.0  # its price
        self._last_log: float | None = None  # and the log of that price (None unless positive)
        # The exact sum of the seconds held (``_squares``) as a whole number of ``2 ** -_scale``
        # (``_add``): its correctly rounded quotient is their ``math.fsum``. Derived, not state.
        self._held = 0
        self._scale = 0  # the finest a second held has needed so far (at most 1074: 2 ** -1074 is the smallest float)
        self._unit = 1  # 2 ** _scale

    def append(self, time_ms: int, price: float) -> None:
        """Add the newest index price and drop the seconds that left the window; a price older
        than the newest held (an input's out-of-order event) is not history any more and is
        ignored. O(1) amortised: a tick changes its second's exact units, a second leaving the
        window takes its own out."""
        last_ms = self._last_ms
        if last_ms is not None and time_ms < last_ms:
            return
        log_price = math.log(price) if price > 0 else None  # a ratio of prices could underflow to 0
        last_log = self._last_log
        squared = 0.0 if log_price is None or last_log is None else (log_price - last_log) ** 2
        self._last_ms, self._last_price, self._last_log = time_ms, price, log_price
        start = time_ms - time_ms % BUCKET_MS
        starts, squares = self._starts, self._squares
        if starts and starts[-1] == start:
            before = squares[-1]
            after = squares[-1] = before + squared
            if after != before:
                self._replace(before, after)
            self._counts[-1] += 1
        else:
            self._add(squared, 1)
            starts.append(start)
            self._firsts.append((time_ms, price, squared))
            squares.append(squared)
            self._counts.append(1)
        self._sum += squared
        self._count += 1
        horizon = time_ms - REALISED_WINDOW_MS
        horizon -= horizon % BUCKET_MS
        if starts[self._head] < horizon:
            self._cut(bisect.bisect_left(starts, horizon, self._head))

    def _cut(self, cut: int) -> None:
        """The seconds before index ``cut`` (never the newest) leave the window: set the running
        sum to the correctly rounded sum of the seconds left. They are removed from the lists
        once ``CUT_BLOCK`` have left, not one by one."""
        squares, counts = self._squares, self._counts
        for i in range(self._head, cut):
            self._add(squares[i], -1)
            self._count -= counts[i]
        self._head = cut
        if cut >= CUT_BLOCK:
            del self._starts[:cut], self._firsts[:cut], squares[:cut], counts[:cut]
            self._head = 0
        self._sum = self._held / self._unit  # = math.fsum of the seconds held

    def state(self) -> dict:
        """The history as plain data (``IndexHistoryState``): the running sum as it stands, not
        re-added, so a restored history gives the same floats."""
        return {"seconds": [{"start_ms": start, "first_ms": first[0], "first_price": first[1],
                             "first_squared": first[2], "squared": squared, "ticks": ticks}
                            for start, first, squared, ticks in zip(*self._held_seconds())],
                "sum": self._sum, "count": self._count,
                "last": None if self._last_ms is None else {"time_ms": self._last_ms, "price": self._last_price}}

    @classmethod
    def from_state(cls, state: dict) -> Self:
        history = cls()
        seconds = state["seconds"]
        history._starts = [second["start_ms"] for second in seconds]
        history._firsts = [(second["first_ms"], second["first_price"], second["first_squared"]) for second in seconds]
        history._squares = [second["squared"] for second in seconds]
        history._counts = [second["ticks"] for second in seconds]
        history._sum, history._count = state["sum"], state["count"]
        last = state["last"]
        if last is not None:
            history._last_ms, history._last_price = last["time_ms"], last["price"]
            history._last_log = math.log(last["price"]) if last["price"] > 0 else None
        for squared in history._squares:
            history._add(squared, 1)
        return history

    def _held_seconds(self) -> tuple[list, list, list, list]:
        """Starts, first ticks, squared sums and tick counts of the seconds in the window."""
        head = self._head
        return self._starts[head:], self._firsts[head:], self._squares[head:], self._counts[head:]

    def _add(self, x: float, sign: int) -> None:
        """Add ``sign`` (1 or -1) times ``x`` (finite) to ``_held``, exactly: ``x`` as a whole
        number of ``2 ** -_scale``, the scale (and ``_held`` with it) refined first when ``x``
        needs a finer one. Sums of these are exact, and an integer's true division is correctly
        rounded, as ``math.fsum`` is."""
        numerator, denominator = x.as_integer_ratio()  # the denominator is a power of two
        shift = self._scale + 1 - denominator.bit_length()
        if shift < 0:
            self._held <<= -shift
            self._scale -= shift
            self._unit = 1 << self._scale
            shift = 0
        self._held += sign * (numerator << shift)

    def _replace(self, before: float, after: float) -> None:
        """``_add(after, 1)`` and ``_add(before, -1)`` in one step (both finite): the scale refined
        once to the finer either needs, then the exact difference added."""
        after_numerator, after_denominator = after.as_integer_ratio()
        before_numerator, before_denominator = before.as_integer_ratio()
        after_bits, before_bits = after_denominator.bit_length(), before_denominator.bit_length()
        finest = after_bits if after_bits > before_bits else before_bits
        scale = self._scale
        if finest > scale + 1:
            self._held <<= finest - 1 - scale
            scale = self._scale = finest - 1
            self._unit = 1 << scale
        self._held += (after_numerator << (scale + 1 - after_bits)) - (before_numerator << (scale + 1 - before_bits))

    def __len__(self) -> int:
        """Ticks in the window."""
        return self._count

    def velocity(self, time_ms: int) -> float:
        """USD per ms between the first and the last price of the last ``VELOCITY_WINDOW_MS``;
        0 until the prices span ``VELOCITY_MIN_SPAN_MS`` (a few ticks after a start or a gap in
        the feed would otherwise project a breach from noise)."""
        since = time_ms - VELOCITY_WINDOW_MS
        first = bisect.bisect_left(self._starts, since - since % BUCKET_MS, self._head)
        last_ms, last_price = self._last_ms, self._last_price
        if first == len(self._starts) or last_ms is None:
            return 0.0
        first_ms, first_price, _ = self._firsts[first]
        if last_ms - first_ms < VELOCITY_MIN_SPAN_MS:
            return 0.0
        return (last_price - first_price) / (last_ms - first_ms)

    def realised_vol(self) -> float | None:
        """Annualised realised volatility over the window; None with fewer than three prices."""
        if self._count < 3 or self._last_ms is None:
            return None
        first_ms, _, into_first = self._firsts[self._head]
        span = self._last_ms - first_ms
        if span <= 0:
            return None
        return math.sqrt(max(self._sum - into_first, 0.0) / span * YEAR_MS)
