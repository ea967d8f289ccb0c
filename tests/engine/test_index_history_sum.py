"""The index history's running sum is kept as an exact integer instead of re-adding every second
held whenever one leaves the window; it must be the very float the re-adding gave, tick after
tick, also across a restore."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.engine.index_history import BUCKET_MS, REALISED_WINDOW_MS, IndexHistory


class ReaddedSum:
    """The running sum and count as the history defines them: ``math.fsum`` and ``sum`` of the
    seconds held, taken whenever seconds leave the window; plain additions in between."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.squares: list[float] = []
        self.counts: list[int] = []
        self.total, self.count = 0.0, 0
        self.last: tuple[int, float] | None = None

    def append(self, t: int, price: float) -> None:
        if self.last is not None and t < self.last[0]:
            return
        squared = (math.log(price) - math.log(self.last[1])) ** 2 if self.last is not None else 0.0
        self.last = (t, price)
        start = t - t % BUCKET_MS
        if self.starts and self.starts[-1] == start:
            self.squares[-1] += squared
            self.counts[-1] += 1
        else:
            self.starts.append(start)
            self.squares.append(squared)
            self.counts.append(1)
        self.total += squared
        self.count += 1
        horizon = t - REALISED_WINDOW_MS
        horizon -= horizon % BUCKET_MS
        cut = sum(1 for s in self.starts if s < horizon)
        if cut:
            del self.starts[:cut], self.squares[:cut], self.counts[:cut]
            self.total, self.count = math.fsum(self.squares), sum(self.counts)


# gaps within a second, across seconds and across the whole window; prices over many magnitudes, and
# moves of one unit in the last place (squared log returns near 1e-32: the exact sum's scale refines)
STEPS = st.lists(st.tuples(st.one_of(st.integers(-300, 400), st.integers(0, 3_000), st.integers(0, 400_000)),
                           st.one_of(st.just(1.0), st.floats(0.999, 1.001), st.floats(1e-3, 1e3),
                                     st.sampled_from([1.0 + 2.0 ** -52, 1.0 - 2.0 ** -53]))),
                 min_size=1, max_size=400)


@settings(max_examples=200, deadline=None)
@given(STEPS, st.integers(0, 400))
def test_the_running_sum_is_the_readded_sum_bit_for_bit(steps: list[tuple[int, float]], restore_at: int) -> None:
    history, reference, t, price = IndexHistory(), ReaddedSum(), 0, 100.0
    for k, (gap, factor) in enumerate(steps):
        if k == restore_at:  # from its plain data, as a checkpoint carries it (without the exact sum)
            history = IndexHistory.from_state(history.state())
        t, price = t + gap, price * factor
        history.append(t, price)
        reference.append(t, price)
        state = history.state()
        assert (state["sum"], state["count"]) == (reference.total, reference.count), k
        assert math.copysign(1.0, state["sum"]) == 1.0

