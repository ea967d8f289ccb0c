from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.detect.sequencer import Sequencer

STREAMS = st.dictionaries(
    st.sampled_from(["positions/0", "positions/1", "index/0", "vol/0"]),
    st.lists(st.integers(0, 5_000), max_size=40),
    min_size=1,
)


def run(streams: dict[str, list[int]], rnd: random.Random | None, lateness: int) -> tuple[list, int]:
    """Feed every input in its own order, interleaved by ``rnd`` (None: one input after another),
    popping whatever is ready after each push, as a Kafka shell would."""
    seq = Sequencer(allowed_lateness_ms=lateness)
    for name in streams:
        seq.add_input(name)
    cursors = {name: 0 for name, times in streams.items() if times}
    for name in set(streams) - set(cursors):
        seq.close(name)
    out = []
    while cursors:
        name = rnd.choice(sorted(cursors)) if rnd else sorted(cursors)[0]
        index = cursors[name]
        seq.push(name, streams[name][index], (name, index))
        out += seq.pop_ready()
        cursors[name] = index + 1
        if cursors[name] == len(streams[name]):
            del cursors[name]
            seq.close(name)
            out += seq.pop_ready()
    return out + seq.pop_ready(), seq.late_events


@settings(max_examples=150)
@given(STREAMS, st.randoms(), st.integers(0, 2_000))
def test_release_order_does_not_depend_on_interleaving(streams, rnd, lateness) -> None:
    assert run(streams, rnd, lateness) == run(streams, None, lateness)


@given(STREAMS)
def test_in_order_inputs_come_out_sorted_by_time_and_nothing_is_lost(streams) -> None:
    ordered = {name: sorted(times) for name, times in streams.items()}
    out, late = run(ordered, None, 0)
    assert late == 0
    assert len(out) == sum(len(t) for t in ordered.values())
    times = [ordered[name][i] for name, i in out]
    assert times == sorted(times)


@given(STREAMS, st.integers(1, 7), st.booleans())
def test_a_limited_pop_releases_the_same_events_in_the_same_order(streams, limit, quiet) -> None:
    """Released a few at a time (a worker that lets its event loop breathe) or all at once:
    the same events in the same order, up to what the open inputs allow (everything, once
    they are all idle)."""
    chunked, whole = Sequencer(), Sequencer()
    for name, times in streams.items():
        for index, t in enumerate(times):
            chunked.push(name, t, (name, index))
            whole.push(name, t, (name, index))
    for seq in (chunked, whole):
        if quiet:
            seq.idle_all()
    out: list = []
    while chunk := chunked.pop_ready(limit):
        assert len(chunk) <= limit
        out += chunk
    assert out == whole.pop_ready() and len(chunked) == len(whole)
    assert len(whole) == 0 or not quiet


def test_waits_for_the_slowest_open_input_and_idle_releases_it() -> None:
    seq = Sequencer()
    seq.add_input("a")
    seq.add_input("b")
    seq.push("a", 10, "a10")
    seq.push("a", 20, "a20")
    assert seq.pop_ready() == []  # b has said nothing yet
    seq.push("b", 15, "b15")
    assert seq.pop_ready() == ["a10", "b15"]  # a is at 20 already: nothing can come before b15
    seq.push("b", 25, "b25")
    assert seq.pop_ready() == ["a20"]
    seq.idle("a")
    assert seq.pop_ready() == ["b25"]  # only b counts now
    seq.push("a", 25, "a25")  # a speaks again, at b's time: it ranks first, so it comes first
    seq.push("b", 30, "b30")
    assert seq.pop_ready() == ["a25"]  # b25 went already; b30 waits for a to move past 30
    seq.close("a")
    seq.close("b")
    assert seq.pop_ready() == ["b30"]


def test_bound_names_the_input_a_held_event_waits_for() -> None:
    seq = Sequencer()
    seq.add_input("a")
    seq.add_input("b")
    assert seq.bound() == ("a", -(2**63)) and seq.head_time() is None  # neither has spoken: a ranks first
    seq.push("a", 10, "a10")
    seq.push("a", 20, "a20")
    assert seq.bound() == ("b", -(2**63)) and seq.head_time() == 10  # b has said nothing: it holds a10
    seq.push("b", 15, "b15")
    assert seq.bound() == ("b", 15)
    seq.push("b", 20, "b20")
    assert seq.bound() == ("a", 20)  # a tie goes to the input that ranks first
    seq.idle("a")
    seq.idle("b")
    assert seq.bound() is None  # nothing bounds: everything is released
    assert seq.pop_ready() == ["a10", "b15", "a20", "b20"] and seq.head_time() is None


def test_an_event_at_the_limit_waits_for_an_input_that_ranks_before_it() -> None:
    seq = Sequencer()
    seq.push("a", 10, "a10")
    seq.push("b", 10, "b10")
    seq.push("c", 12, "c12")
    assert seq.pop_ready() == ["a10"]  # a may still send another 10, which would come before b10
    seq.push("a", 11, "a11")
    assert seq.pop_ready() == ["b10"]  # b is the slowest now and first at its time: a10, b10 then a11
    seq.push("b", 12, "b12")
    assert seq.pop_ready() == ["a11"]


def test_late_event_is_refused_per_input() -> None:
    seq = Sequencer(allowed_lateness_ms=100)
    seq.push("a", 1_000, "x")
    assert seq.push("a", 950, "within lateness")
    assert not seq.push("a", 850, "too late")
    assert seq.late_events == 1


def test_an_in_order_event_waits_for_the_other_inputs_not_for_the_lateness_allowance() -> None:
    """The allowance only bounds how far an input may run out of order: an event every input
    has moved past goes at once, however large it is (a live worker would otherwise hold every
    event back by it)."""
    seq = Sequencer(allowed_lateness_ms=5_000)
    seq.push("a", 1_000, "a1000")
    seq.push("b", 1_001, "b1001")
    assert seq.pop_ready() == ["a1000"]
    seq.push("a", 1_002, "a1002")
    assert seq.pop_ready() == ["b1001"]


def test_an_out_of_order_event_keeps_its_place_in_its_input() -> None:
    seq = Sequencer(allowed_lateness_ms=100)
    seq.push("a", 1_000, "a1000")
    assert seq.push("a", 950, "a950")  # within the allowance: accepted, after a1000 where it arrived
    seq.push("b", 990, "b990")
    seq.push("b", 1_001, "b1001")
    assert seq.pop_ready() == ["b990", "a1000", "a950"]


NAMES = ["positions/0", "index/0", "index/1", "vol/0"]
OPERATIONS = st.lists(st.one_of(
    st.tuples(st.just("push"), st.sampled_from(NAMES), st.integers(0, 1_000)),
    st.tuples(st.sampled_from(["add", "idle", "close"]), st.sampled_from(NAMES), st.just(0)),
    st.just(("idle_all", "", 0)),
), max_size=60)


@settings(max_examples=300)
@given(OPERATIONS, st.integers(0, 300))
def test_the_bound_is_always_the_slowest_open_speaking_input(operations, lateness) -> None:
    """``bound()`` is kept between calls (it was a scan of every input per release); after any
    sequence of calls it must name what a scan of the inputs names: of the open inputs not
    idle, the one with the oldest newest event time, the first by name on a tie."""
    seq = Sequencer(lateness)
    newest: dict[str, int] = {}
    open_, idle = set(), set()
    for op, name, t in operations:
        if op in ("add", "push") and name not in newest:
            newest[name] = -(2**63)
            open_.add(name)
        if op == "push":
            idle.discard(name)
            if seq.push(name, t, None):
                newest[name] = max(newest[name], t)
        elif op == "add":
            seq.add_input(name)
        elif op == "idle":
            seq.idle(name)
            idle.add(name)
        elif op == "idle_all":
            seq.idle_all()
            idle |= open_
        else:
            seq.close(name)
            open_.discard(name)
            idle.discard(name)
        speaking = sorted((newest[n], repr(n), n) for n in open_ - idle)
        assert seq.bound() == ((speaking[0][2], speaking[0][0]) if speaking else None)
