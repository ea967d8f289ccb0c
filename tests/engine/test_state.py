"""The core's state as data: for each class, an object restored from the Avro round trip of
another's ``state()`` behaves like it on any further events, and ends in the same state.

Every test runs random events into an object A, restores B from ``state()`` written and read
back with ``fastavro.schemaless_writer`` / ``schemaless_reader`` and the schema of
``pipelines/engine/state_schema.py``, feeds both the same further events, and compares what
they return and their states after.
"""

from __future__ import annotations

import io
import math
from typing import Any

import fastavro
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.detect.windows import HeldCondition, RollingExtremes, RollingTwap, Sample, Watermark
from pipelines.engine.state_schema import parse


def round_trip(name: str, state: dict) -> dict:
    """``state`` written with the schema ``name`` and read back."""
    schema = parse(name)
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, state)
    out.seek(0)
    return fastavro.schemaless_reader(out, schema, None)


def plain(value: Any) -> bool:
    """Whether ``value`` is plain data: str, int, float, bool, None, lists and str-keyed dicts."""
    if isinstance(value, list):
        return all(plain(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and plain(item) for key, item in value.items())
    return value is None or type(value) in (str, int, float, bool)


# ---------------------------------------------------------------------------- windows

times = st.lists(st.tuples(st.integers(-300, 400), st.integers(-3, 3)), max_size=60)


@given(st.integers(0, 500), times, times)
def test_a_restored_watermark_admits_as_the_original(lateness: int, before: list, after: list) -> None:
    a = Watermark(lateness)
    t = 0
    for step, _ in before:
        t += step
        a.admit(t)
    b = Watermark.from_state(round_trip("WatermarkState", a.state()))
    assert plain(a.state()) and b.state() == a.state()
    for step, _ in after:
        t += step
        assert b.admit(t) == a.admit(t)
    assert b.state() == a.state()


conditions = st.lists(st.tuples(st.integers(0, 2_000), st.booleans(), st.booleans()), max_size=40)


@given(st.integers(0, 3_000), conditions, conditions)
def test_a_restored_held_condition_fires_and_clears_as_the_original(hold_ms: int, before: list, after: list) -> None:
    a = HeldCondition(hold_ms)
    t = 0
    for step, triggered, cleared in before:
        t += step
        a.update(t, triggered, cleared)
    b = HeldCondition.from_state(round_trip("HeldConditionState", a.state()))
    assert plain(a.state()) and b.state() == a.state()
    for step, triggered, cleared in after:
        t += step
        assert b.update(t, triggered, cleared) == a.update(t, triggered, cleared)
    assert b.state() == a.state()


def samples_from(steps: list[tuple[int, int]], start: int = 0) -> list[Sample]:
    """Samples from (step, value) pairs: a negative step is an event that late (it may be refused)."""
    newest, out = start, []
    for n, (step, value) in enumerate(steps):
        t = max(0, newest + step)
        newest = max(newest, t)
        out.append(Sample(t, 100.0 + value, f"s{start}:{n}"))
    return out


def extremes_outputs(window: RollingExtremes, samples: list[Sample]) -> list:
    out = []
    for sample in samples:
        added = window.add(sample)
        t = sample.event_time_ms
        out.append((added, window.extremes(t), window.start_ms(t)) if added else (added,))
    return out


def twap_outputs(window: RollingTwap, samples: list[Sample]) -> list:
    out = []
    for sample in samples:
        added = window.add(sample)
        out.append((added, window.average(sample.event_time_ms), window.start_ms(sample.event_time_ms))
                   if added else (added,))
    return out


window_params = st.tuples(st.sampled_from([1, 10, 1_000, 5_000]), st.integers(0, 500), st.sampled_from([1, 7, 360]))


@settings(max_examples=150)
@given(window_params, times, times)
def test_a_restored_window_of_extremes_answers_as_the_original(params: tuple, before: list, after: list) -> None:
    a = RollingExtremes(*params)
    samples = samples_from(before + after)
    extremes_outputs(a, samples[:len(before)])
    b = RollingExtremes.from_state(round_trip("RollingExtremesState", a.state()))
    assert plain(a.state()) and b.state() == a.state()
    assert extremes_outputs(b, samples[len(before):]) == extremes_outputs(a, samples[len(before):])
    assert b.state() == a.state()


@settings(max_examples=150)
@given(window_params, times, times)
def test_a_restored_twap_window_answers_as_the_original(params: tuple, before: list, after: list) -> None:
    """Exactly: the running sums recomputed on restore are the floats the original holds."""
    a = RollingTwap(*params)
    samples = samples_from(before + after)
    twap_outputs(a, samples[:len(before)])
    b = RollingTwap.from_state(round_trip("RollingTwapState", a.state()))
    assert plain(a.state()) and b.state() == a.state()
    assert twap_outputs(b, samples[len(before):]) == twap_outputs(a, samples[len(before):])
    assert b.state() == a.state()
    assert b._sums == a._sums  # derived on restore, so not in the state: compared here


def test_nan_and_infinities_survive_the_round_trip() -> None:
    window = RollingTwap(10_000, 100, 1)
    for n, value in enumerate([math.inf, -math.inf, math.nan, 1.0]):
        window.add(Sample(n * 400, value, f"s{n}"))
    state = window.state()
    assert [sample["value"] for sample in state["recent"]][:2] == [math.inf, -math.inf]
    assert math.isnan(state["recent"][2]["value"])
    assert repr(round_trip("RollingTwapState", state)) == repr(state)  # repr: nan != nan
