"""The stream worker (``backstop worker``) on the venue-scale feed, beside a raw read+decode, in one run.

    .venv/bin/python bench/bench_worker.py [--quick] [--bootstrap host:port] [--rounds 2]

Issue 20's targets, on ``bench/venue_feed.py`` (BTC+ETH options with a mark and IV each every
100 ms, index ticks, depth; accounts with a perpetual and four options each):

- **Throughput.** Worker processes join a fresh group on fresh topics and hold their partitions
  (``/readyz``); then the book and ``--seconds`` of market are produced at full speed. A worker's
  input rate is what it applied (``backstop_events_applied_total``, scraped ten times a second)
  over the time from its first record read (``backstop_events_consumed_total``) to its last
  applied, once it has applied at least what it read; its CPU (``/proc/<pid>/stat``) over the
  same span, and its peak RSS (``VmHWM``). One worker on the accounts; then two workers on
  twice the accounts and the same market (scale-out: each keeps its rate?).
- **Raw baseline, same run, same messages:** a confluent-kafka consumer reads the one-worker
  round's topics with ``consume(1000)`` and decodes every message (``default_codec().decode``).
  Rounds interleave raw, one worker, two workers; the machine's load (``uptime``) is kept per round.
- **Latency.** One worker holds the book; then a venue publishes in real time: every 100 ms one
  step of the feed (index, perpetual mark and depth, every option's mark) with its event time
  set to when it is due, so the rate is set by the chain (5,000 events/s: 494 options). The
  index falls (``--crashes``: 25 %, a crash, and 3 %) over the middle of the run, so accounts
  breach and actions follow. Latency of
  an action = its Kafka timestamp (the worker's produce) minus its event time; the worker's
  ``backstop_event_to_action_latency_seconds`` histogram is kept beside it.
- **Profile** (``--profile``): cProfile of the in-process ``Worker`` on ``MemoryPorts`` over the
  throughput feed (no broker): where a worker's time goes, by function.

Writes bench/results/worker.json.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import io
import json
import os
import platform
import pstats
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository root

from bench import venue_feed
from pipelines.config import KafkaSettings
from pipelines.engine.shard import ACCOUNT_TOPICS, MARKET_TOPICS
from pipelines.events.codec import default_codec
from pipelines.policy.signing import SigningKey
from pipelines.topics import spec_for
from pipelines.topics_cli import create_topics
from pipelines.worker.worker import WorkerConfig

REPO = Path(__file__).resolve().parents[1]
SECRET = "bench-worker-signing-key-0123456789"
INPUT_TOPICS = (*(spec.name for spec in MARKET_TOPICS), *ACCOUNT_TOPICS)
MARKET_NAMES = frozenset(spec.name for spec in MARKET_TOPICS)
CONSUMED = "backstop_events_consumed_total"
APPLIED = "backstop_events_applied_total"
LATENCY = "backstop_event_to_action_latency_seconds"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

Wire = tuple[str, int, bytes, bytes]  # (topic, partition, key, value) as produced


# ---------------------------------------------------------------------- worker processes


@dataclasses.dataclass
class Proc:
    """A worker process and its metrics port."""

    popen: subprocess.Popen
    port: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_worker(bootstrap: str, prefix: str, app_id: str, log: Path, idle_ms: int | None = None) -> Proc:
    """``backstop worker`` with its metrics on a free port (replay-dated events accepted);
    ``idle_ms``: its ``--idle-ms`` (None: the worker's default)."""
    port = free_port()
    idle = ["--idle-ms", str(idle_ms)] if idle_ms else []
    env = dict(os.environ, BACKSTOP_ACTIONS_SIGNING_KEY=SECRET, BACKSTOP_KAFKA_TOPIC_PREFIX=prefix)
    popen = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "worker", "--bootstrap", bootstrap,
                              "--app-id", app_id, "--max-event-age-s", "1e9", "--metrics-port", str(port), *idle],
                             env=env, stdout=subprocess.DEVNULL, stderr=open(log, "ab"), start_new_session=True,
                             cwd=REPO)
    return Proc(popen, port)


def stop(proc: Proc) -> None:
    if proc.popen.poll() is None:
        os.killpg(proc.popen.pid, signal.SIGTERM)
        try:
            proc.popen.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.popen.pid, signal.SIGKILL)
            proc.popen.wait()


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory so far (``VmHWM``), MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return next(int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM:"))


def cpu_seconds(pid: int) -> float:
    """User + system CPU the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def get(port: int, path: str) -> tuple[int, str]:
    """Status and body of the worker's endpoint (0 while it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


def series(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """The samples of metric ``name`` in a Prometheus text page: (labels, value)."""
    out = []
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        labels, value = line[len(name) + 1:].rsplit("} ", 1)
        pairs = (item.split("=", 1) for item in labels.split('",') if item)
        out.append(({k: v.strip('"') for k, v in pairs}, float(value)))
    return out


def applied(text: str) -> int:
    """Records a worker's metrics say its engines applied."""
    for line in text.splitlines():
        if line.startswith(APPLIED + " "):
            return int(float(line.split()[1]))
    return 0


def consumed(text: str) -> tuple[int, int]:
    """(market records, account records) a worker's metrics say it consumed."""
    market = account = 0
    for labels, value in series(text, CONSUMED):
        if labels["topic"] in MARKET_NAMES:
            market += int(value)
        else:
            account += int(value)
    return market, account


def wait_ready(procs: list[Proc], timeout_s: float = 90.0) -> None:
    """Until every worker answers ``/readyz`` (holds partitions), then two seconds for the group to settle."""
    deadline = time.monotonic() + timeout_s
    while not all(get(p.port, "/readyz")[0] == 200 for p in procs):
        if time.monotonic() > deadline or any(p.popen.poll() is not None for p in procs):
            raise SystemExit("bench_worker: the workers did not become ready; see .backstop/bench-worker/*.log")
        time.sleep(0.2)
    time.sleep(2.0)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


# ---------------------------------------------------------------------- the feed on the wire


def wire(events: Iterable[venue_feed.Event]) -> list[Wire]:
    """The feed encoded, each record on the partition Kafka's partitioner gives its key."""
    codec = default_codec()
    return [(topic, partition, codec.key(record, value), codec.encode(record, value))
            for topic, partition, _offset, record, value in venue_feed.rows(events, codec)]


def produce(producer: Producer, prefix: str, messages: Iterable[Wire]) -> None:
    for topic, partition, key, value in messages:
        while True:
            try:
                producer.produce(prefix + topic, value, key, partition=partition)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)


def fresh_topics(bootstrap: str, tag: str) -> str:
    prefix = f"bw{tag}{uuid.uuid4().hex[:6]}."
    create_topics(KafkaSettings(bootstrap=bootstrap, topic_prefix=prefix))
    return prefix


def producer(bootstrap: str, linger_ms: int) -> Producer:
    return Producer({"bootstrap.servers": bootstrap, "linger.ms": linger_ms, "queue.buffering.max.messages": 1_000_000,
                     "enable.idempotence": True})


# ---------------------------------------------------------------------- throughput


@dataclasses.dataclass
class Watch:
    """What the scrapes showed of one worker."""

    first: float | None = None  # when it had first read anything
    last: float = 0.0  # when its applied count last grew
    count: tuple[int, int] = (0, 0)  # (market, account) consumed
    applied: int = 0
    cpu_first: float = 0.0
    cpu_last: float = 0.0


def bench_workers(bootstrap: str, messages: list[Wire], workers: int, tmp: Path, timeout_s: float = 600) -> dict:
    """``workers`` worker processes in one group on fresh topics, then ``messages`` produced: each
    worker's input rate, CPU per record and peak RSS (see the module's docstring)."""
    prefix = fresh_topics(bootstrap, f"t{workers}")
    market = sum(topic in MARKET_NAMES for topic, *_ in messages)
    account = len(messages) - market
    procs = [start_worker(bootstrap, prefix, "bench", tmp / f"throughput-{workers}-{n}.log") for n in range(workers)]
    try:
        wait_ready(procs)
        load = uptime()
        out = producer(bootstrap, 5)
        produce(out, prefix, messages)
        out.flush(60)
        watches = [Watch() for _ in procs]
        deadline = time.monotonic() + timeout_s
        while not (all(w.count[0] >= market for w in watches) and sum(w.count[1] for w in watches) >= account
                   and all(w.applied >= sum(w.count) for w in watches)):
            if time.monotonic() > deadline:
                raise SystemExit(f"bench_worker: {workers} worker(s) consumed {[w.count for w in watches]} of "
                                 f"({market}, {account}) in {timeout_s:.0f} s")
            for proc, w in zip(procs, watches):
                _observe(proc, w)
            time.sleep(0.1)
        rss = [peak_rss_mb(p.popen.pid) for p in procs]
    finally:
        for proc in procs:
            stop(proc)
    per_worker = []
    for w, peak in zip(watches, rss):
        records, seconds = w.applied, w.last - w.first
        per_worker.append({"market_records": w.count[0], "account_records": w.count[1], "applied": records,
                           "seconds": seconds,
                           "events_per_s": records / seconds, "cpu_s": w.cpu_last - w.cpu_first,
                           "cpu_us_per_event": (w.cpu_last - w.cpu_first) / records * 1e6, "peak_rss_mb": peak})
    return {"workers": workers, "market_records": market, "account_records": account, "load": load,
            "per_worker": per_worker, "events_per_s": statistics.fmean(p["events_per_s"] for p in per_worker)}


def _observe(proc: Proc, w: Watch) -> None:
    status, text = get(proc.port, "/metrics")
    if status != 200:
        return
    now, done, count = time.monotonic(), applied(text), consumed(text)
    if w.first is None and sum(count) > 0:  # the span starts at the first record read
        w.first, w.cpu_first = now, cpu_seconds(proc.popen.pid)
    w.count = count
    if done != w.applied:
        w.last, w.cpu_last, w.applied = now, cpu_seconds(proc.popen.pid), done


def bench_raw(bootstrap: str, messages: list[Wire], prefix: str) -> dict:
    """The same messages read back with ``consume(1000)`` and decoded, on one core."""
    codec = default_codec()
    partitions = {topic: spec_for(topic).partitions for topic in INPUT_TOPICS}
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-raw-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 10})
    consumer.assign([TopicPartition(prefix + t, p, OFFSET_BEGINNING) for t, n in partitions.items() for p in range(n)])
    done, start, cpu = 0, None, 0.0
    try:
        while done < len(messages):
            for m in consumer.consume(1000, 1.0):
                if m.error() is None:
                    if start is None:
                        start, cpu = time.perf_counter(), time.process_time()
                    codec.decode(m.value())
                    done += 1
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        consumer.close()
    return {"events_per_s": done / seconds, "seconds": seconds, "cpu_us_per_event": cpu / done * 1e6}


def load_raw_topics(bootstrap: str, messages: list[Wire]) -> str:
    prefix = fresh_topics(bootstrap, "r")
    out = producer(bootstrap, 5)
    produce(out, prefix, messages)
    out.flush(60)
    return prefix


# ---------------------------------------------------------------------- latency


def paced_feed(rate: float, accounts: int, seconds: float, start_ms: int,
               crash: float = 0.25) -> tuple[list[Wire], list[list[Wire]]]:
    """The book, and the market in 100 ms steps, for a chain that publishes ``rate`` events/s
    while the index falls by ``crash``; every event time moved so that the market's first step is
    due at ``start_ms``."""
    options = max(2, round(rate / 10 - 6.2))  # per step: 2 x (index, perp mark, depth) + options, IV 1 in 10
    spec = venue_feed.FeedSpec(accounts=accounts, options=options, seconds=seconds, crash=crash)
    chain = venue_feed.option_chain(options)
    shift = start_ms - venue_feed.MARKET_START_MS

    def moved(events: Iterable[venue_feed.Event]) -> list[venue_feed.Event]:
        return [(topic, record, {**value, "event_time_ms": value["event_time_ms"] + shift})
                for topic, record, value in events]

    book = moved(venue_feed.book_events(spec, chain))
    steps: dict[int, list[venue_feed.Event]] = {}
    for event in moved(venue_feed.market_events(spec, chain)):
        steps.setdefault(event[2]["event_time_ms"], []).append(event)
    encoded = wire(book + [e for t in sorted(steps) for e in steps[t]])
    market, k = [], len(book)
    for t in sorted(steps):
        market.append(encoded[k:k + len(steps[t])])
        k += len(steps[t])
    return encoded[:len(book)], market


def bench_latency(bootstrap: str, rate: float, accounts: int, seconds: float, tmp: Path,
                  idle_ms: int | None = None, crash: float = 0.25) -> dict:
    """One worker (``--idle-ms idle_ms``) holding the book; the market published in real time at
    ``rate`` events/s while the index falls by ``crash``."""
    lead_s = 30.0  # the book is produced and applied before the market starts
    start_ms = int(time.time() * 1000 + lead_s * 1000)
    book, steps = paced_feed(rate, accounts, seconds, start_ms, crash)
    prefix = fresh_topics(bootstrap, "l")
    proc = start_worker(bootstrap, prefix, "bench", tmp / f"latency-{rate:.0f}.log", idle_ms)
    try:
        wait_ready([proc])
        out = producer(bootstrap, 1)
        produce(out, prefix, book)
        out.flush(60)
        while applied(get(proc.port, "/metrics")[1]) < len(book):
            if time.time() * 1000 > start_ms - 1000:
                raise SystemExit(f"bench_worker: the book ({len(book)} records) was not read "
                                 f"{lead_s:.0f} s after start")
            time.sleep(0.2)
        load = uptime()
        late_ms = []
        for k, step in enumerate(steps):
            due = (start_ms + k * venue_feed.FeedSpec().cadence_ms) / 1000
            while time.time() < due:
                time.sleep(0.001)
            late_ms.append((time.time() - due) * 1000)
            produce(out, prefix, step)
        out.flush(30)
        market = sum(len(s) for s in steps)
        deadline = time.monotonic() + 120
        while applied(get(proc.port, "/metrics")[1]) < len(book) + market and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # the last tick's actions
        histogram = latency_histogram(get(proc.port, "/metrics")[1])
        rss = peak_rss_mb(proc.popen.pid)
    finally:
        stop(proc)
    lat = sorted(action_latencies_ms(bootstrap, prefix))
    if not lat:
        raise SystemExit(f"bench_worker: no actions at {rate:.0f}/s; see {tmp}/latency-{rate:.0f}.log")
    return {"rate_per_s": market / seconds, "idle_ms": idle_ms or WorkerConfig().idle_ms, "crash": crash,
            "options": len(steps[0]) - 8, "accounts": accounts, "seconds": seconds,
            "actions": len(lat), "p50_ms": _pct(lat, 50), "p99_ms": _pct(lat, 99), "max_ms": lat[-1],
            "within_100ms": sum(x <= 100 for x in lat) / len(lat),
            "within_250ms": sum(x <= 250 for x in lat) / len(lat),
            "histogram": histogram, "producer_late_p99_ms": _pct(sorted(late_ms), 99), "peak_rss_mb": rss, "load": load}


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(len(values) * q / 100))]


def latency_histogram(text: str) -> dict[str, int]:
    """The worker's event-to-action histogram: cumulative count per upper bound (seconds)."""
    return {labels["le"]: int(value) for labels, value in series(text, LATENCY + "_bucket")}


def action_latencies_ms(bootstrap: str, prefix: str) -> list[float]:
    """Per action on the topic: its Kafka timestamp minus its event time, ms."""
    codec = default_codec()
    topic = prefix + "backstop.actions"
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-actions-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    partitions = [TopicPartition(topic, p) for p in range(spec_for("backstop.actions").partitions)]
    high = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions}
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p, h in high.items() if h > 0])
    left, out = sum(high.values()), []
    try:
        while left > 0:
            for m in consumer.consume(1000, 2.0):
                if m.error() is None:
                    left -= 1
                    out.append(m.timestamp()[1] - codec.decode(m.value(), "Action").value["event_time_ms"])
    finally:
        consumer.close()
    return out


# ---------------------------------------------------------------------- profile


def run_in_process(messages: list[Wire], profiler: cProfile.Profile | None = None) -> float:
    """Seconds the ``Worker`` on ``MemoryPorts`` holding every partition takes to read and apply
    ``messages`` (outputs encoded, checkpoints every 5 s as in a real run), under ``profiler`` if
    one is given. Everything is on the broker before it starts, so an input read to its end is
    idle at once (``idle_ms=1``) instead of after a second of spinning."""
    from pipelines.worker.memory import MemoryBroker, MemoryGroup, MemoryPorts, MemoryStore
    from pipelines.worker.worker import Worker

    broker, group = MemoryBroker(), MemoryGroup()
    for topic, partition, key, value in messages:
        broker.append(topic, partition, key, value)
    ports = MemoryPorts(broker, group, MemoryStore(), "w")
    group.move(range(12), "w")
    worker = Worker(ports, SigningKey("bench", SECRET.encode()), WorkerConfig(idle_ms=1, max_event_age_ms=10**12))
    start = time.perf_counter()
    if profiler:
        profiler.enable()
    while True:
        worker.step()
        if worker.tracks and not any(t.lane.held_back() or any(t.source.lag(tp) for tp in t.source.next)
                                     for t in worker.tracks):
            break
    if profiler:
        profiler.disable()
    return time.perf_counter() - start


def profile_in_process(messages: list[Wire], top: int = 25) -> dict:
    """The in-process worker's rate over ``messages`` (no broker: the limit its own code sets),
    then the same under cProfile: the functions that take the most time. The risk kernels are
    compiled first, as ``backstop worker`` does before it starts."""
    from pipelines.risk import kernels

    kernels.warm()
    seconds = run_in_process(messages)
    profiler = cProfile.Profile()
    profiled = run_in_process(messages, profiler)
    stats = pstats.Stats(profiler, stream=io.StringIO())
    rows = [{"function": f"{Path(file).name}:{line}({name})", "own_s": tt, "cumulative_s": ct, "calls": calls}
            for (file, line, name), (_cc, calls, tt, ct, _callers) in stats.stats.items()]
    return {"events": len(messages), "seconds": seconds, "events_per_s": len(messages) / seconds,
            "profiled_s": profiled,
            "by_own_time": sorted(rows, key=lambda r: r["own_s"], reverse=True)[:top],
            "by_cumulative_time": sorted(rows, key=lambda r: r["cumulative_s"], reverse=True)[:top]}


# ---------------------------------------------------------------------- main


def median_of(rounds: list[dict], key: str) -> float:
    return statistics.median(r[key]["events_per_s"] for r in rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--quick", action="store_true", help="small loads (a smoke run)")
    parser.add_argument("--rounds", type=int, default=2, help="throughput rounds (raw, one worker, two workers), >= 1")
    parser.add_argument("--seconds", type=float, help="seconds of market in the throughput feed")
    parser.add_argument("--rates", default="5000,15000", help="latency: events/s, comma-separated ('' for none)")
    parser.add_argument("--crashes", default="0.25,0.03",
                        help="latency: how far the index falls, fractions, comma-separated (a run per rate and fall)")
    parser.add_argument("--latency-idle-ms", type=int, default=0,
                        help="latency again with the worker's --idle-ms at this (0: only its default)")
    parser.add_argument("--profile", action="store_true", help="also cProfile the in-process worker")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "worker.json"))
    args = parser.parse_args()
    accounts, seconds, latency_s = (1_000, 1.0, 5.0) if args.quick else (10_000, 5.0, 15.0)
    seconds = args.seconds or seconds
    tmp = REPO / ".backstop" / "bench-worker"
    tmp.mkdir(parents=True, exist_ok=True)
    one = wire(venue_feed.feed(venue_feed.FeedSpec(accounts=accounts, seconds=seconds)))
    two = wire(venue_feed.feed(venue_feed.FeedSpec(accounts=2 * accounts, seconds=seconds)))
    raw_prefix = load_raw_topics(args.bootstrap, one)
    rounds = []
    for r in range(args.rounds):
        print(f"round {r + 1}: {uptime()}", flush=True)
        raw = bench_raw(args.bootstrap, one, raw_prefix)
        single = bench_workers(args.bootstrap, one, 1, tmp)
        pair = bench_workers(args.bootstrap, two, 2, tmp)
        rounds.append({"raw": raw, "one": single, "two": pair})
        print(f"  raw read+decode {raw['events_per_s']:9,.0f}/s   one worker {single['events_per_s']:9,.0f}/s   "
              f"two workers {pair['events_per_s']:9,.0f}/s each", flush=True)
    latency = []
    idles = (None, args.latency_idle_ms) if args.latency_idle_ms else (None,)
    for rate in [float(x) for x in args.rates.split(",") if x]:
        for crash, idle_ms in [(float(c), i) for c in args.crashes.split(",") for i in idles]:
            point = bench_latency(args.bootstrap, rate, accounts, latency_s, tmp, idle_ms, crash)
            latency.append(point)
            print(f"latency at {point['rate_per_s']:,.0f}/s, fall {crash:.0%}, --idle-ms {idle_ms or 'default'}: "
                  f"p50 {point['p50_ms']:.0f} ms, p99 {point['p99_ms']:.0f} ms ({point['actions']} actions)",
                  flush=True)
    result = {
        "benchmark": "stream worker", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "workload": {"accounts": accounts, "options": venue_feed.FeedSpec().options, "market_seconds": seconds,
                     "one_worker_records": len(one), "two_worker_records": len(two)},
        "rounds": rounds,
        "raw_events_per_s": median_of(rounds, "raw"), "one_worker_events_per_s": median_of(rounds, "one"),
        "two_workers_events_per_s": median_of(rounds, "two"),
        "latency": latency,
    }
    if args.profile:
        result["profile"] = profile_in_process(one)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    one, raw, two = (result[f"{k}_events_per_s"] for k in ("one_worker", "raw", "two_workers"))
    print(f"one worker {one:,.0f}/s = x{one / raw:.3f} raw; two workers x{two / one:.2f} one -> {out}")


if __name__ == "__main__":
    main()
