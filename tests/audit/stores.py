"""What the audit tests do to a store besides the fixtures: load the incident as the sink would,
and name the same store on the command line."""

from __future__ import annotations

from pipelines.audit import rows
from pipelines.audit.store import ServerStore, Store
from tests.kit.incident import incident


def load_incident(store: Store, repeat: int = 1, records: list[tuple[str, str, dict]] | None = None) -> None:
    """Insert ``records`` (default: the incident) as the sink would, ``repeat`` times (a redelivery
    re-inserts the same coordinates)."""
    for _ in range(repeat):
        batch = rows.Batch()
        offsets: dict[str, int] = {}
        for topic, record, value in records or incident():
            offsets[topic] = offsets.get(topic, -1) + 1
            batch.add(record, value, rows.Coordinates(topic, 0, offsets[topic], value["event_time_ms"]))
        for table, columns, token in batch.blocks():
            store.insert(table, columns, dedup_token=token)


def store_cli_args(store: Store) -> list[str]:
    """Command-line arguments that open the same store as ``store``."""
    if isinstance(store, ServerStore):
        return ["--clickhouse", f"clickhouse://{store.host}:{store.port}/{store.database}"]
    return ["--store", store.path, "--database", store.database]
