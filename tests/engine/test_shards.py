from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, Producer

from pipelines.engine.engine import EngineParams
from pipelines.engine.shard import Message, run_shards, shard_of
from pipelines.engine.shards import murmur2, partition_for
from pipelines.policy.actions import Action
from pipelines.policy.signing import SigningKey
from tests.kit.crash import crash_events

KEY = SigningKey("test", b"engine-test-signing-key-0123")


@pytest.mark.parametrize(("data", "expected"), [
    (b"21", -973932308), (b"foobar", -790332482), (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971), (b"abc", 479470107),
])
def test_murmur2_matches_kafkas_test_vectors(data: bytes, expected: int) -> None:
    assert murmur2(data) == expected


@pytest.mark.kafka
def test_partition_for_matches_the_broker_placement(kafka_bootstrap: str, topic_factory: Callable[..., str]) -> None:
    topic = topic_factory(partitions=12)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "partitioner": "murmur2_random"})
    keys = [f"acct-{i}" for i in range(200)]
    for key in keys:
        producer.produce(topic, key=key.encode(), value=b"x")
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"g-{topic}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    placed: dict[str, int] = {}
    deadline = time.monotonic() + 60
    while len(placed) < len(keys) and time.monotonic() < deadline:
        for m in consumer.consume(500, 0.5):
            if m.error() is None:
                placed[m.key().decode()] = m.partition()
    consumer.close()
    assert placed == {key: partition_for(key, 12) for key in keys}


def test_sharded_cluster_gives_the_one_shard_actions_once_each() -> None:
    """Four shards report exactly what one shard holding every account reports: account outputs
    from the account's shard, market-wide ones (halts) from the owner of the underlying only."""
    params = EngineParams(hedged_accounts=frozenset({"hedged-desk"}))
    messages = []
    for n, (record, value) in enumerate(crash_events()):
        topic = "backstop.positions" if record == "PositionUpdate" else (
            "backstop.collateral" if record == "CollateralUpdate" else f"backstop.market.{record}")
        key_partition = partition_for(value["account"], 4) if "account" in value else 0
        messages.append((record, Message(f"{topic}/{key_partition}", n, f"{topic}:{key_partition}:{n}", record, value)))

    def run(partitions: int) -> list[Action]:
        return run_shards([(shard_of(record, m.value, partitions), m) for record, m in messages],
                          partitions, KEY, params).actions

    key = lambda a: (a.event_time_ms, a.action_id)  # noqa: E731
    sharded, single = sorted(run(4), key=key), sorted(run(1), key=key)
    assert sharded == single
    assert sum(a.action_type == "halt" for a in sharded) == 3  # once each, not once per shard


def test_market_sources_are_the_market_topics() -> None:
    from pipelines.engine.shard import MARKET_TOPICS

    names = {spec.name for spec in MARKET_TOPICS}
    assert {"backstop.market.index", "backstop.market.mark", "backstop.instruments"} <= names


def test_a_redelivery_is_dropped_not_taken_twice() -> None:
    from pipelines.engine.shard import Shard

    key = SigningKey("t", b"shard-test-signing-key-000")
    shard = Shard(3, 12, key)
    value = {"underlying": "BTC", "index_name": "btc", "price": 60_000.0, "event_time_ms": 1_000}
    assert shard.push(Message("backstop.market.index/1", 7, "backstop.market.index:1:7", "IndexPrice", value))
    assert not shard.push(Message("backstop.market.index/1", 7, "backstop.market.index:1:7", "IndexPrice", value))
    assert shard.redelivered == 1 and len(shard.sequencer) == 1


def test_only_the_owner_of_an_underlying_reports_its_moves_yet_every_shard_runs_its_circuit_and_oracles() -> None:
    """Index moves (and the circuit they drive), IV jumps and mark manipulation are reported by
    the shard owning the underlying. Every shard still runs the circuit (its accounts' hedges
    must respect it) and checks its oracles (a stale one suspends liquidations in every shard)."""
    from pipelines.detect.breach import BreachKind
    from pipelines.engine.shard import Shard
    from pipelines.policy.circuit import TradingState

    partitions, second = 4, 1_000
    owner = partition_for("BTC", partitions)
    shards = [Shard(p, partitions, KEY) for p in (owner, (owner + 1) % partitions)]
    events = [("OraclePrice", {"underlying": "BTC", "source": "pyth", "price": 60_000.0, "publish_time_ms": 0,
                               "event_time_ms": 0})]
    events += [("IndexPrice", {"underlying": "BTC", "index_name": "btc", "price": 60_000.0 * (0.9 if t > 60 else 1.0),
                               "event_time_ms": t * second}) for t in range(1, 91)]
    events += [("VolatilityUpdate", {"underlying": "BTC", "instrument": None, "iv": iv, "event_time_ms": t * second})
               for t, iv in ((91, 0.5), (92, 0.9))]
    events += [("MarkPrice", {"instrument": "BTC-PERPETUAL", "underlying": "BTC", "mark_price": 90_000.0,
                              "index_price": 54_000.0, "mark_iv": None, "open_interest": 10.0,
                              "event_time_ms": 93 * second})]
    seen = []
    for shard in shards:
        outputs = [shard.engine.on_event(record, value, f"m:0:{n}") for n, (record, value) in enumerate(events)]
        seen.append({b.kind for out in outputs for b in out.breaches})
        assert shard.engine.detectors.oracle_unreliable("BTC")
        assert shard.engine.circuits.trading_state("BTC") is TradingState.HALTED
    moves = {BreachKind.INDEX_MOVE, BreachKind.IV_JUMP, BreachKind.MARK_MANIPULATION}
    assert seen[0] >= moves | {BreachKind.ORACLE_STALE}
    assert seen[1] & {BreachKind.IV_JUMP, BreachKind.MARK_MANIPULATION} == set()
    assert {BreachKind.INDEX_MOVE, BreachKind.ORACLE_STALE} <= seen[1]  # keep_for_shard drops the move
