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


class IndexHistory:
    def __init__(self) -> None:
        self._starts: list[int] = []  # per second held: where it starts,
        self._firsts: list[tuple[int, float, float]] = []  # its first tick (time, price, squared return into it),
        self._squares: list[float] = []  # the squared log returns into its ticks,
        self._counts: list[int] = []  # and how many ticks it had
        self._sum = 0.0  # of _squares
        self._count = 0  # of _counts
        self._last: tuple[int, float] | None = None  # the newest tick
        # Partials (Shewchuk) whose exact sum is that of ``_squares``: ``math.fsum`` of these few is the
        # ``math.fsum`` of the seconds, both being the correctly rounded exact sum. A cache, built
        # from ``_squares`` when unset (``from_state`` leaves it unset).
        self._exact: list[float] | None = None

    def append(self, time_ms: int, price: float) -> None:
        """Add the newest index price and drop the seconds that left the window; a price older
        than the newest held (an input's out-of-order event) is not history any more and is ignored."""
        last = self._last
        if last is not None and time_ms < last[0]:
            return
        if last is not None and price > 0 and last[1] > 0:
            squared = (math.log(price) - math.log(last[1])) ** 2  # a ratio could underflow to 0
        else:
            squared = 0.0
        self._last = (time_ms, price)
        start = time_ms - time_ms % BUCKET_MS
        exact = self._exact if self._exact is not None else self._partials()
        if self._starts and self._starts[-1] == start:
            before = self._squares[-1]
            self._squares[-1] += squared
            _add_exact(exact, self._squares[-1])
            _add_exact(exact, 0.0 - before)
            self._counts[-1] += 1
        else:
            self._starts.append(start)
            self._firsts.append((time_ms, price, squared))
            self._squares.append(squared)
            _add_exact(exact, squared)
            self._counts.append(1)
        self._sum += squared
        self._count += 1
        horizon = time_ms - REALISED_WINDOW_MS
        horizon -= horizon % BUCKET_MS
        if self._starts[0] < horizon:
            cut = bisect.bisect_left(self._starts, horizon)
            for squared in self._squares[:cut]:
                _add_exact(exact, 0.0 - squared)
            self._count -= sum(self._counts[:cut])
            del self._starts[:cut], self._firsts[:cut], self._squares[:cut], self._counts[:cut]
            self._sum = math.fsum(exact)  # = math.fsum(self._squares)

    def state(self) -> dict:
        """The history as plain data (``IndexHistoryState``): the running sum as it stands, not
        re-added, so a restored history gives the same floats."""
        return {"seconds": [{"start_ms": start, "first_ms": first[0], "first_price": first[1],
                             "first_squared": first[2], "squared": squared, "ticks": ticks}
                            for start, first, squared, ticks in zip(self._starts, self._firsts, self._squares,
                                                                    self._counts)],
                "sum": self._sum, "count": self._count,
                "last": None if self._last is None else {"time_ms": self._last[0], "price": self._last[1]}}

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
        history._last = None if last is None else (last["time_ms"], last["price"])
        return history

    def _partials(self) -> list[float]:
        """Set and return ``_exact`` for the seconds held."""
        exact: list[float] = []
        for squared in self._squares:
            _add_exact(exact, squared)
        self._exact = exact
        return exact

    def __len__(self) -> int:
        """Ticks in the window."""
        return self._count

    def velocity(self, time_ms: int) -> float:
        """USD per ms between the first and the last price of the last ``VELOCITY_WINDOW_MS``;
        0 until the prices span ``VELOCITY_MIN_SPAN_MS`` (a few ticks after a start or a gap in
        the feed would otherwise project a breach from noise)."""
        since = time_ms - VELOCITY_WINDOW_MS
        first = bisect.bisect_left(self._starts, since - since % BUCKET_MS)
        if first == len(self._starts) or self._last is None:
            return 0.0
        first_ms, first_price, _ = self._firsts[first]
        last_ms, last_price = self._last
        if last_ms - first_ms < VELOCITY_MIN_SPAN_MS:
            return 0.0
        return (last_price - first_price) / (last_ms - first_ms)

    def realised_vol(self) -> float | None:
        """Annualised realised volatility over the window; None with fewer than three prices."""
        if self._count < 3 or self._last is None:
            return None
        first_ms, _, into_first = self._firsts[0]
        span = self._last[0] - first_ms
        if span <= 0:
            return None
        return math.sqrt(max(self._sum - into_first, 0.0) / span * YEAR_MS)


def _add_exact(partials: list[float], x: float) -> None:
    """Add ``x`` to ``partials``, non-overlapping floats in increasing magnitude whose sum is kept
    exact (Shewchuk's algorithm, as in ``math.fsum``; Python's ``msum`` recipe)."""
    i = 0
    for y in partials:
        if abs(x) < abs(y):
            x, y = y, x
        high = x + y
        low = y - (high - x)
        if low:
            partials[i] = low
            i += 1
        x = high
    partials[i:] = [x]
