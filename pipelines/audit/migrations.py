"""Versioned DDL for the audit tables, recorded in ``schema_migrations``; ``backstop audit migrate``.

Each migration is a numbered, named function of a ``Target`` (database, optional cluster, server
capabilities, retention) returning DDL statements. Statements are ``IF NOT EXISTS`` and a
version is recorded only after all its statements ran, so migrating twice (or two processes at
once) is harmless. Written once, never edited: change the schema with a new migration.

Portable DDL, the same text on ClickHouse 18.16 (Debian) and current ClickHouse / chdb:
``ReplacingMergeTree(ingest_version)`` keyed by Kafka coordinates (duplicates collapse on merge;
reads use ``FINAL``), ``PARTITION BY toYYYYMMDD(event_date)`` (one partition per day), no
``Nullable`` (absent floats are NaN, absent strings ''), no ``LowCardinality`` (18.16 rejects
it). Where the server has them: ``TTL`` (19.6+) and ``non_replicated_deduplication_window``
(21.5+, with ``insert_deduplication_token`` 22.2+ on the insert).

``--cluster NAME``: every statement ``ON CLUSTER NAME``; ``<table>_local`` tables are
``ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/<db>/<table>_local', '{replica}',
ingest_version)`` and ``<table>`` is a ``Distributed`` table over them, sharded by a
deterministic key of the row (account, or Kafka topic+partition), so a redelivered copy lands
on the same shard as the original and ``FINAL`` still collapses it.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
from collections.abc import Callable

from pipelines.audit.store import Store, check_identifier

KAFKA_COLUMNS = """
    kafka_topic String,
    kafka_partition Int32,
    kafka_offset Int64,
    kafka_timestamp_ms Int64,
    ingest_version UInt64"""

COORDINATES = "kafka_topic, kafka_partition, kafka_offset"


@dataclasses.dataclass(frozen=True)
class Target:
    """Where and how DDL is rendered."""

    database: str
    cluster: str | None = None
    ttl: bool = False
    dedup_window: bool = False
    inputs_ttl_days: int = 180
    audit_ttl_days: int = 3650

    @classmethod
    def for_store(cls, store: Store, cluster: str | None = None, **kwargs: int) -> Target:
        return cls(store.database, cluster, ttl=store.supports_ttl, dedup_window=store.supports_dedup_window, **kwargs)

    @property
    def on_cluster(self) -> str:
        return f" ON CLUSTER {self.cluster}" if self.cluster else ""


def table_ddl(target: Target, name: str, columns: str, *, order_by: str, shard_key: str, ttl_days: int) -> list[str]:
    """CREATE statements for one audit table: a single ReplacingMergeTree, or local + Distributed on a cluster."""
    db = target.database
    local = f"{name}_local" if target.cluster else name
    if target.cluster:
        engine = (f"ReplicatedReplacingMergeTree('/clickhouse/tables/{{shard}}/{db}/{local}', '{{replica}}', "
                  "ingest_version)")
    else:
        engine = "ReplacingMergeTree(ingest_version)"
    clauses = [f"ENGINE = {engine}", "PARTITION BY toYYYYMMDD(event_date)", f"ORDER BY ({order_by})"]
    if target.ttl and ttl_days > 0:
        clauses.append(f"TTL event_date + toIntervalDay({ttl_days})")
    settings = ["index_granularity = 8192"]
    if target.dedup_window and not target.cluster:
        settings.append("non_replicated_deduplication_window = 1000")
    clauses.append("SETTINGS " + ", ".join(settings))
    statements = [f"CREATE TABLE IF NOT EXISTS {db}.{local}{target.on_cluster} ({columns}\n)\n" + "\n".join(clauses)]
    if target.cluster:
        statements.append(f"CREATE TABLE IF NOT EXISTS {db}.{name}{target.on_cluster} AS {db}.{local}\n"
                          f"ENGINE = Distributed({target.cluster}, {db}, {local}, {shard_key})")
    return statements


# ---------------------------------------------------------------------- migrations (append only)


def m001_inputs(t: Target) -> list[str]:
    return table_ddl(t, "inputs", """
    event_date Date,
    event_time_ms Int64,
    record String,
    account String,
    underlying String,
    instrument String,
    price Float64,
    index_price Float64,
    iv Float64,
    quantity Float64,
    sequence Int64,
    payload String,""" + KAFKA_COLUMNS,
                     order_by=f"account, underlying, instrument, event_time_ms, {COORDINATES}",
                     shard_key="sipHash64(kafka_topic, kafka_partition)", ttl_days=t.inputs_ttl_days)


def m002_breaches(t: Target) -> list[str]:
    return table_ddl(t, "breaches", """
    event_date Date,
    event_time_ms Int64,
    account String,
    breach_id String,
    kind String,
    severity String,
    underlying String,
    instrument String,
    observed Float64,
    threshold Float64,
    margin_ratio Float64,
    window_start_ms Int64,
    window_end_ms Int64,
    trigger_topics Array(String),
    trigger_partitions Array(Int32),
    trigger_offsets Array(Int64),
    trigger_event_ids Array(String),
    detail_keys Array(String),
    detail_values Array(String),""" + KAFKA_COLUMNS,
                     order_by=f"account, event_time_ms, {COORDINATES}",
                     shard_key="sipHash64(account)", ttl_days=t.audit_ttl_days)


def m003_actions(t: Target) -> list[str]:
    return table_ddl(t, "actions", """
    event_date Date,
    event_time_ms Int64,
    account String,
    action_id String,
    action_type String,
    instrument String,
    side String,
    quantity Float64,
    limit_price Float64,
    breach_ids Array(String),
    param_keys Array(String),
    param_values Array(String),
    expires_at_ms Int64,
    signing_key_id String,
    signature_hex String,""" + KAFKA_COLUMNS,
                     order_by=f"account, event_time_ms, {COORDINATES}",
                     shard_key="sipHash64(account)", ttl_days=t.audit_ttl_days)


def m004_executions(t: Target) -> list[str]:
    return table_ddl(t, "executions", """
    event_date Date,
    event_time_ms Int64,
    account String,
    execution_id String,
    action_id String,
    status String,
    venue String,
    instrument String,
    side String,
    filled_quantity Float64,
    avg_price Float64,
    fee Float64,
    fee_currency String,
    slippage_bps Float64,
    counterparty String,
    reason String,""" + KAFKA_COLUMNS,
                     order_by=f"account, event_time_ms, {COORDINATES}",
                     shard_key="sipHash64(account)", ttl_days=t.audit_ttl_days)


def m005_dead_letters(t: Target) -> list[str]:
    return table_ddl(t, "dead_letters", """
    event_date Date,
    event_time_ms Int64,
    reason String,
    detail String,
    source_topic String,
    source_partition Int32,
    source_offset Int64,
    message_timestamp_ms Int64,
    schema_id Int64,
    record String,
    consumer String,
    original_key String,
    original_value_hex String,""" + KAFKA_COLUMNS,
                     order_by=f"source_topic, event_time_ms, {COORDINATES}",
                     shard_key="sipHash64(kafka_topic, kafka_partition)", ttl_days=t.inputs_ttl_days)


def m006_exposures(t: Target) -> list[str]:
    """The engine's throttled revaluations of each account (``backstop.exposures``). Keyed by account
    and event time, not by Kafka coordinates: a snapshot re-sent at another offset (a stream worker
    replaying from its checkpoint) is the same row, and of two at one millisecond the last ingested
    is kept. As voluminous as the inputs and reproducible from them, so kept as long as the inputs."""
    return table_ddl(t, "exposures", """
    event_date Date,
    event_time_ms Int64,
    account String,
    equity_usd Float64,
    maintenance_margin_usd Float64,
    initial_margin_usd Float64,
    margin_ratio Float64,
    state String,""" + KAFKA_COLUMNS,
                     order_by="account, event_time_ms",
                     shard_key="sipHash64(account)", ttl_days=t.inputs_ttl_days)


MIGRATIONS: tuple[tuple[int, str, Callable[[Target], list[str]]], ...] = (
    (1, "inputs", m001_inputs),
    (2, "breaches", m002_breaches),
    (3, "actions", m003_actions),
    (4, "executions", m004_executions),
    (5, "dead_letters", m005_dead_letters),
    (6, "exposures", m006_exposures),
)

AUDIT_TABLES = ("inputs", "breaches", "actions", "executions", "dead_letters", "exposures")


def migrations_table_ddl(t: Target) -> str:
    if t.cluster:
        engine = (f"ReplicatedReplacingMergeTree('/clickhouse/tables/{t.database}/schema_migrations', '{{replica}}', "
                  "applied_at)")
    else:
        engine = "ReplacingMergeTree(applied_at)"
    return (f"CREATE TABLE IF NOT EXISTS {t.database}.schema_migrations{t.on_cluster} (\n"
            "    version UInt32,\n    name String,\n    checksum String,\n    applied_at DateTime,\n"
            f"    server_version String\n) ENGINE = {engine}\nORDER BY version")


def checksum(statements: list[str]) -> str:
    return hashlib.sha256("\n;\n".join(statements).encode()).hexdigest()[:16]


def plan(target: Target) -> list[tuple[int, str, list[str]]]:
    """Every migration's statements for ``target`` (nothing is executed)."""
    return [(version, name, fn(target)) for version, name, fn in MIGRATIONS]


def render(target: Target) -> str:
    """The whole DDL as text (``backstop audit migrate --print``)."""
    parts = [f"CREATE DATABASE IF NOT EXISTS {target.database}{target.on_cluster};", migrations_table_ddl(target) + ";"]
    for version, name, statements in plan(target):
        parts.append(f"-- {version:03d} {name}")
        parts.extend(s + ";" for s in statements)
    return "\n\n".join(parts) + "\n"


def applied(store: Store) -> dict[int, str]:
    rows = store.query(f"SELECT version, any(name) FROM {store.table('schema_migrations')} GROUP BY version").rows
    return {int(v): n for v, n in rows}


def migrate(store: Store, cluster: str | None = None, **retention: int) -> list[tuple[int, str]]:
    """Apply the missing migrations; returns the (version, name) pairs applied now (empty: up to date)."""
    if cluster:
        check_identifier(cluster, "cluster name")
    target = Target.for_store(store, cluster, **retention)
    store.create_database(cluster)
    store.execute(migrations_table_ddl(target))
    done = applied(store)
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None, microsecond=0)
    server_version = ".".join(map(str, store.version()))
    newly: list[tuple[int, str]] = []
    for version, name, statements in plan(target):
        if version in done:
            continue
        for statement in statements:
            store.execute(statement)
        store.insert("schema_migrations", {"version": [version], "name": [name], "checksum": [checksum(statements)],
                                           "applied_at": [now], "server_version": [server_version]})
        newly.append((version, name))
    return newly


def latest_version() -> int:
    return MIGRATIONS[-1][0]
