"""Sharding by account, the same way in Kafka and in-process.

A worker cluster owns account-keyed partitions; Kafka's Java-compatible partitioner
(murmur2 of the key, positive, modulo the partition count) decides which. Every producer in
this project uses it (librdkafka ``partitioner=murmur2_random``; aiokafka and faust use it by
default), and ``partition_for`` computes it here, so an in-process run splits accounts exactly
as the cluster does.

``ShardedEngine`` is the cluster without a broker: one ``Engine`` per partition; market events
go to every shard (each worker keeps the whole market view), account events to the shard of
their account. Market-wide outputs (index-move, IV, liquidity and oracle breaches, halts and
resumes) are kept only from the shard that owns the underlying's or instrument's partition, so
the cluster reports each once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipelines.detect.breach import BreachKind
from pipelines.engine.engine import Engine, EngineOutput, EngineParams
from pipelines.policy.signing import SigningKey
from pipelines.topics import ACCOUNT_PARTITIONS

ACCOUNT_RECORDS = {"PositionUpdate", "CollateralUpdate"}
ACCOUNT_BREACHES = {BreachKind.MARGIN_SHORTFALL, BreachKind.EQUITY_BELOW_LIQUIDATION, BreachKind.WITHDRAW_THEN_BREACH}
MARKET_ACTIONS = {"halt", "resume"}


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2), as a signed 32-bit int."""
    length = len(data)
    seed, m, r = 0x9747B28C, 0x5BD1E995, 24
    h = (seed ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    tail = length % 4
    base = length - tail
    if tail == 3:
        h ^= data[base + 2] << 16
    if tail >= 2:
        h ^= data[base + 1] << 8
    if tail >= 1:
        h ^= data[base]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(key: str, partitions: int = ACCOUNT_PARTITIONS) -> int:
    """The partition Kafka's default (Java) partitioner gives ``key``."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def market_subject(subject: str) -> str:
    """Market breaches name ``BTC``, ``BTC/pyth``, ``BTC/twap`` or an instrument: key on the underlying."""
    return subject.split("/")[0].split("-")[0]


def keep_for_shard(shard: int, partitions: int, output: EngineOutput) -> EngineOutput:
    """Drop the market-wide outputs this shard does not own (each is reported by one shard)."""
    kept = EngineOutput(exposures=output.exposures)
    kept.breaches = [b for b in output.breaches
                     if b.kind in ACCOUNT_BREACHES or partition_for(market_subject(b.subject), partitions) == shard]
    kept.actions = [a for a in output.actions
                    if a["action_type"] not in MARKET_ACTIONS or partition_for(a["account"], partitions) == shard]
    return kept


class ShardedEngine:
    def __init__(self, key: SigningKey, params: EngineParams | None = None,
                 partitions: int = ACCOUNT_PARTITIONS) -> None:
        self.partitions = partitions
        self.shards = [Engine(key, params) for _ in range(partitions)]

    def on_event(self, record: str, value: Mapping[str, Any], ref: str) -> EngineOutput:
        out = EngineOutput()
        if record in ACCOUNT_RECORDS:
            shard = partition_for(value["account"], self.partitions)
            out.extend(keep_for_shard(shard, self.partitions, self.shards[shard].on_event(record, value, ref)))
        else:
            for shard, engine in enumerate(self.shards):
                out.extend(keep_for_shard(shard, self.partitions, engine.on_event(record, value, ref)))
        return out

    def flush(self) -> EngineOutput:
        out = EngineOutput()
        for shard, engine in enumerate(self.shards):
            out.extend(keep_for_shard(shard, self.partitions, engine.flush()))
        return out
