"""Recent index prices of one underlying: its velocity and realised volatility, kept incrementally.

The ladder's predictive margin call needs the index velocity (over ``VELOCITY_WINDOW_MS``) and
the adaptive add-on the realised vol (over ``REALISED_WINDOW_MS``) on every revaluation tick,
while the history holds every index tick of five minutes — tens of thousands on a busy feed.
Both are therefore kept as running quantities (a bisect for the velocity's start, a running
sum of squared log returns) instead of a pass over the history per tick. The running sum is
re-added exactly (``math.fsum``) once as many returns have left as the history holds, so
rounding never accumulates; the same events always give the same figures.
"""

from __future__ import annotations

import bisect
import math

YEAR_MS = 365.0 * 86_400_000.0
VELOCITY_WINDOW_MS = 60_000
VELOCITY_MIN_SPAN_MS = 10_000  # a trend read off less than this is noise, not a trend
REALISED_WINDOW_MS = 5 * 60_000


class IndexHistory:
    def __init__(self) -> None:
        self._times: list[int] = []
        self._prices: list[float] = []
        self._squared: list[float] = []  # squared log return into each sample (0 for the first)
        self._start = 0  # index of the oldest sample still in the window
        self._sum = 0.0  # of _squared[_start + 1:]
        self._evicted = 0

    def append(self, time_ms: int, price: float) -> None:
        """Add the newest index price and drop what left the window; a price older than the
        newest held (an input's out-of-order event) is not history any more and is ignored."""
        if self._times and time_ms < self._times[-1]:
            return
        if self._times and price > 0 and self._prices[-1] > 0:
            squared = (math.log(price) - math.log(self._prices[-1])) ** 2  # a ratio could underflow to 0
        else:
            squared = 0.0
        self._times.append(time_ms)
        self._prices.append(price)
        self._squared.append(squared)
        if len(self._times) - self._start > 1:
            self._sum += squared
        horizon = time_ms - REALISED_WINDOW_MS
        while self._times[self._start] < horizon:
            self._start += 1
            self._sum -= self._squared[self._start]
            self._evicted += 1
        if self._evicted >= len(self._times) - self._start:
            self._compact()

    def _compact(self) -> None:
        """Forget evicted samples and re-add the running sum exactly."""
        del self._times[:self._start], self._prices[:self._start], self._squared[:self._start]
        self._start = self._evicted = 0
        self._sum = math.fsum(self._squared[1:])

    def __len__(self) -> int:
        return len(self._times) - self._start

    def velocity(self, time_ms: int) -> float:
        """USD per ms between the first and the last price of the last ``VELOCITY_WINDOW_MS``;
        0 until the prices span ``VELOCITY_MIN_SPAN_MS`` (a few ticks after a start or a gap in
        the feed would otherwise project a breach from noise)."""
        first = max(self._start, bisect.bisect_left(self._times, time_ms - VELOCITY_WINDOW_MS))
        if len(self._times) - first < 2 or self._times[-1] - self._times[first] < VELOCITY_MIN_SPAN_MS:
            return 0.0
        return (self._prices[-1] - self._prices[first]) / (self._times[-1] - self._times[first])

    def realised_vol(self) -> float | None:
        """Annualised realised volatility over the window; None with fewer than three prices."""
        if len(self) < 3:
            return None
        span = self._times[-1] - self._times[self._start]
        if span <= 0:
            return None
        return math.sqrt(max(self._sum, 0.0) / span * YEAR_MS)
