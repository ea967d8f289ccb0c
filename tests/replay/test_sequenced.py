from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.engine.engine import EngineParams
from pipelines.engine.shard import Shard
from pipelines.policy.signing import SigningKey
from pipelines.replay.inprocess import messages, sequenced

KEY = SigningKey("test", b"test-signing-key-16")
PARAMS = EngineParams(compiled=False)  # the shard's sequencer waits 5 s for a late event
INPUTS = [("backstop.positions", 0), ("backstop.market.index", 0), ("backstop.market.index", 1),
          ("backstop.market.mark", 2), ("backstop.collateral", 1)]

# per row: its input, how its offset moves (back: a redelivery) and its event time (back: out of order or late)
ROW = st.tuples(st.integers(0, len(INPUTS) - 1), st.integers(-2, 3), st.integers(-8, 3))  # time steps: 1 s


def through_the_shard(rows: list) -> list[tuple[str, dict, str]]:
    """What one shard hands its engine: each message pushed, then everything drained."""
    shard = Shard(0, 1, KEY, PARAMS)
    for _, message in messages(rows, 1):
        shard.push(message)
    shard.idle_all()
    return [(m.record, m.value, m.ref) for m in shard.sequencer.pop_ready()]


@settings(max_examples=300, deadline=None)
@given(st.lists(ROW, max_size=60))
def test_sequenced_is_what_one_shard_releases(steps: list[tuple[int, int, int]]) -> None:
    """Rows of five inputs, with redeliveries (an offset at or below its input's last), events out of
    order within the lateness and late beyond it, and equal times across inputs: ``sequenced``
    gives the records, in the order, that ``Shard.push`` of each message and a drain give."""
    offsets = dict.fromkeys(INPUTS, 0)
    times = dict.fromkeys(INPUTS, 1_000_000)
    rows = []
    for i, (which, offset_step, time_step) in enumerate(steps):
        source = INPUTS[which]
        offsets[source] += offset_step
        times[source] += time_step * 1_000
        rows.append((*source, offsets[source], "IndexPrice", {"event_time_ms": times[source], "row": i}))
    assert sequenced(rows, PARAMS.detectors.allowed_lateness_ms) == through_the_shard(rows)


def test_sequenced_leaves_out_redeliveries_and_late_rows_and_orders_the_rest() -> None:
    index, mark = ("backstop.market.index", 0), ("backstop.market.mark", 0)
    rows = [(*index, 0, "IndexPrice", {"event_time_ms": 10_000}),
            (*mark, 0, "MarkPrice", {"event_time_ms": 9_000}),
            (*index, 0, "IndexPrice", {"event_time_ms": 10_000}),  # redelivered
            (*index, 1, "IndexPrice", {"event_time_ms": 4_000}),  # 6 s behind its input: late
            (*index, 2, "IndexPrice", {"event_time_ms": 5_000}),  # 5 s behind: at its input's place
            (*mark, 1, "MarkPrice", {"event_time_ms": 10_000})]
    assert [ref for _, _, ref in sequenced(rows, 5_000)] == [
        "backstop.market.mark:0:0", "backstop.market.index:0:0", "backstop.market.index:0:2",
        "backstop.market.mark:0:1"]
    assert sequenced(rows, 5_000) == through_the_shard(rows)
