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


def test_waits_for_the_slowest_open_input_and_idle_releases_it() -> None:
    seq = Sequencer()
    seq.add_input("a")
    seq.add_input("b")
    seq.push("a", 10, "a10")
    seq.push("a", 20, "a20")
    assert seq.pop_ready() == []  # b has said nothing yet
    seq.push("b", 15, "b15")
    assert seq.pop_ready() == ["a10"]
    seq.idle("b")
    assert seq.pop_ready() == ["b15"]  # only a counts now; a is at 20, so < 20 goes
    seq.close("a")
    seq.close("b")
    assert seq.pop_ready() == ["a20"]


def test_late_event_is_refused_per_input() -> None:
    seq = Sequencer(allowed_lateness_ms=100)
    seq.push("a", 1_000, "x")
    assert seq.push("a", 950, "within lateness")
    assert not seq.push("a", 850, "too late")
    assert seq.late_events == 1
