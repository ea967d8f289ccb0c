"""Audit fixtures: one ``store`` fixture over both backends (the real server and embedded chdb)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.audit import migrations
from pipelines.audit.store import EmbeddedStore, ServerStore, Store


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One embedded store folder for the session: chdb runs one embedded server per process."""
    return tmp_path_factory.mktemp("audit-store")


@pytest.fixture(params=[pytest.param("server", marks=pytest.mark.clickhouse), "embedded"])
def store(request: pytest.FixtureRequest, chdb_path: Path) -> Iterator[Store]:
    """An empty audit database on the real ClickHouse server, or in the embedded chdb store. Only
    the server variant is marked ``clickhouse``: the embedded one needs no service."""
    if request.param == "server":
        client = request.getfixturevalue("clickhouse")  # fresh database, dropped afterwards
        host, port = request.getfixturevalue("clickhouse_address")
        store = ServerStore(host, port, database=client.connection.database)
        yield store
        store.close()
    else:
        store = EmbeddedStore(chdb_path, f"test_{uuid.uuid4().hex[:12]}")
        try:
            yield store
        finally:
            store.execute(f"DROP DATABASE IF EXISTS {store.database}")
            store.close()


@pytest.fixture
def migrated(store: Store) -> Store:
    migrations.migrate(store)
    return store

