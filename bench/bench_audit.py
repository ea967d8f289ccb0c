"""Audit sink throughput against a raw clickhouse-driver columnar insert of the same rows, same run.

    .venv/bin/python bench/bench_audit.py [--quick] [--rows N] [--clickhouse host:port] [--bootstrap host:port]

1. N mixed records (index and mark prices, positions, breaches, actions, executions) are encoded
   with the events codec and produced to a fresh topic (3 partitions) on the real broker.
2. ``sink``: the audit sink consumes them end to end (Kafka fetch, decode, rows, columnar insert
   into a ReplacingMergeTree, offset commit) until every row is stored: rows/s.
3. ``raw``: the very same columnar blocks (built once, untimed) inserted with clickhouse-driver
   ``execute(..., columnar=True)`` in blocks of the sink's batch size into a fresh copy of the
   tables: rows/s -- the ceiling for the insert alone.
4. ``sink_core``: decoded dicts -> Batch -> Store.insert, without Kafka: where the time goes.

Prints the figures and the ratio and writes bench/results/audit.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: the repository root, for the tests' sample records

from pipelines.audit import migrations  # noqa: E402
from pipelines.audit.rows import Batch, Coordinates  # noqa: E402
from pipelines.audit.sink import make_sink  # noqa: E402
from pipelines.audit.store import ServerStore  # noqa: E402
from pipelines.config import KafkaSettings  # noqa: E402
from pipelines.events.codec import Codec  # noqa: E402
from tests.kit.records import sample  # noqa: E402

T0 = 1_798_761_600_000
KINDS = ("IndexPrice", "MarkPrice", "PositionUpdate", "MarkPrice", "IndexPrice", "Breach", "Action", "ExecutionReport")


def records(n: int) -> list[tuple[str, dict]]:
    out = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        t = T0 + i
        if kind == "IndexPrice":
            value = sample(kind, price=60_000.0 + i % 500, event_time_ms=t)
        elif kind == "MarkPrice":
            value = sample(kind, mark_price=0.05 + (i % 100) / 1e4, event_time_ms=t)
        elif kind == "PositionUpdate":
            value = sample(kind, account=f"acct-{i % 1000}", sequence=i, event_time_ms=t)
        elif kind == "Breach":
            value = sample(kind, breach_id=f"b-{i}", account=f"acct-{i % 1000}", event_time_ms=t)
        elif kind == "Action":
            value = sample(kind, action_id=f"a-{i}", account=f"acct-{i % 1000}", breach_ids=[f"b-{i - 1}"],
                           event_time_ms=t)
        else:
            value = sample(kind, execution_id=f"a-{i - 1}:1", action_id=f"a-{i - 1}", account=f"acct-{i % 1000}",
                           event_time_ms=t)
        out.append((kind, value))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20k rows instead of 200k")
    parser.add_argument("--rows", type=int)
    parser.add_argument("--batch-rows", type=int, default=5000)
    parser.add_argument("--clickhouse", default="127.0.0.1:9000")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "audit.json"))
    args = parser.parse_args()
    n = args.rows or (20_000 if args.quick else 200_000)
    host, port = args.clickhouse.rsplit(":", 1)

    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    codec = Codec()
    data = records(n)
    topic = f"bench-audit-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(30)
    databases = [f"bench_audit_{uuid.uuid4().hex[:8]}" for _ in range(3)]
    stores = [ServerStore(host, int(port), database=db) for db in databases]
    try:
        for store in stores:
            migrations.migrate(store)
        producer = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 20, "batch.num.messages": 10000,
                             "queue.buffering.max.messages": 1_000_000})
        started = time.perf_counter()
        for kind, value in data:
            producer.produce(topic, codec.encode(kind, value), key=codec.key(kind, value))
            producer.poll(0)
        producer.flush(60)
        produce_s = time.perf_counter() - started

        # 2. the sink end to end
        sink = make_sink(stores[0], KafkaSettings(bootstrap=args.bootstrap), group=f"bench-{uuid.uuid4().hex[:8]}",
                         topics=[topic], codec=codec, batch_rows=args.batch_rows, linger_s=0.5)
        started = time.perf_counter()
        stats = sink.run(max_messages=n, idle_exit_s=15)
        sink_s = time.perf_counter() - started
        sink.consumer.close()
        assert stats.rows_inserted == n, stats

        # 3. raw clickhouse-driver, the same rows as the same columnar blocks
        blocks = []
        for start in range(0, n, args.batch_rows):
            batch = Batch()
            for i in range(start, min(n, start + args.batch_rows)):
                kind, value = data[i]
                batch.add(kind, value, Coordinates(topic, i % 3, i, value["event_time_ms"]))
            blocks.extend((table, columns) for table, columns, _ in batch.blocks())
        client = stores[1].client
        started = time.perf_counter()
        for table, columns in blocks:
            names = list(columns)
            client.execute(f"INSERT INTO {databases[1]}.{table} ({', '.join(names)}) VALUES",
                           [columns[c] for c in names], columnar=True)
        raw_s = time.perf_counter() - started

        # 4. sink core without Kafka: decoded dicts -> Batch -> Store.insert
        started = time.perf_counter()
        for start in range(0, n, args.batch_rows):
            batch = Batch()
            for i in range(start, min(n, start + args.batch_rows)):
                kind, value = data[i]
                batch.add(kind, value, Coordinates(topic, i % 3, i, value["event_time_ms"]))
            for table, columns, token in batch.blocks():
                stores[2].insert(table, columns, dedup_token=token)
        core_s = time.perf_counter() - started

        counts = [sum(s.count(t) for t in ("inputs", "breaches", "actions", "executions")) for s in stores]
        assert counts == [n, n, n], counts
        result = {
            "rows": n,
            "batch_rows": args.batch_rows,
            "clickhouse_version": ".".join(map(str, stores[0].version())),
            "kafka": args.bootstrap,
            "python": platform.python_version(),
            "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cpus",
            "produce_rows_per_s": round(n / produce_s),
            "sink_rows_per_s": round(n / sink_s),
            "sink_core_rows_per_s": round(n / core_s),
            "raw_driver_rows_per_s": round(n / raw_s),
            "sink_vs_raw": round((n / sink_s) / (n / raw_s), 3),
            "sink_core_vs_raw": round((n / core_s) / (n / raw_s), 3),
            "sink_batches": stats.batches,
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    finally:
        for store in stores:
            try:
                store.client.execute(f"DROP DATABASE IF EXISTS {store.database}")
            except Exception:  # noqa: BLE001
                pass
            store.close()
        admin.delete_topics([topic])
    print(f"rows {n}, batch {args.batch_rows}, ClickHouse {result['clickhouse_version']}")
    print(f"  sink (Kafka -> decode -> rows -> insert -> commit): {result['sink_rows_per_s']:>10,} rows/s")
    print(f"  sink core (dicts -> rows -> insert, no Kafka):      {result['sink_core_rows_per_s']:>10,} rows/s")
    print(f"  raw clickhouse-driver columnar insert, same rows:   {result['raw_driver_rows_per_s']:>10,} rows/s")
    print(f"  sink / raw = {result['sink_vs_raw']}, sink core / raw = {result['sink_core_vs_raw']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
