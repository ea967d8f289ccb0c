"""``Engine.on_events`` (a run of records at once, mark prices applied in one pass) gives exactly
what ``on_event`` gives one record at a time: the same breaches, actions and exposures in the
same order, and the same state after; and the in-process cluster, which feeds its engines in
batches, gives what a shard fed one message at a time gives."""

from __future__ import annotations

import gc
import random
from collections.abc import Iterable, Sequence
from typing import Any

import pytest

from bench import venue_feed
from pipelines.engine.engine import Engine, EngineOutput, EngineParams
from pipelines.engine.shard import Message, Shard
from pipelines.engine.shards import keep_for_shard
from pipelines.policy.signing import SigningKey
from pipelines.replay.inprocess import messages, replay_dicts
from pipelines.scenarios import library
from pipelines.scenarios.generate import generate

KEY = SigningKey("test", b"engine-test-signing-key-0123")
VENUE = venue_feed.FeedSpec(accounts=150, positions_per_account=4, options=40, seconds=4.0, crash=0.4)

Record = tuple[str, dict[str, Any], str]


def scenario_records(name: str) -> list[Record]:
    events = generate(library.get(name)).events
    return [(record, value, f"{topic}:{i}") for i, (topic, record, value) in enumerate(events)]


def venue_records() -> list[Record]:
    return [(record, value, f"{topic}:{i}") for i, (topic, record, value) in enumerate(venue_feed.feed(VENUE))]


def chunks(records: Sequence[Record], seed: int) -> Iterable[Sequence[Record]]:
    """``records`` cut into runs of random length (1 to 500), so runs start and end anywhere in a tick."""
    rng = random.Random(seed)
    start = 0
    while start < len(records):
        end = start + rng.randint(1, 500)
        yield records[start:end]
        start = end


def one_by_one(records: Sequence[Record]) -> tuple[Engine, EngineOutput]:
    engine, out = Engine(KEY, EngineParams()), EngineOutput()
    for record, value, ref in records:
        out.extend(engine.on_event(record, value, ref))
    out.extend(engine.flush())
    return engine, out


def batched(records: Sequence[Record], seed: int) -> tuple[Engine, EngineOutput]:
    engine, out = Engine(KEY, EngineParams()), EngineOutput()
    for run in chunks(records, seed):
        out.extend(engine.on_events(run))
    out.extend(engine.flush())
    return engine, out


def assert_same(a: EngineOutput, b: EngineOutput) -> None:
    # repr: exposures may hold NaN ratios, which == never matches
    assert [x.breach_id for x in a.breaches] == [x.breach_id for x in b.breaches]
    assert repr(a.breaches) == repr(b.breaches)
    assert repr(a.actions) == repr(b.actions)
    assert repr(a.exposures) == repr(b.exposures)


def assert_same_state(a: Engine, b: Engine) -> None:
    assert (a.events, a._last_time_ms, a._tick_end) == (b.events, b._last_time_ms, b._tick_end)
    assert repr(a.board.state()) == repr(b.board.state())
    assert repr(a.detectors.market_state()) == repr(b.detectors.market_state())
    assert a.circuits.state() == b.circuits.state()


@pytest.mark.parametrize("name", library.names())
def test_batches_give_the_one_by_one_outputs_on_every_scenario(name: str) -> None:
    records = scenario_records(name)
    reference_engine, reference = one_by_one(records)
    engine, out = batched(records, seed=len(name))
    assert reference.breaches or reference.actions  # a scenario that decides nothing would prove little
    assert_same(reference, out)
    assert_same_state(reference_engine, engine)


@pytest.mark.parametrize("seed", [0, 1])
def test_batches_give_the_one_by_one_outputs_on_the_venue_feed(seed: int) -> None:
    records = venue_records()
    reference_engine, reference = one_by_one(records)
    engine, out = batched(records, seed)
    assert reference.breaches and reference.exposures
    assert_same(reference, out)
    assert_same_state(reference_engine, engine)


def test_one_batch_of_everything_gives_the_one_by_one_outputs() -> None:
    records = scenario_records("may-2021")
    engine = Engine(KEY, EngineParams())
    out = engine.on_events(records)
    out.extend(engine.flush())
    assert_same(one_by_one(records)[1], out)


def test_a_mark_at_the_tick_end_revalues_before_it_is_applied() -> None:
    """The tick rule inside a run of marks: the mark at 250 ms closes the tick [0, 250) first, so
    that tick is valued at the implied vol before it, and the run is split there."""
    option, t0 = "BTC-27DEC30-100-C", 1_700_000_000_000  # a tick boundary
    base = {"underlying": "BTC", "instrument": option, "index_price": 100.0, "open_interest": None}
    records = [("IndexPrice", {"underlying": "BTC", "price": 100.0, "event_time_ms": t0}, "i"),
               ("CollateralUpdate", {"account": "a", "asset": "USDC", "amount": 1_000.0, "change": 1_000.0,
                                     "event_time_ms": t0}, "c"),
               ("PositionUpdate", {"account": "a", "instrument": option, "quantity": -8.0, "average_price": 10.0,
                                   "event_time_ms": t0}, "p"),
               *[("MarkPrice", {**base, "mark_price": 10.0, "mark_iv": iv, "event_time_ms": t0 + t}, f"m{t}")
                 for t, iv in ((100, 0.3), (249, 0.4), (250, 1.2), (260, 1.3))]]
    reference_engine, reference = one_by_one(records)
    whole = Engine(KEY, EngineParams())
    everything = whole.on_events(records)
    everything.extend(whole.flush())
    assert [e["event_time_ms"] - t0 for e in reference.exposures] == [249, 260]
    first, last = (e["margin_ratio"] for e in reference.exposures)
    assert first < last  # the tick closed by the mark at 250 did not see its vol
    assert_same(reference, everything)
    assert_same_state(reference_engine, whole)


def shard_one_by_one(rows: list[venue_feed.Row], partitions: int) -> EngineOutput:
    """The cluster as it ran before batches: each released message through ``on_event`` alone."""
    listed = list(messages(rows, partitions))
    shards = [Shard(p, partitions, KEY) for p in range(partitions)]
    for target, message in listed:
        for shard in (shards if target is None else [shards[target]]):
            shard.sequencer.add_input(message.input)

    def advance(shard: Shard, ready: list[Message]) -> EngineOutput:
        out = EngineOutput()
        for m in ready:
            out.extend(shard.engine.on_event(m.record, m.value, m.ref))
        return keep_for_shard(shard.owner, out)

    out = EngineOutput()
    for target, message in listed:
        for shard in (shards if target is None else [shards[target]]):
            shard.push(message)
            out.extend(advance(shard, shard.sequencer.pop_ready()))
    for shard in shards:
        shard.idle_all()
        out.extend(advance(shard, shard.sequencer.pop_ready()))
    return out


@pytest.mark.parametrize("partitions", [1, 3])
def test_the_in_process_cluster_gives_the_one_message_at_a_time_outputs(partitions: int) -> None:
    rows = list(venue_feed.rows(venue_feed.feed(VENUE)))
    reference = shard_one_by_one(rows, partitions)
    assert reference.breaches and reference.actions
    assert_same(reference, replay_dicts(rows, key=KEY, partitions=partitions))


@pytest.mark.parametrize("enabled", [True, False])
def test_the_in_process_cluster_leaves_the_garbage_collector_as_it_found_it(enabled: bool) -> None:
    rows = list(venue_feed.rows(venue_feed.feed(venue_feed.FeedSpec(accounts=5, options=4, seconds=0.5))))
    (gc.enable if enabled else gc.disable)()
    try:
        replay_dicts(rows, key=KEY)
        assert gc.isenabled() is enabled
        with pytest.raises(KeyError):
            replay_dicts([(*rows[0][:4], {})], key=KEY)  # a record without its fields fails inside the run
        assert gc.isenabled() is enabled
    finally:
        gc.enable()
