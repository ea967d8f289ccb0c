from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.detect.windows import HeldCondition, RollingExtremes, RollingTwap, Sample, Watermark


def test_watermark_rejects_events_older_than_lateness() -> None:
    mark = Watermark(allowed_lateness_ms=1000)
    assert mark.admit(10_000)
    assert mark.admit(9_500)  # out of order but within lateness
    assert mark.now_ms == 10_000
    assert not mark.admit(8_999)
    assert mark.now_ms == 10_000


def in_window(samples: list[Sample], length_ms: int, bucket_ms: int, end_ms: int) -> list[Sample]:
    """The reference: every sample from the start of the bucket of ``end - length + 1`` to ``end``."""
    start = (end_ms - length_ms + 1) // bucket_ms * bucket_ms
    return sorted((s for s in samples if start <= s.event_time_ms <= end_ms), key=lambda s: s.event_time_ms)


def twap(samples: list[Sample]) -> float:
    """The reference time-weighted average: each value until the next sample, the last for 1 ms."""
    spans = [b.event_time_ms - a.event_time_ms for a, b in zip(samples, samples[1:])] + [1]
    return sum(s.value * span for s, span in zip(samples, spans)) / sum(spans)


def arrivals(steps: list[tuple[int, int]], rnd: random.Random, lateness_ms: int) -> list[Sample]:
    """Samples from (gap, value) steps, a fifth of them late by up to ``lateness_ms``."""
    newest, out = 0, []
    for n, (gap, value) in enumerate(steps):
        t = max(0, newest - rnd.randint(0, lateness_ms)) if rnd.random() < 0.2 else newest + gap
        newest = max(newest, t)
        out.append(Sample(t, float(value), f"s{n}"))
    return out


window_steps = st.lists(st.tuples(st.integers(0, 400), st.integers(-3, 3)), min_size=1, max_size=150)


@given(window_steps, st.randoms(), st.sampled_from([1, 7, 50, 250]))
def test_extremes_match_a_scan_of_the_window(steps: list[tuple[int, int]], rnd: random.Random, buckets: int) -> None:
    """What settled buckets and monotonic queues give is what a scan of every sample gives —
    the earliest highest and lowest — in order and late, with ties, evictions and any bucket size."""
    window = RollingExtremes(length_ms=1_000, allowed_lateness_ms=300, buckets=buckets)
    seen: list[Sample] = []
    for sample in arrivals(steps, rnd, 300):
        window.add(sample)
        seen.append(sample)
        samples = in_window(seen, 1_000, window.bucket_ms, sample.event_time_ms)
        high = max(samples, key=lambda s: s.value)  # max/min keep the first of equals
        low = min(samples, key=lambda s: s.value)
        assert window.extremes(sample.event_time_ms) == (high, low)
        assert window.start_ms(sample.event_time_ms) == max((sample.event_time_ms - 999) // window.bucket_ms
                                                            * window.bucket_ms, min(s.event_time_ms for s in seen))


@given(window_steps, st.randoms(), st.sampled_from([1, 7, 50, 250]))
def test_twap_matches_a_scan_of_the_window(steps: list[tuple[int, int]], rnd: random.Random, buckets: int) -> None:
    window = RollingTwap(length_ms=1_000, allowed_lateness_ms=300, buckets=buckets)
    seen: list[Sample] = []
    for sample in arrivals([(gap, value + 100) for gap, value in steps], rnd, 300):
        window.add(sample)
        seen.append(sample)
        expected = twap(in_window(seen, 1_000, window.bucket_ms, sample.event_time_ms))
        assert window.average(sample.event_time_ms) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("window_class", [RollingExtremes, RollingTwap])
def test_a_window_stops_growing_once_it_is_full(window_class) -> None:
    """Two hours of a steady fall at 50 ticks a second into an hour's window — the worst case
    for a window of extremes, where every tick is the high of some later window: what a
    checkpoint carries of it (its ``state()``) stops growing after the hour, far below the
    hour's samples."""
    window = window_class(3_600_000, allowed_lateness_ms=5_000)
    sizes, hour = [], []
    for n in range(2 * 3_600 * 50):
        sample = Sample(n * 20, 1e5 - n / 50, f"backstop.market.index:0:{n}")
        window.add(sample)
        if n < 3_600 * 50:
            hour.append(sample)
        if n % (1_800 * 50) == 0 and n >= 3_600 * 50:  # full from the hour on
            sizes.append(len(repr(window.state())))
    assert max(sizes) < 1.1 * min(sizes)
    assert max(sizes) < len(repr([sample.state() for sample in hour])) / 50


@pytest.mark.parametrize("window_class", [RollingExtremes, RollingTwap])
def test_a_sample_later_than_the_lateness_allows_is_refused(window_class) -> None:
    window = window_class(1_000, allowed_lateness_ms=100, buckets=10)
    assert window.add(Sample(5_000, 1.0, "a"))
    assert window.add(Sample(4_900, 2.0, "b"))  # within the allowance
    before = held_and_answered(window, 5_000)
    assert not window.add(Sample(4_899, 3.0, "c"))
    assert held_and_answered(window, 5_000) == before


def held_and_answered(window: RollingExtremes | RollingTwap, time_ms: int) -> tuple:
    """What ``window`` holds (its state) and what it answers for the window ending at ``time_ms``."""
    answer = window.extremes(time_ms) if isinstance(window, RollingExtremes) else window.average(time_ms)
    return window.state(), answer


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
