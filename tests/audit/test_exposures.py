"""The ``exposures`` audit table: migration, a re-sent snapshot stored once, the demo's series, the plot's line."""

from __future__ import annotations

import math
import uuid
from collections import defaultdict

import pytest

from pipelines.audit import migrations, plot, rows
from pipelines.audit.store import EmbeddedStore, Store
from pipelines.audit.timeline import Entry
from tests.kit.incident import ACCOUNT, T0

OTHER = "acct-2"


def snapshot(t: int, ratio: float, account: str = ACCOUNT, state: str = "normal") -> dict:
    equity = 100_000.0
    return {"account": account, "event_time_ms": t, "equity_usd": equity, "maintenance_margin_usd": ratio * equity,
            "initial_margin_usd": 1.25 * ratio * equity, "margin_ratio": ratio, "state": state}


SERIES = [snapshot(T0, 0.8), snapshot(T0 + 5_000, 0.95), snapshot(T0 + 7_000, 1.04, state="margin_call"),
          snapshot(T0 + 9_000, math.inf, state="liquidating"), snapshot(T0 + 3_000, 0.5, account=OTHER)]


def insert(store: Store, snapshots: list[dict], first_offset: int = 0) -> None:
    """One sink batch of ``snapshots`` at consecutive offsets of the exposures topic from ``first_offset``."""
    batch = rows.Batch()
    for i, value in enumerate(snapshots):
        assert batch.add("ExposureSnapshot", value, rows.Coordinates("backstop.exposures", 0, first_offset + i,
                                                                      value["event_time_ms"])) == "exposures"
    for table, columns, token in batch.blocks():
        store.insert(table, columns, dedup_token=token)


def test_migration_adds_exposures_to_a_store_migrated_before_it(store, monkeypatch) -> None:
    with monkeypatch.context() as before:
        before.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:5])
        assert [v for v, _ in migrations.migrate(store)] == [1, 2, 3, 4, 5]
        assert not store.has_table("exposures")
        assert plot.exposures(store, ACCOUNT) == []  # an older store still plots, without the line
    assert migrations.migrate(store) == [(6, "exposures")]
    assert migrations.migrate(store) == []
    described = {r[0] for r in store.query(f"DESCRIBE TABLE {store.table('exposures')}").rows}
    assert set(rows.COLUMNS["exposures"] + rows.KAFKA) <= described


def test_a_resent_snapshot_is_stored_once(migrated) -> None:
    insert(migrated, SERIES)
    insert(migrated, SERIES[1:3], first_offset=40)  # re-sent later, at other offsets (a worker replaying)
    assert migrated.count("exposures") == len(SERIES)
    assert migrated.count("exposures", final=False) == len(SERIES) + 2


def test_exposures_read_back_in_time_order_for_the_account(migrated) -> None:
    insert(migrated, list(reversed(SERIES)))
    got = plot.exposures(migrated, ACCOUNT)
    assert [(x.time_ms, x.margin_ratio, x.state) for x in got] == [
        (T0, 0.8, "normal"), (T0 + 5_000, 0.95, "normal"), (T0 + 7_000, 1.04, "margin_call"),
        (T0 + 9_000, None, "liquidating")]
    assert [x.time_ms for x in plot.exposures(migrated, ACCOUNT, T0 + 1, T0 + 7_000)] == [T0 + 5_000, T0 + 7_000]


def test_the_margin_panel_draws_the_snapshots_as_a_line_with_breaches_and_actions_on_it() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    snapshots = [plot.Exposure(T0, 0.8, "normal"), plot.Exposure(T0 + 5_000, 1.04, "margin_call"),
                 plot.Exposure(T0 + 9_000, None, "liquidating")]
    entries = [Entry(T0 + 5_000, "breach", "margin_shortfall", ACCOUNT, margin_ratio=1.04, fields={"threshold": 1.0}),
               Entry(T0 + 5_001, "action", "margin_call", ACCOUNT, margin_ratio=1.04)]
    fig, ax = plt.subplots()
    try:
        plot._draw_margin(ax, entries, snapshots)
        lines = {line.get_label(): line for line in ax.get_lines()}
        ratio = lines["margin ratio (exposure snapshots)"]
        assert list(ratio.get_ydata()[:2]) == [0.8, 1.04] and math.isnan(ratio.get_ydata()[2])
        assert len(ratio.get_xdata()) == 3
        assert list(lines["liquidatable (1)"].get_ydata()) == [1.0, 1.0]
        points = {c.get_label(): c.get_offsets() for c in ax.collections}
        assert points["at breaches"][:, 1].tolist() == [1.04] and points["at actions"][:, 1].tolist() == [1.04]
    finally:
        plt.close(fig)


def test_the_demo_store_holds_every_account_ratio_series_the_engine_produced(chdb_path) -> None:
    from pipelines.backtest.run import engine_params, simulate
    from pipelines.demo import AuditCollector
    from pipelines.scenarios import library
    from pipelines.scenarios.generate import generate

    generated = generate(library.get("aug-2024"))
    produced: dict[str, dict[int, float | None]] = defaultdict(dict)
    collector = AuditCollector()

    def tee(kind: str, value) -> None:
        if kind == "exposure":
            ratio = value["margin_ratio"]
            produced[value["account"]][value["event_time_ms"]] = ratio if math.isfinite(ratio) else None
        collector(kind, value)

    simulate(generated, with_backstop=True, params=engine_params(generated), on_output=tee)
    store = EmbeddedStore(chdb_path, f"demo_{uuid.uuid4().hex[:12]}")
    try:
        migrations.migrate(store, inputs_ttl_days=0, audit_ttl_days=0)
        collector.write(store)
        assert set(produced) == {a.account for a in generated.accounts}
        for account, series in produced.items():
            stored = [(x.time_ms, x.margin_ratio) for x in plot.exposures(store, account)]
            assert stored == sorted(series.items()), account
    finally:
        store.execute(f"DROP DATABASE IF EXISTS {store.database}")
        store.close()


@pytest.mark.kafka
def test_the_sink_stores_exposures_from_their_topic_once_when_re_sent(migrated, kafka_bootstrap, topic_factory) -> None:
    from confluent_kafka import Producer

    from pipelines.audit.sink import make_sink
    from pipelines.config import KafkaSettings
    from pipelines.events.codec import Codec

    codec, topic = Codec(), topic_factory(partitions=3, prefix="backstop-exposures")
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all", "enable.idempotence": True})
    for value in SERIES + SERIES[:2]:  # the first two re-sent, as a worker replaying from its checkpoint would
        producer.produce(topic, codec.encode("ExposureSnapshot", value), key=codec.key("ExposureSnapshot", value))
    assert producer.flush(30) == 0
    sink = make_sink(migrated, KafkaSettings(bootstrap=kafka_bootstrap), group=f"audit-{uuid.uuid4().hex[:8]}",
                     topics=[topic], codec=codec, linger_s=0.2)
    try:
        stats = sink.run(idle_exit_s=4.0)
    finally:
        sink.consumer.close()
    assert stats.by_table == {"exposures": len(SERIES) + 2} and stats.undecodable == 0
    assert migrated.count("exposures") == len(SERIES)
    assert [x.margin_ratio for x in plot.exposures(migrated, OTHER)] == [0.5]


def test_the_sink_subscribes_to_the_exposures_topic() -> None:
    from pipelines.audit.sink import audit_topics

    assert "backstop.exposures" in audit_topics() and "backstop.market.fanout" not in audit_topics()
