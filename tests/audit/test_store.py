"""Store and migrations on both backends: the Debian 18.16 server and embedded current ClickHouse."""

from __future__ import annotations

import math

import pytest

from pipelines.audit import migrations, rows
from pipelines.audit.store import StoreError, check_read_only, substitute
from pipelines.errors import UserError


def test_migrate_is_idempotent_and_creates_every_table(store) -> None:
    first = migrations.migrate(store)
    assert [v for v, _ in first] == [1, 2, 3, 4, 5, 6]
    assert migrations.migrate(store) == []
    assert migrations.applied(store) == {1: "inputs", 2: "breaches", 3: "actions", 4: "executions", 5: "dead_letters",
                                         6: "exposures"}
    for table in migrations.AUDIT_TABLES:
        described = {r[0]: r[1] for r in store.query(f"DESCRIBE TABLE {store.table(table)}").rows}
        for column in rows.COLUMNS[table] + rows.KAFKA:
            assert column in described, (table, column)
        assert not any(t.startswith(("Nullable", "LowCardinality")) for t in described.values())
        create = store.query(f"SHOW CREATE TABLE {store.table(table)}").scalar()
        assert "ReplacingMergeTree(ingest_version)" in create
        assert "toYYYYMMDD(event_date)" in create
        assert ("TTL" in create) == store.supports_ttl


def test_version_capabilities(store) -> None:
    version = store.version()
    if store.kind == "server" and version < (19, 0, 0):
        assert not store.supports_ttl and not store.supports_dedup_token
    if store.kind == "embedded":
        assert version >= (24, 0, 0) and store.supports_ttl and store.supports_dedup_token


def test_parameters_are_escaped_the_same_way_on_both(migrated) -> None:
    nasty = "x' OR 1=1 -- \\ ; DROP TABLE breaches"
    result = migrated.query("SELECT %(s)s AS s, %(n)s AS n, %(f)s AS f, %(l)s AS l",
                            {"s": nasty, "n": 42, "f": 1.5, "l": ["a", "b'c"]})
    assert result.rows == [(nasty, 42, 1.5, ["a", "b'c"])]
    assert migrated.query("SELECT count() FROM breaches WHERE account IN %(a)s", {"a": ("x", "y")}).scalar() == 0
    assert migrated.query("SELECT 'a%b' AS s").scalar() == "a%b"  # no params: sent verbatim


def test_nan_reads_back_as_none_on_both(migrated) -> None:
    batch = rows.Batch()
    from tests.kit.incident import incident

    for topic, record, value in incident():
        if record == "ExecutionReport":
            batch.add(record, value, rows.Coordinates(topic, 0, len(batch), 1))
    for table, columns, token in batch.blocks():
        migrated.insert(table, columns, dedup_token=token)
    got = migrated.query("SELECT execution_id, slippage_bps FROM executions FINAL ORDER BY execution_id").rows
    assert got[0] == ("a-1:1", 20.0) and got[2][1] is None


@pytest.mark.parametrize("sql", ["INSERT INTO breaches (account) VALUES ('x')", "DROP TABLE breaches",
                                 "CREATE TABLE z (a UInt8) ENGINE = Memory", "SELECT 1; DROP TABLE breaches",
                                 "ALTER TABLE breaches DELETE WHERE 1", "OPTIMIZE TABLE breaches FINAL"])
def test_read_only_check_rejects_writes(sql: str) -> None:
    with pytest.raises(UserError):
        check_read_only(sql)


def test_read_only_is_enforced_by_the_server_too(migrated) -> None:
    # a write smuggled past the keyword check (a SELECT that is really an INSERT ... SELECT is not possible,
    # so call the store directly with a write): readonly=1 on the server, a readonly session on chdb
    with pytest.raises((StoreError, UserError)):
        migrated.query("INSERT INTO breaches (account) SELECT 'x'", readonly=True)
    assert migrated.count("breaches", final=False) == 0
    assert migrated.query("SELECT count() FROM breaches", readonly=True).scalar() == 0


def test_substitute_without_params_is_verbatim_and_with_params_escapes() -> None:
    assert substitute("SELECT '%'", None) == "SELECT '%'"
    assert substitute("SELECT %(a)s, %(b)s", {"a": "it's", "b": float("nan")}) == "SELECT 'it\\'s', nan"
    with pytest.raises(UserError):
        substitute("SELECT %(missing)s", {"a": 1})
    assert math.isnan(float("nan"))


def test_cluster_ddl_text() -> None:
    target = migrations.Target("audit", cluster="prod", ttl=True, dedup_window=True)
    text = migrations.render(target)
    assert "CREATE DATABASE IF NOT EXISTS audit ON CLUSTER prod;" in text
    for table in migrations.AUDIT_TABLES:
        assert f"CREATE TABLE IF NOT EXISTS audit.{table}_local ON CLUSTER prod" in text
        assert (f"ReplicatedReplacingMergeTree('/clickhouse/tables/{{shard}}/audit/{table}_local', '{{replica}}', "
                "ingest_version)") in text
        assert f"CREATE TABLE IF NOT EXISTS audit.{table} ON CLUSTER prod AS audit.{table}_local" in text
        assert f"ENGINE = Distributed(prod, audit, {table}_local, sipHash64(" in text
    assert "non_replicated_deduplication_window" not in text  # replicated tables deduplicate inserts already
    assert "schema_migrations ON CLUSTER prod" in text
    assert "ReplicatedReplacingMergeTree('/clickhouse/tables/audit/schema_migrations', '{replica}', applied_at)" in text
    assert text.count("TTL event_date + toIntervalDay(") == 6


def test_single_node_ddl_for_18_16_has_no_ttl_and_no_dedup_window() -> None:
    text = migrations.render(migrations.Target("backstop", ttl=False, dedup_window=False))
    assert "TTL" not in text and "ON CLUSTER" not in text and "Distributed" not in text
    assert "non_replicated_deduplication_window" not in text
    assert text.count("ENGINE = ReplacingMergeTree(ingest_version)") == 6


def test_migrate_print_cli(capsys) -> None:
    from pipelines.cli import main

    assert main(["audit", "migrate", "--print", "--cluster", "c1", "--server-version", "18.16.1"]) == 0
    out = capsys.readouterr().out
    assert "ON CLUSTER c1" in out and "TTL" not in out
    assert main(["audit", "migrate", "--print", "--cluster", "bad name"]) == 2
