from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.engine.index_history import (
    BUCKET_MS,
    REALISED_WINDOW_MS,
    VELOCITY_MIN_SPAN_MS,
    VELOCITY_WINDOW_MS,
    YEAR_MS,
    IndexHistory,
)


def brute(ticks: list[tuple[int, float]], now: int) -> tuple[float, float | None]:
    """Velocity and realised vol straight from the definitions, over the ticks since the start of
    the second each window begins in."""
    def since(t: int) -> int:
        return t - t % BUCKET_MS

    kept = [(t, p) for t, p in ticks if t >= since(ticks[-1][0] - REALISED_WINDOW_MS)]
    recent = [(t, p) for t, p in kept if t >= since(now - VELOCITY_WINDOW_MS)]
    velocity = 0.0
    if len(recent) >= 2 and recent[-1][0] - recent[0][0] >= VELOCITY_MIN_SPAN_MS:
        velocity = (recent[-1][1] - recent[0][1]) / (recent[-1][0] - recent[0][0])
    span = kept[-1][0] - kept[0][0]
    if len(kept) < 3 or span <= 0:
        return velocity, None
    returns = np.diff(np.log([p for _, p in kept]))
    return velocity, math.sqrt(float(np.sum(returns ** 2)) / span * YEAR_MS)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.integers(0, 1_500), st.integers(0, 40_000)), st.floats(0.5, 2.0)),
                min_size=1, max_size=200))
def test_running_figures_match_the_definitions(steps: list[tuple[int, float]]) -> None:
    history, ticks, t, price = IndexHistory(), [], 0, 100.0
    for gap, factor in steps:
        t, price = t + gap, price * factor
        history.append(t, price)
        ticks.append((t, price))
        velocity, vol = brute(ticks, t)
        assert history.velocity(t) == pytest.approx(velocity, rel=1e-12, abs=1e-15)
        assert (history.realised_vol() is None) == (vol is None)
        if vol is not None:
            assert history.realised_vol() == pytest.approx(vol, rel=1e-9, abs=1e-12)
