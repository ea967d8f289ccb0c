"""One engine holding many account partitions: moved and recovered partitions give exactly what
one engine holding every account gives (the in-process oracle)."""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from pipelines.backtest.simulate import sequence_events
from pipelines.engine.engine import Engine, EngineOutput, EngineParams
from pipelines.engine.partitions import (
    HeldPartitions,
    drop_partition,
    export_partition,
    import_partition,
    partition_accounts,
)
from pipelines.engine.shards import ACCOUNT_RECORDS
from pipelines.engine.snapshot import (
    FORMAT,
    Checkpoint,
    MarketSnapshot,
    PartitionSnapshot,
    Released,
    SnapshotFormatError,
    decode_checkpoint,
    encode_checkpoint,
)
from pipelines.policy.actions import Action
from pipelines.policy.signing import SigningKey
from pipelines.scenarios import library
from pipelines.scenarios.generate import generate

KEY = SigningKey("test", b"partition-test-signing-key-01")
PARTITIONS = 12
INTERVAL = EngineParams().revaluation_interval_ms

Event = tuple[str, str, dict[str, Any], str]  # (topic, record, value, ref), in the global sequenced order


def scenario_events(name: str) -> list[Event]:
    return sequence_events(generate(library.get(name)).events)


def boundary_after(events: Sequence[Event], i: int) -> int | None:
    """The tick boundary between event ``i`` and ``i + 1``, if there is one."""
    t, after = events[i][2]["event_time_ms"], events[i + 1][2]["event_time_ms"]
    boundary = (t // INTERVAL + 1) * INTERVAL
    return boundary if boundary <= after else None


def boundaries(events: Sequence[Event]) -> list[tuple[int, int]]:
    """(index of the last event before it, boundary) for every tick boundary inside the run."""
    found = [(i, boundary_after(events, i)) for i in range(len(events) - 1)]
    return [(i, b) for i, b in found if b is not None]


def end_of(events: Sequence[Event]) -> int:
    return (events[-1][2]["event_time_ms"] // INTERVAL + 1) * INTERVAL


class Collected:
    """Outputs keyed by id; a repeat must be the same output (downstream drops it by id)."""

    def __init__(self) -> None:
        self.breaches: dict[str, Any] = {}
        self.actions: dict[str, Action] = {}
        self.exposures: dict[tuple[str, int], dict] = {}

    def add(self, out: EngineOutput) -> None:
        for b in out.breaches:
            assert self.breaches.setdefault(b.breach_id, b) == b
        for a in out.actions:
            assert self.actions.setdefault(a.action_id, a) == a
        for e in out.exposures:
            assert self.exposures.setdefault((e["account"], e["event_time_ms"]), e) == e


class Member:
    """One engine and the partitions it holds, fed the market and its own accounts' events."""

    def __init__(self, engine: Engine, held: HeldPartitions, collected: Collected) -> None:
        self.engine, self.held, self.collected = engine, held, collected

    def takes(self, event: Event) -> bool:
        _, record, value, _ = event
        return record not in ACCOUNT_RECORDS or self.held.partition_of_account(value["account"]) in self.held.held

    def feed(self, events: Sequence[Event]) -> None:
        for event in events:
            if self.takes(event):
                self.collected.add(self.held.keep(self.engine.on_event(event[1], event[2], event[3])))

    def close_tick(self, boundary: int) -> None:
        self.collected.add(self.held.keep(self.engine.close_tick(boundary)))


@functools.cache
def oracle(scenario: str) -> Collected:
    """One engine, every account, every event: what any partitioning must reproduce."""
    events = scenario_events(scenario)
    member = Member(Engine(KEY, EngineParams()), HeldPartitions(PARTITIONS, range(PARTITIONS)), Collected())
    member.feed(events)
    member.close_tick(end_of(events))
    return member.collected


def stored(partition: int, accounts: list[dict], market: dict, boundary: int) -> Checkpoint:
    """A partition's state and the market as a snapshot store gives them back: encoded, decoded."""
    own = {f"backstop.positions/{partition}": Released(7, boundary - 3)}
    index = {"backstop.market.index/0": Released(3, 9)}
    decoded = decode_checkpoint(encode_checkpoint(Checkpoint(
        PartitionSnapshot(partition, PARTITIONS, boundary, accounts, own), MarketSnapshot(boundary, market, index))))
    assert (decoded.partition.partition, decoded.partition.boundary_ms, decoded.partition.inputs) == (
        partition, boundary, own)
    assert (decoded.market.boundary_ms, decoded.market.inputs) == (boundary, index)
    return decoded


def assert_same(got: Collected, want: Collected) -> None:
    assert got.breaches.keys() == want.breaches.keys()
    assert got.actions == want.actions
    assert got.exposures == want.exposures
    assert got.breaches == want.breaches


@pytest.mark.parametrize("scenario", ["may-2021", "ftx-2022"])
def test_partitions_moved_between_engines_give_the_one_engine_outputs(scenario: str) -> None:
    """Two engines share the twelve partitions; at random tick boundaries a partition moves
    from one to the other (exported, dropped, stored, imported). Together they emit exactly the
    oracle's breaches, actions and exposures, each once."""
    events = scenario_events(scenario)
    params = EngineParams()
    want = oracle(scenario)
    assert want.actions, "the scenario must exercise the ladder"
    rng = random.Random(scenario)
    collected = Collected()
    members = [Member(Engine(KEY, params), HeldPartitions(PARTITIONS, range(0, 6)), collected),
               Member(Engine(KEY, params), HeldPartitions(PARTITIONS, range(6, 12)), collected)]
    cuts = sorted(rng.sample(boundaries(events), 6))
    start = 0
    for i, boundary in cuts:
        for member in members:
            member.feed(events[start:i + 1])
            member.close_tick(boundary)
        start = i + 1
        giver, taker = rng.sample(members, 2)
        if not giver.held.held:
            continue
        partition = rng.choice(sorted(giver.held.held))
        state = stored(partition, export_partition(giver.engine, giver.held, partition), giver.engine.market_state(),
                       boundary).partition.accounts
        drop_partition(giver.engine, giver.held, partition)
        assert partition_accounts(giver.engine, giver.held, partition) == []
        import_partition(taker.engine, taker.held, partition, state)
    for member in members:
        member.feed(events[start:])
        member.close_tick(end_of(events))
    assert_same(collected, want)


def catch_up(market: dict, accounts: list[dict], partition: int, events: Sequence[Event], boundary: int,
             params: EngineParams, collected: Collected) -> list[dict]:
    """A partition restored from a snapshot taken at an earlier boundary, run through the market
    and its own events since, to ``boundary``: its state there. What it emits on the way repeats
    (by id) what its last owner emitted, or reports what a crash lost."""
    engine = Engine.restore(KEY, params, market, accounts)
    member = Member(engine, HeldPartitions(PARTITIONS, [partition]), collected)
    member.feed(events)
    member.close_tick(boundary)
    return engine.export_accounts(engine.held_accounts())


@pytest.mark.parametrize("seed", range(4))
def test_a_partition_recovered_from_an_older_snapshot_catches_up_exactly(seed: int) -> None:
    """Engine A holds every partition; at a boundary C it snapshots the market and partition p;
    it goes on, emits, and dies for p at a later event X. Engine B has followed the market with
    no partitions; at a boundary K after X it takes p over: p restored from C's snapshot runs
    through the events of (C, K] on its own, then moves into B. Everything emitted, repeats
    included, is the oracle's."""
    events = scenario_events("may-2021")
    params = EngineParams()
    want = oracle("may-2021")
    rng = random.Random(seed)
    cuts = boundaries(events)
    (c_i, c), (k_i, k) = sorted(rng.sample(cuts, 2))
    crash_i = rng.randrange(c_i + 1, k_i + 1)
    partition = rng.randrange(PARTITIONS)
    collected = Collected()
    a = Member(Engine(KEY, params), HeldPartitions(PARTITIONS, range(PARTITIONS)), collected)
    b = Member(Engine(KEY, params), HeldPartitions(PARTITIONS), collected)
    a.feed(events[:c_i + 1])
    a.close_tick(c)
    b.feed(events[:c_i + 1])
    b.close_tick(c)
    checkpoint = stored(partition, export_partition(a.engine, a.held, partition), a.engine.market_state(), c)
    market, snapshot = checkpoint.market.market, checkpoint.partition.accounts
    a.feed(events[c_i + 1:crash_i])  # A emits for p until it dies at X ...
    a.held.remove(partition)  # ... and after X nothing of p's reaches the broker
    a.feed(events[crash_i:k_i + 1])
    a.close_tick(k)
    drop_partition(a.engine, a.held, partition)
    b.feed(events[c_i + 1:k_i + 1])
    b.close_tick(k)
    b_market = b.engine.market_state()
    recovered = catch_up(market, snapshot, partition, events[c_i + 1:k_i + 1], k, params, collected)
    import_partition(b.engine, b.held, partition, recovered)
    assert b.engine.market_state() == b_market  # importing accounts leaves the market as it was
    for member in (a, b):
        member.feed(events[k_i + 1:])
        member.close_tick(end_of(events))
    assert_same(collected, want)


def test_accounts_move_only_at_a_tick_boundary() -> None:
    events = scenario_events("may-2021")
    engine = Engine(KEY, EngineParams())
    i, boundary = boundaries(events)[len(events) // 4]
    for _, record, value, ref in events[:i + 1]:
        engine.on_event(record, value, ref)
    with pytest.raises(ValueError, match="middle of a tick"):
        engine.export_accounts(engine.held_accounts())
    with pytest.raises(ValueError, match="not a tick boundary"):
        engine.close_tick(boundary + 1)
    engine.close_tick(boundary)
    states = engine.export_accounts(engine.held_accounts())
    assert states and engine.at_boundary()
    with pytest.raises(ValueError, match="already held"):
        engine.import_accounts(states[:1])


def test_a_partition_state_holds_only_its_own_accounts() -> None:
    events = scenario_events("may-2021")
    held = HeldPartitions(PARTITIONS, range(PARTITIONS))
    engine = Engine(KEY, EngineParams())
    for _, record, value, ref in events[:len(events) // 2]:
        engine.on_event(record, value, ref)
    engine.close_tick(end_of(events[:len(events) // 2]))
    by_partition = {p: export_partition(engine, held, p) for p in range(PARTITIONS)}
    assert sum(len(s) for s in by_partition.values()) == len(engine.held_accounts())
    other = next(p for p in range(PARTITIONS) if by_partition[p])
    with pytest.raises(ValueError, match="another partition"):
        import_partition(Engine(KEY, EngineParams()), HeldPartitions(PARTITIONS), (other + 1) % PARTITIONS,
                         by_partition[other])


def test_market_outputs_are_reported_by_the_holder_of_the_underlyings_partition() -> None:
    held = HeldPartitions(PARTITIONS, [])
    owner: Callable[[str], int] = lambda s: next(p for p in range(PARTITIONS)  # noqa: E731
                                                 if HeldPartitions(PARTITIONS, [p]).reports(s))
    btc = owner("BTC")
    assert not held.reports("BTC")
    held.add(btc)
    assert held.reports("BTC") and held.reports("BTC/pyth") and held.reports("BTC-PERPETUAL")


def test_snapshots_of_another_format_or_no_snapshot_at_all_are_refused() -> None:
    market = Engine(KEY).market_state()
    data = encode_checkpoint(Checkpoint(PartitionSnapshot(3, PARTITIONS, 1_000, [], {}),
                                        MarketSnapshot(1_000, market, {})))
    assert decode_checkpoint(data).partition.partition == 3
    older = data[:3] + bytes([data[3] - 1]) + data[4:]
    with pytest.raises(SnapshotFormatError,
                       match=f"format {FORMAT - 1}; this version reads format {FORMAT}: read its inputs again"):
        decode_checkpoint(older)
    with pytest.raises(SnapshotFormatError, match="not in this format"):
        decode_checkpoint(b"\x80\x04pickle")
    with pytest.raises(ValueError, match="partition at 1000, market at 750"):
        Checkpoint(PartitionSnapshot(3, PARTITIONS, 1_000, [], {}), MarketSnapshot(750, market, {}))
