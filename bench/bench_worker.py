"""Stream-worker throughput and event-to-action latency on the real broker, beside baselines.

    .venv/bin/python bench/bench_worker.py [--quick] [--bootstrap host:port]

Throughput: A accounts (a perpetual position and collateral each) and then T index ticks are
loaded into fresh topics; the last tick is a 10 % gap that halts the underlying. One worker
process (`backstop worker`) is started; throughput = input events / time from its first
output to the halt. Each input event is one Kafka message (the worker's own fan-out of the
market records to its 12 account partitions travels in batches, and is not counted).
Baselines over the same number of messages, same run: a raw confluent-kafka consume -> produce
passthrough (the I/O floor) and a plain faust-streaming passthrough agent; and the same events
through the in-process core (`run_shards`, no Kafka) on 12 shards, as one worker holds them,
and on one: the limit the core itself sets.

Latency: at each of a few rates R (a low one the worker keeps up with, and the issue's 5,000/s),
index ticks at R/s over many underlyings (event time = wall clock at production); once
a second one underlying gaps 10 %; latency = the halt action's Kafka timestamp minus the event
time of the gap tick (both on this machine's clock).
Writes bench/results/worker.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from confluent_kafka import Consumer, Producer

from pipelines.config import KafkaSettings
from pipelines.engine.shards import partition_for
from pipelines.events.codec import default_codec
from pipelines.replay.inprocess import replay_dicts
from pipelines.topics import spec_for
from pipelines.topics_cli import create_topics

REPO = Path(__file__).resolve().parents[1]
SECRET = "bench-worker-signing-key-0123456789"
T0 = 1_795_000_000_000


def start_worker(bootstrap: str, prefix: str, log: Path, idle_ms: int = 2_000) -> subprocess.Popen:
    env = dict(os.environ, BACKSTOP_ACTIONS_SIGNING_KEY=SECRET, BACKSTOP_KAFKA_TOPIC_PREFIX=prefix)
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", "worker", "--bootstrap", bootstrap,
                             "--max-event-age-s", "1e9", "--idle-ms", str(idle_ms), "--snapshot-every", "5000"],
                            env=env, stdout=subprocess.DEVNULL, stderr=open(log, "ab"), start_new_session=True,
                            cwd=REPO)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def peak_rss_mb(proc: subprocess.Popen) -> float:
    """The process's peak resident memory so far (Linux ``VmHWM``), in MB; NaN once it has exited
    (a dead, unreaped worker's status has no ``VmHWM`` line)."""
    try:
        status = Path(f"/proc/{proc.pid}/status").read_text()
    except OSError:
        return float("nan")
    return next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM:")),
                float("nan"))


def index_value(t: int, price: float, underlying: str = "BTC") -> dict:
    return {"underlying": underlying, "index_name": underlying.lower(), "price": price, "event_time_ms": t}


def index(t: int, price: float, underlying: str = "BTC") -> bytes:
    return default_codec().encode("IndexPrice", index_value(t, price, underlying))


def book_events(accounts: int) -> list[tuple[str, str, str, dict]]:
    """(topic, key, record, value): collateral and a perpetual position for each account."""
    out = []
    for i in range(accounts):
        account = f"acct-{i}"
        out.append(("backstop.collateral", account, "CollateralUpdate", {
            "account": account, "asset": "USDC", "amount": 100_000.0, "change": 100_000.0, "reason": "deposit",
            "sequence": 1, "event_time_ms": T0}))
        out.append(("backstop.positions", account, "PositionUpdate", {
            "account": account, "instrument": "BTC-PERPETUAL", "quantity": 1.0 + i % 5, "average_price": 60_000.0,
            "sequence": 1, "event_time_ms": T0}))
    return out


def throughput_events(accounts: int, ticks: int) -> list[tuple[str, str, str, dict]]:
    """The throughput load: the book, ``ticks`` index ticks 10 ms apart, then a 10 % gap."""
    out = book_events(accounts)
    price = 60_000.0
    rng = np.random.default_rng(7)
    for k in range(ticks):
        price *= 1 + rng.normal(0, 1e-4)
        out.append(("backstop.market.index", "BTC", "IndexPrice", index_value(T0 + 10 + k * 10, round(price, 2))))
    out.append(("backstop.market.index", "BTC", "IndexPrice", index_value(T0 + 20 + ticks * 10, price * 0.9)))
    return out


def produce(producer: Producer, prefix: str, events: list[tuple[str, str, str, dict]]) -> int:
    codec = default_codec()
    for topic, key, record, value in events:
        producer.produce(f"{prefix}{topic}", key=key.encode(), value=codec.encode(record, value))
        producer.poll(0)
    return len(events)


def bench_core(accounts: int, ticks: int, partitions: int) -> float:
    """Input events/s of the same load through the in-process cluster (``run_shards``, no Kafka,
    no decoding) with ``partitions`` shards: what the core alone allows. Twelve shards is what
    one worker owning every account partition runs (each applies every market event)."""
    events = throughput_events(accounts, ticks)
    offsets: dict[tuple[str, int], int] = {}
    rows = []
    for topic, key, record, value in events:
        partition = partition_for(key, spec_for(topic).partitions)
        offset = offsets[(topic, partition)] = offsets.get((topic, partition), -1) + 1
        rows.append((topic, partition, offset, record, value))
    start = time.perf_counter()
    replay_dicts(rows, partitions=partitions)
    return len(rows) / (time.perf_counter() - start)


def outputs(bootstrap: str, topic: str, stop_when, timeout_s: float, seen: list | None = None) -> list:
    """(arrival monotonic s, Kafka timestamp ms, decoded) of messages on ``topic`` until ``stop_when``
    (appended to ``seen`` as they come, so another thread can watch)."""
    codec = default_codec()
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "fetch.wait.max.ms": 5})
    consumer.subscribe([topic])
    seen = [] if seen is None else seen
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not stop_when(seen):
        for m in consumer.consume(500, 0.05):
            if m.error() is None:
                seen.append((time.monotonic(), m.timestamp()[1], codec.decode(m.value()).value))
    consumer.close()
    return seen


def bench_throughput(bootstrap: str, prefix: str, accounts: int, ticks: int, tmp: Path, workers: int = 1) -> dict:
    """Input events/s of ``workers`` worker processes in one group, from the first exposure
    snapshot (the group has formed and the book is loaded) to the halt on the last tick."""
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "linger.ms": 5})
    events = produce(producer, prefix, throughput_events(accounts, ticks))
    producer.flush(60)
    procs = [start_worker(bootstrap, prefix, tmp / f"throughput-{n}.log") for n in range(workers)]
    started = time.monotonic()
    try:
        first = outputs(bootstrap, f"{prefix}backstop.exposures", lambda s: len(s) > 0, 300)
        halts = outputs(bootstrap, f"{prefix}backstop.actions",
                        lambda s: any(v["action_type"] == "halt" for _, _, v in s), 600)
        rss = [peak_rss_mb(proc) for proc in procs]
    finally:
        for proc in procs:
            stop(proc)
    if not first or not halts:
        raise SystemExit(f"worker produced no output; see {tmp / 'throughput.log'}")
    elapsed = halts[-1][0] - first[0][0]
    return {"input_events": events, "startup_s": first[0][0] - started, "seconds": elapsed,
            "events_per_s": events / elapsed, "peak_rss_mb": rss}


def load_raw(bootstrap: str, topic: str, n: int) -> None:
    """``n`` 60-byte messages over 64 keys: the baselines' input."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(n):
        producer.produce(topic, key=b"k%d" % (i % 64), value=b"x" * 60)
        if i % 10_000 == 0:
            producer.poll(0)
    producer.flush(60)


def bench_raw_passthrough(bootstrap: str, prefix: str, n: int) -> float:
    source, sink = f"{prefix}raw-in", f"{prefix}raw-out"
    load_raw(bootstrap, source, n)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{prefix}raw", "auto.offset.reset": "earliest"})
    consumer.subscribe([source])
    out = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    done, start = 0, None
    while done < n:
        for m in consumer.consume(1000, 0.5):
            if m.error() is None:
                start = start or time.monotonic()
                out.produce(sink, key=m.key(), value=m.value())
                done += 1
        out.poll(0)
    out.flush(60)
    consumer.close()
    return n / (time.monotonic() - start)


def bench_faust_passthrough(bootstrap: str, prefix: str, n: int, tmp: Path) -> float:
    source, sink = f"{prefix}faust-in", f"{prefix}faust-out"
    load_raw(bootstrap, source, n)
    env = dict(os.environ, PASSTHROUGH_BROKER=f"kafka://{bootstrap}", PASSTHROUGH_SOURCE=source,
               PASSTHROUGH_SINK=sink, PASSTHROUGH_APP_ID=f"{prefix}faust-pass", PASSTHROUGH_DATADIR=str(tmp / "faust"))
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "infra" / "faust_passthrough.py"), "worker", "-l",
                             "warn", "--without-web"], env=env, stdout=subprocess.DEVNULL,
                            stderr=open(tmp / "faust.log", "ab"), start_new_session=True)
    try:
        seen = outputs_raw(bootstrap, sink, n, 600)
    finally:
        stop(proc)
    return n / (seen[-1] - seen[0])


def outputs_raw(bootstrap: str, topic: str, n: int, timeout_s: float) -> list[float]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    arrivals: list[float] = []
    deadline = time.monotonic() + timeout_s
    while len(arrivals) < n and time.monotonic() < deadline:
        for m in consumer.consume(1000, 0.2):
            if m.error() is None:
                arrivals.append(time.monotonic())
    consumer.close()
    return arrivals


def bench_latency(bootstrap: str, prefix: str, rate: float, seconds: int, tmp: Path) -> dict:
    """Steady index ticks at ``rate``/s with a gap each second; gap tick -> halt action latency."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    produce(producer, prefix, book_events(100))
    producer.flush(30)
    worker = start_worker(bootstrap, prefix, tmp / "latency.log", idle_ms=200)
    time.sleep(15)  # the group forms and the book is loaded before the clock starts
    gaps: dict[tuple[str, int], int] = {}
    stop_flag = threading.Event()
    halts: list = []

    def watch() -> None:
        outputs(bootstrap, f"{prefix}backstop.actions", lambda s: stop_flag.is_set(), seconds + 300, halts)

    watcher = threading.Thread(target=watch)
    watcher.start()
    underlyings = [f"U{i}" for i in range(seconds + 1)]  # each gaps once: a halt is reported once per level
    prices = {u: 100.0 for u in underlyings}
    start = time.perf_counter()
    n = int(rate * seconds)
    for k in range(n):
        due = start + k / rate
        while time.perf_counter() < due:
            time.sleep(0.0002)
        now_ms = int(time.time() * 1000)
        underlying = underlyings[k % len(underlyings)]
        if k % int(rate) == int(rate) - 1:  # once a second, one underlying gaps 10 %
            underlying = underlyings[len(gaps)]
            prices[underlying] *= 0.9
            gaps[(underlying, now_ms)] = k
        producer.produce(f"{prefix}backstop.market.index", key=underlying.encode(),
                         value=index(now_ms, round(prices[underlying], 4), underlying))
        producer.poll(0)
    producer.flush(30)
    deadline = time.monotonic() + 240  # the worker may be behind: wait for every gap's halt
    while time.monotonic() < deadline and sum(
            (v["account"], v["event_time_ms"]) in gaps for _, _, v in list(halts) if v["action_type"] == "halt") < len(gaps):
        time.sleep(0.5)
    stop_flag.set()
    watcher.join()
    stop(worker)
    lat = np.array([ts - v["event_time_ms"] for _, ts, v in halts if v["action_type"] == "halt"
                    and (v["account"], v["event_time_ms"]) in gaps], dtype=float)
    if not len(lat):
        raise SystemExit(f"no halt actions measured; see {tmp / 'latency.log'}")
    return {"rate_per_s": rate, "samples": int(len(lat)), "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--quick", action="store_true", help="smaller loads")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "worker.json"))
    args = parser.parse_args()
    accounts, ticks, seconds = (200, 2_000, 5) if args.quick else (2_000, 20_000, 20)
    tmp = REPO / ".backstop" / "bench-worker"
    tmp.mkdir(parents=True, exist_ok=True)
    prefix = f"bw{uuid.uuid4().hex[:6]}."
    create_topics(KafkaSettings(bootstrap=args.bootstrap, topic_prefix=prefix))
    throughput = bench_throughput(args.bootstrap, prefix, accounts, ticks, tmp)
    raw = bench_raw_passthrough(args.bootstrap, prefix, throughput["input_events"])
    faust_rate = bench_faust_passthrough(args.bootstrap, prefix, throughput["input_events"], tmp)
    core = {f"{n}_partitions_events_per_s": bench_core(accounts, ticks, n) for n in (12, 1)}
    latency = []
    for rate in ((200.0, 1_000.0) if args.quick else (500.0, 5_000.0)):
        prefix2 = f"bl{uuid.uuid4().hex[:6]}."
        create_topics(KafkaSettings(bootstrap=args.bootstrap, topic_prefix=prefix2))
        latency.append(bench_latency(args.bootstrap, prefix2, rate, seconds, tmp))
    result = {
        "benchmark": "stream worker", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "worker": throughput, "raw_passthrough_msgs_per_s": raw, "faust_passthrough_msgs_per_s": faust_rate,
        "worker_vs_raw": throughput["events_per_s"] / raw, "worker_vs_faust": throughput["events_per_s"] / faust_rate,
        "core": core, "worker_vs_core_12": throughput["events_per_s"] / core["12_partitions_events_per_s"],
        "latency": latency,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"worker            {throughput['events_per_s']:9,.0f} input events/s  (startup {throughput['startup_s']:.1f} s)")
    print(f"raw passthrough   {raw:9,.0f} messages/s   -> worker x{result['worker_vs_raw']:.3f}")
    print(f"faust passthrough {faust_rate:9,.0f} messages/s   -> worker x{result['worker_vs_faust']:.3f}")
    print(f"core in-process   {core['12_partitions_events_per_s']:9,.0f} events/s on 12 shards "
          f"({core['1_partitions_events_per_s']:,.0f} on one)   -> worker x{result['worker_vs_core_12']:.3f}")
    for point in latency:
        print(f"event->action     p50 {point['p50_ms']:.1f} ms  p99 {point['p99_ms']:.1f} ms at {point['rate_per_s']:,.0f} "
              f"events/s ({point['samples']} halts)")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
