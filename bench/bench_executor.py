"""Executor latency: action produced -> execution report produced, on the real broker.

    .venv/bin/python bench/bench_executor.py [--quick] [--actions N] [--rate R] [--bootstrap host:port]

Signed delta-hedge actions are produced at a steady rate R/s to a fresh action topic; one
executor (transactional, batches of up to 200) carries them out against the simulated venue (no
injected latency) and produces the reports. Latency per action = the report message's
timestamp minus the action message's timestamp (both CreateTime, the same machine clock).
Baseline in the same run: a raw confluent-kafka consume -> produce passthrough (no decode, no
signature, no venue, no transaction) over the same actions, which is the I/O floor. Prints
p50/p99 for both and writes bench/results/executor.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from confluent_kafka import Consumer, Producer

from pipelines.config import KafkaSettings
from pipelines.engine.wire import action_record
from pipelines.events.codec import default_codec
from pipelines.execution.executor import Executor, ExecutorConfig
from pipelines.execution.venue import SimulatedVenue, SimulatedVenueConfig
from pipelines.policy.actions import ActionType, make_action
from pipelines.policy.signing import SigningKey
from pipelines.topics_cli import create_topics

REPO = Path(__file__).resolve().parents[1]
KEY = SigningKey("bench", b"bench-signing-key-0123456789")
BOOK = {"bids": [{"price": 60_000 - i, "quantity": 1e6} for i in range(1, 20)],
        "asks": [{"price": 60_000 + i, "quantity": 1e6} for i in range(1, 20)]}


def produce_paced(bootstrap: str, topic: str, values: list[tuple[bytes, bytes]], rate: float) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
    start = time.perf_counter()
    for i, (key, value) in enumerate(values):
        due = start + i / rate
        while (now := time.perf_counter()) < due:
            time.sleep(min(due - now, 0.001))
        producer.produce(topic, key=key, value=value)
        producer.poll(0)
    producer.flush(30)


def timestamps(bootstrap: str, topic: str, count: int, key_of, committed: bool) -> dict[str, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "isolation.level": "read_committed" if committed else "read_uncommitted"})
    consumer.subscribe([topic])
    out: dict[str, int] = {}
    deadline = time.monotonic() + 120
    while len(out) < count and time.monotonic() < deadline:
        for m in consumer.consume(1000, 0.5):
            if m.error() is None:
                out[key_of(m)] = m.timestamp()[1]
    consumer.close()
    return out


def latencies(sent: dict[str, int], done: dict[str, int]) -> dict[str, float]:
    values = np.array([done[k] - sent[k] for k in sent if k in done], dtype=float)
    return {"count": int(len(values)), "p50_ms": float(np.percentile(values, 50)),
            "p99_ms": float(np.percentile(values, 99)), "max_ms": float(values.max())}


def run_executor(bootstrap: str, prefix: str, n: int, rate: float) -> dict[str, float]:
    codec = default_codec()
    actions = [action_record(make_action(KEY, ActionType.DELTA_HEDGE, f"acct-{i % 500}", 1_795_000_000_000 + i,
                                         instrument="BTC-PERPETUAL", side="buy" if i % 2 else "sell", quantity=0.01,
                                         breach_ids=[f"b{i}"])) for i in range(n)]
    topic = f"{prefix}backstop.actions"
    with tempfile.TemporaryDirectory() as tmp:
        venue = SimulatedVenue(SimulatedVenueConfig(books={"BTC-PERPETUAL": BOOK}), Path(tmp) / "ledger.sqlite")
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{prefix}executors",
                             "enable.auto.commit": False, "auto.offset.reset": "earliest",
                             "isolation.level": "read_committed", "fetch.wait.max.ms": 5})
        producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"{prefix}bench", "linger.ms": 1})
        executor = Executor(consumer, producer, codec, venue, KEY,
                            ExecutorConfig(topic, f"{prefix}backstop.executions", f"{prefix}backstop.deadletters",
                                           poll_timeout_s=0.005))
        worker = threading.Thread(target=executor.run, kwargs={"max_actions": n})
        worker.start()
        time.sleep(3)  # let the group form before the clock starts
        produce_paced(bootstrap, topic, [(a["account"].encode(), codec.encode("Action", a)) for a in actions], rate)
        worker.join(timeout=300)
        venue.close()
    sent = timestamps(bootstrap, topic, n, lambda m: codec.decode(m.value()).value["action_id"], committed=False)
    done = timestamps(bootstrap, f"{prefix}backstop.executions", n,
                      lambda m: codec.decode(m.value()).value["action_id"], committed=True)
    return latencies(sent, done)


def run_passthrough(bootstrap: str, prefix: str, n: int, rate: float) -> dict[str, float]:
    source, sink = f"{prefix}backstop.positions", f"{prefix}backstop.collateral"  # two spare catalogue topics
    stop = threading.Event()

    def passthrough() -> None:
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{prefix}pass",
                             "auto.offset.reset": "earliest", "fetch.wait.max.ms": 5})
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
        consumer.subscribe([source])
        while not stop.is_set():
            for m in consumer.consume(200, 0.005):
                if m.error() is None:
                    producer.produce(sink, key=m.key(), value=m.value())
            producer.poll(0)
        producer.flush(30)
        consumer.close()

    worker = threading.Thread(target=passthrough)
    worker.start()
    time.sleep(3)
    produce_paced(bootstrap, source, [(f"acct-{i % 500}".encode(), f"{i}".encode()) for i in range(n)], rate)
    done = timestamps(bootstrap, sink, n, lambda m: m.value().decode(), committed=False)
    stop.set()
    worker.join()
    sent = timestamps(bootstrap, source, n, lambda m: m.value().decode(), committed=False)
    return latencies(sent, done)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--actions", type=int, default=5_000)
    parser.add_argument("--rate", type=float, default=500.0, help="actions per second")
    parser.add_argument("--quick", action="store_true", help="1,000 actions")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "executor.json"))
    args = parser.parse_args()
    n = 1_000 if args.quick else args.actions
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    create_topics(KafkaSettings(bootstrap=args.bootstrap, topic_prefix=prefix))
    executor = run_executor(args.bootstrap, prefix, n, args.rate)
    passthrough = run_passthrough(args.bootstrap, prefix, n, args.rate)
    result = {
        "benchmark": "executor action->report latency",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}",
        "actions": n, "rate_per_s": args.rate,
        "executor": executor, "raw_passthrough": passthrough,
        "p50_ratio": executor["p50_ms"] / max(passthrough["p50_ms"], 1e-9),
        "p99_ratio": executor["p99_ms"] / max(passthrough["p99_ms"], 1e-9),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"executor       p50 {executor['p50_ms']:7.1f} ms   p99 {executor['p99_ms']:7.1f} ms   "
          f"({executor['count']} actions)")
    print(f"raw passthrough p50 {passthrough['p50_ms']:6.1f} ms   p99 {passthrough['p99_ms']:7.1f} ms")
    print(f"ratio          p50 x{result['p50_ratio']:.1f}   p99 x{result['p99_ratio']:.1f}   -> {out}")


if __name__ == "__main__":
    main()
