"""Sharding by account, the same way in Kafka and in-process.

A worker cluster owns account-keyed partitions; Kafka's Java-compatible partitioner
(murmur2 of the key, positive, modulo the partition count) decides which. Every producer in
this project uses it (librdkafka ``partitioner=murmur2_random``, the Java client's default), and
``partition_for`` computes it here, so an in-process run splits accounts exactly as the cluster
does.

Market records go to every shard (each worker keeps the whole market view), account records to
the shard of their account; ``keep_for_shard`` keeps market-wide outputs (index-move, IV,
liquidity and oracle breaches; the circuits' halt, market_reduce_only and resume actions) only
from the shard that owns the underlying's partition, so the cluster reports each once.
``shard.run_shards`` is the cluster in-process.
"""

from __future__ import annotations

from collections.abc import Callable

from pipelines.detect.breach import BreachKind
from pipelines.engine.engine import EngineOutput
from pipelines.risk.instruments import underlying_of
from pipelines.topics import ACCOUNT_PARTITIONS

ACCOUNT_RECORDS = {"PositionUpdate", "CollateralUpdate"}
ACCOUNT_BREACHES = {BreachKind.MARGIN_SHORTFALL, BreachKind.EQUITY_BELOW_LIQUIDATION, BreachKind.WITHDRAW_THEN_BREACH}


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
    return underlying_of(subject.partition("/")[0])


class MarketOwner:
    """Whether shard ``partition`` reports a market subject (``market_subject``): the engine of
    every other shard skips the detectors whose only outputs are such breaches (IV jumps), and
    ``keep_for_shard`` drops what it found. Detectors whose state the shard's own accounts need
    run everywhere: index moves and the circuits they drive (a hedge the circuit would see refused
    is held back on every shard), liquidity, oracles and mark manipulation (a manipulated or
    delisted instrument's legs wait on every shard); only the reporting shard emits their
    market breaches and actions."""

    def __init__(self, partition: int, partitions: int) -> None:
        self.partition, self.partitions = partition, partitions
        self._owned: dict[str, bool] = {}  # per subject seen: murmur2 in Python costs more than the check

    def __call__(self, subject: str) -> bool:
        owned = self._owned.get(subject)
        if owned is None:
            owned = self._owned[subject] = partition_for(market_subject(subject), self.partitions) == self.partition
        return owned


def keep_reported(output: EngineOutput, reports: Callable[[str], bool]) -> EngineOutput:
    """``output`` without the market-wide outputs whose subject ``reports`` says is reported elsewhere."""
    if not (output.breaches or output.actions):
        return output  # the common case, per event: nothing to filter
    kept = EngineOutput(exposures=output.exposures)
    kept.breaches = [b for b in output.breaches if b.kind in ACCOUNT_BREACHES or reports(b.subject)]
    kept.actions = [a for a in output.actions if a.underlying is None or reports(a.underlying)]
    return kept


def keep_for_shard(owner: MarketOwner, output: EngineOutput) -> EngineOutput:
    """Drop the market-wide outputs the shard of ``owner`` does not report (each is reported by one shard)."""
    return output if owner.partitions == 1 else keep_reported(output, owner)
