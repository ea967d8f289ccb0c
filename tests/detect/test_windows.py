from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from pipelines.detect.windows import HeldCondition, RollingWindow, Sample, Watermark


def test_watermark_rejects_events_older_than_lateness() -> None:
    mark = Watermark(allowed_lateness_ms=1000)
    assert mark.admit(10_000)
    assert mark.admit(9_500)  # out of order but within lateness
    assert mark.now_ms == 10_000
    assert not mark.admit(8_999)
    assert mark.now_ms == 10_000


@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=60), st.randoms())
def test_rolling_window_content_does_not_depend_on_arrival_order(times: list[int], rnd: random.Random) -> None:
    in_order, shuffled = RollingWindow(3_000, allowed_lateness_ms=20_000), RollingWindow(3_000, allowed_lateness_ms=20_000)
    samples = [Sample(t, float(i), f"e{i}") for i, t in enumerate(sorted(times))]
    for sample in samples:
        in_order.add(sample)
    mixed = samples[:]
    rnd.shuffle(mixed)
    for sample in mixed:
        shuffled.add(sample)
    end = max(times)
    assert sorted(s.ref for s in in_order.ending_at(end)) == sorted(s.ref for s in shuffled.ending_at(end))
    assert all(end - 3_000 < s.event_time_ms <= end for s in in_order.ending_at(end))


def test_rolling_window_evicts_what_can_no_longer_matter() -> None:
    window = RollingWindow(1_000, allowed_lateness_ms=500)
    for t in range(0, 10_000, 100):
        window.add(Sample(t, 1.0, str(t)))
    assert len(window) <= 16


def test_held_condition_fires_after_hold_and_does_not_flap() -> None:
    held = HeldCondition(hold_ms=3_000)
    assert held.update(0, triggered=True, cleared=False) is None
    assert held.update(2_000, triggered=False, cleared=False) is None  # between thresholds: still pending
    assert held.update(3_000, triggered=True, cleared=False) == "fire"
    assert held.update(4_000, triggered=True, cleared=False) is None  # reported once
    assert held.update(5_000, triggered=False, cleared=False) is None  # hovering: no clear
    assert held.update(6_000, triggered=False, cleared=True) == "clear"
    assert held.update(7_000, triggered=True, cleared=False) is None  # pending again from scratch


def test_held_condition_resets_when_cleared_before_hold() -> None:
    held = HeldCondition(hold_ms=3_000)
    held.update(0, triggered=True, cleared=False)
    held.update(1_000, triggered=False, cleared=True)
    assert held.update(3_500, triggered=True, cleared=False) is None
    assert held.update(6_500, triggered=True, cleared=False) == "fire"


@given(st.lists(st.tuples(st.integers(0, 400), st.integers(-3, 3)), min_size=1, max_size=120), st.randoms())
def test_extremes_match_a_scan_of_the_window(steps: list[tuple[int, int]], rnd: random.Random) -> None:
    """The monotonic queues give what a scan gives — the earliest highest and lowest sample —
    for in-order samples and for late ones (which rebuild the queues), with ties and evictions."""
    window = RollingWindow(length_ms=1_000, allowed_lateness_ms=300)
    newest = 0
    for n, (gap, value) in enumerate(steps):
        late = rnd.random() < 0.2
        t = max(0, newest - rnd.randint(0, 300)) if late else newest + gap
        newest = max(newest, t)
        window.add(Sample(t, float(value), f"s{n}"))
        samples = window.ending_at(t)
        high = max(samples, key=lambda s: s.value)  # max/min keep the first of equals
        low = min(samples, key=lambda s: s.value)
        assert window.extremes(t) == (high, low)
