"""The topic catalogue: every Kafka topic Backstop reads or writes, in one place.

Partitioning follows the key: account-keyed topics (positions, collateral, exposures, breaches,
actions, executions) share one partition count so that a worker owning partition *p* of the
positions topic also owns partition *p* of every other account-keyed topic (co-partitioning);
changing that count re-maps accounts and needs a migration, so ``topics create`` never does it
silently. Market-data topics are read whole by every worker (a global view) and need few
partitions. Compacted topics hold "latest value per key" state: instrument definitions and
exposure snapshots.
"""

from __future__ import annotations

import dataclasses

ACCOUNT_PARTITIONS = 12
MARKET_PARTITIONS = 3
DAY_MS = 24 * 3600 * 1000
CHECKPOINT_MAX_BYTES = 16 * 1024 * 1024  # a checkpoint holds the market and a partition's accounts


@dataclasses.dataclass(frozen=True)
class TopicSpec:
    """One topic: its name (before the configured prefix), layout and what it carries."""

    name: str
    partitions: int
    key: str
    value_record: str
    cleanup_policy: str = "delete"
    retention_ms: int = 7 * DAY_MS
    doc: str = ""
    audited: bool = True  # the audit sink stores it (derived copies are not)
    max_message_bytes: int | None = None  # the broker's default (1 MB) unless set

    def config(self, replication_factor: int) -> dict[str, str]:
        """Broker-side topic config; min.insync.replicas 2 once there are 3 replicas (acks=all survives one loss)."""
        conf = {
            "cleanup.policy": self.cleanup_policy,
            "retention.ms": str(self.retention_ms) if self.cleanup_policy == "delete" else "-1",
            "min.insync.replicas": str(min(2, max(1, replication_factor - 1))),
        }
        if self.max_message_bytes is not None:
            conf["max.message.bytes"] = str(self.max_message_bytes)
        return conf


CATALOGUE: tuple[TopicSpec, ...] = (
    TopicSpec("backstop.instruments", MARKET_PARTITIONS, "instrument", "InstrumentDefinition", cleanup_policy="compact",
              doc="instrument definitions, latest per instrument"),
    TopicSpec("backstop.market.index", MARKET_PARTITIONS, "underlying", "IndexPrice", doc="underlying index prices"),
    TopicSpec("backstop.market.mark", MARKET_PARTITIONS, "instrument", "MarkPrice", doc="instrument mark prices"),
    TopicSpec("backstop.market.volatility", MARKET_PARTITIONS, "underlying", "VolatilityUpdate",
              doc="implied vols per instrument and smile points per underlying"),
    TopicSpec("backstop.market.depth", MARKET_PARTITIONS, "instrument", "OrderBookDepth",
              doc="order-book depth within price bands"),
    TopicSpec("backstop.market.oracle", MARKET_PARTITIONS, "underlying", "OraclePrice", doc="oracle prices per source"),
    TopicSpec("backstop.positions", ACCOUNT_PARTITIONS, "account", "PositionUpdate",
              doc="position changes per account"),
    TopicSpec("backstop.collateral", ACCOUNT_PARTITIONS, "account", "CollateralUpdate",
              doc="collateral balances per account"),
    TopicSpec("backstop.exposures", ACCOUNT_PARTITIONS, "account", "ExposureSnapshot", cleanup_policy="compact",
              doc="latest revaluation per account, for dashboards"),
    TopicSpec("backstop.breaches", ACCOUNT_PARTITIONS, "account", "Breach", retention_ms=30 * DAY_MS,
              doc="threshold breaches with their inputs"),
    TopicSpec("backstop.actions", ACCOUNT_PARTITIONS, "account", "Action", retention_ms=30 * DAY_MS,
              doc="signed actions for the executors"),
    TopicSpec("backstop.executions", ACCOUNT_PARTITIONS, "account", "ExecutionReport", retention_ms=30 * DAY_MS,
              doc="execution reports from the executors"),
    TopicSpec("backstop.worker.checkpoints", ACCOUNT_PARTITIONS, "group/partition", "Checkpoint",
              cleanup_policy="compact", max_message_bytes=CHECKPOINT_MAX_BYTES, audited=False,
              doc="the workers' latest checkpoint per account partition (engine/snapshot.py), in its partition"),
    TopicSpec("backstop.deadletters", MARKET_PARTITIONS, "topic", "DeadLetter", retention_ms=30 * DAY_MS,
              doc="messages that could not be decoded or failed validation, with their original bytes"),
)


def topic_name(spec: TopicSpec, prefix: str = "") -> str:
    """The topic's name on the broker: the configured prefix (e.g. an environment) plus the catalogue name."""
    return f"{prefix}{spec.name}"


def spec_for(name: str) -> TopicSpec:
    """The catalogue entry named ``name`` (without prefix)."""
    for spec in CATALOGUE:
        if spec.name == name:
            return spec
    raise KeyError(name)
