"""The worker framework decision: faust-streaming at its best against a plain confluent-kafka loop.

    .venv/bin/python bench/bench_framework.py [--quick] [--rounds 3] [--messages N] [--bootstrap host:port]

One workload for every contender: N Avro market records (Confluent framing, the project's codec)
shaped like a venue's 100 ms ticker feed -- a MarkPrice and a per-instrument VolatilityUpdate for
each of ``OPTIONS`` options, and an IndexPrice per underlying, each tick -- produced once into fresh
copies of the market topics (a unique prefix; deleted at the end). One record in ``BAD_EVERY``
carries an event time ten days ahead, so validation has real problems to find and every contender
must report the same count.

Each contender runs as its own process, reads the same messages in its own consumer group from
the earliest offset, and per message does the same work:

- ``raw``: confluent-kafka ``consume(1000)``, no decode -- the I/O ceiling;
- ``plain``: a confluent-kafka consumer group (``cooperative-sticky``) taking ``consume(1000)``
  batches, decoding (``default_codec``) and validating (``Validator``) each record;
- ``faust``: a faust-streaming agent at its best configuration -- ``noack_take`` batches, acked
  after each batch, root and aiokafka loggers at WARNING, no web, memory store -- doing the same.

All three produce one small output record per ``OUTPUT_EVERY`` inputs through a confluent-kafka
Producer (linger 5 ms) and commit offsets per batch (confluent: ``commit(asynchronous=True)``;
faust: acks, committed by faust), flushing and committing once at the end. A run is timed inside
its process, from the first batch received (group join and start-up excluded) to the flush and
commit after the N-th message; CPU is the process's CPU time (all its threads) over that window.
Contenders run interleaved (raw, plain, faust, raw, ...) so load on the machine hits all alike;
the result gives each one's median and spread, and the ratios plain/raw and faust/plain.
Writes bench/results/framework.json.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import platform
import signal
import statistics
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere: the project's package is importable
    sys.path.insert(0, str(REPO))

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from pipelines.config import KafkaSettings, load_settings  # noqa: E402
from pipelines.errors import UserError  # noqa: E402
from pipelines.events.codec import Codec, default_codec  # noqa: E402
from pipelines.events.validation import Validator  # noqa: E402
from pipelines.kafka import client_config, faust_credentials  # noqa: E402
from pipelines.topics import spec_for  # noqa: E402

CONTENDERS = ("raw", "plain", "faust")
MARKET_TOPICS = {"IndexPrice": "backstop.market.index", "MarkPrice": "backstop.market.mark",
                 "VolatilityUpdate": "backstop.market.volatility"}
OUTPUT_TOPIC = "bench.framework.out"
OPTIONS = 1_000
BATCH = 1_000  # records per consume() call and per faust take
TAKE_WITHIN_MS = 5  # a faust take yields what arrived within this, if fewer than BATCH
OUTPUT_EVERY = 100  # one output record per this many inputs, for every contender
BAD_EVERY = 1_000  # one record in this many is invalid (an event time ten days ahead)
FUTURE_MS = 10 * 86_400_000
TICK_MS = 100
LINGER_MS = 5
SPEC_ENV = "BENCH_FRAMEWORK_SPEC"  # set in a contender process: its run, as JSON
RULE_MIN_RATIO = 0.5  # faust stays in the hot path only at >= this fraction of the plain loop
SPOT = {"BTC": 60_000.0, "ETH": 3_000.0}
SUMMARY = struct.Struct(">QQ")  # an output record: (inputs seen, problems found) so far

Record = tuple[str, str, dict[str, Any]]  # (catalogue topic, record name, value)


# ------------------------------------------------------------------ the workload (pure)

def option_names(options: int) -> list[str]:
    """``options`` distinct, priceable option names over BTC and ETH (one expiry, calls and puts)."""
    names = []
    for i in range(options):
        underlying = "BTC" if i % 2 == 0 else "ETH"
        strike = int(SPOT[underlying] * (0.5 + (i // 4) / max(1, options // 4)))
        names.append(f"{underlying}-25DEC26-{strike}-{'C' if i // 2 % 2 == 0 else 'P'}")
    return names


def market_records(n: int, t0_ms: int, options: int = OPTIONS, bad_every: int = BAD_EVERY,
                   seed: int = 7) -> list[Record]:
    """The first ``n`` records of a seeded 100 ms ticker feed starting at ``t0_ms``: per tick, an
    IndexPrice per underlying, then a MarkPrice and a VolatilityUpdate per option. Record ``j`` with
    ``j % bad_every == bad_every - 1`` has its event time ten days ahead (a validation problem)."""
    rng = np.random.default_rng(seed)
    names = option_names(options)
    records: list[Record] = []
    for tick in ticks(names, rng, t0_ms):
        for record in tick:
            if len(records) % bad_every == bad_every - 1:
                record[2]["event_time_ms"] += FUTURE_MS
            records.append(record)
            if len(records) == n:
                return records
    return records


def ticks(names: list[str], rng: np.random.Generator, t0_ms: int) -> Iterator[list[Record]]:
    """Endless ticks of the feed over ``names``, ``TICK_MS`` apart."""
    k = 0
    while True:
        t = t0_ms + k * TICK_MS
        index = {u: spot * (1 + rng.normal(0, 2e-4)) for u, spot in SPOT.items()}
        tick: list[Record] = [(MARKET_TOPICS["IndexPrice"], "IndexPrice", {
            "underlying": u, "index_name": u.lower(), "price": round(p, 2), "event_time_ms": t})
            for u, p in index.items()]
        for name, mark, iv in zip(names, rng.uniform(0.001, 0.2, len(names)), rng.uniform(0.3, 1.2, len(names))):
            underlying = name.split("-")[0]
            tick.append((MARKET_TOPICS["MarkPrice"], "MarkPrice", {
                "instrument": name, "underlying": underlying, "mark_price": round(float(mark), 6),
                "index_price": round(index[underlying], 2), "underlying_price": round(index[underlying], 2),
                "mark_iv": round(float(iv), 4), "best_bid": round(float(mark) * 0.99, 6),
                "best_ask": round(float(mark) * 1.01, 6), "open_interest": 100.0, "event_time_ms": t}))
            tick.append((MARKET_TOPICS["VolatilityUpdate"], "VolatilityUpdate", {
                "underlying": underlying, "instrument": name, "iv": round(float(iv), 4), "smile": [],
                "source": "deribit_mark", "event_time_ms": t}))
        yield tick
        k += 1


def expected_problems(n: int, bad_every: int = BAD_EVERY) -> int:
    """How many of ``market_records(n, ...)`` fail validation."""
    return n // bad_every


def encoded(records: Sequence[Record], codec: Codec) -> list[tuple[str, bytes, bytes]]:
    """(catalogue topic, key, framed value) of each record."""
    return [(topic, codec.key(record, value), codec.encode(record, value)) for topic, record, value in records]


# ------------------------------------------------------------------ the per-message work

def problems_in(codec: Codec, validator: Validator, values: Sequence[bytes], now_ms: int) -> int:
    """Decode and validate each value; how many were refused."""
    problems = 0
    for value in values:
        decoded = codec.decode(value)
        if validator.validate(decoded.record, decoded.value, now_ms) is not None:
            problems += 1
    return problems


def outputs_due(seen_before: int, seen_after: int, every: int = OUTPUT_EVERY) -> int:
    """Output records owed for the inputs from ``seen_before`` to ``seen_after``: one per ``every``."""
    return seen_after // every - seen_before // every


# ------------------------------------------------------------------ summaries (pure)

def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of ``values``."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def run_problem(name: str, run: dict[str, Any], messages: int, problems: int) -> str | None:
    """Why ``run`` of contender ``name`` did not do the workload's work, or None when it did."""
    if run["messages"] != messages:
        return f"{name} took {run['messages']} messages, the workload has {messages}"
    if name != "raw" and run["problems"] != problems:
        return f"{name} found {run['problems']} invalid records, the workload has {problems}"
    return None


def summarise(rounds: Sequence[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Per contender, msgs/s and CPU µs per message (median, spread); the ratios plain/raw and
    faust/plain of the medians, with the spread of the same ratio taken round by round, and the
    same ratio read from CPU per message (what the throughput ratio would be were both bound by
    one core: the reading least moved by other load on the machine); the decision the rule gives,
    on the msgs/s ratio."""
    contenders: dict[str, Any] = {}
    for name in CONTENDERS:
        runs = [r[name] for r in rounds]
        contenders[name] = {
            "msgs_per_s": spread([r["messages"] / r["seconds"] for r in runs]),
            "cpu_us_per_msg": spread([1e6 * r["cpu_seconds"] / r["messages"] for r in runs]),
            "runs": runs,
        }
    ratios = {}
    for top, bottom in (("plain", "raw"), ("faust", "plain")):
        by_round = [(r[top]["messages"] / r[top]["seconds"]) / (r[bottom]["messages"] / r[bottom]["seconds"])
                    for r in rounds]
        medians = contenders[top]["msgs_per_s"]["median"] / contenders[bottom]["msgs_per_s"]["median"]
        cpu = contenders[bottom]["cpu_us_per_msg"]["median"] / contenders[top]["cpu_us_per_msg"]["median"]
        ratios[f"{top}_vs_{bottom}"] = {"of_medians": medians, "by_round": spread(by_round), "of_cpu_per_msg": cpu}
    stays = ratios["faust_vs_plain"]["of_medians"] >= RULE_MIN_RATIO
    return {"contenders": contenders, "ratios": ratios, "rule_min_ratio": RULE_MIN_RATIO,
            "faust_stays_in_hot_path": stays}


# ------------------------------------------------------------------ the contenders (each its own process)

@dataclasses.dataclass(frozen=True)
class Spec:
    """One contender run: what it reads, where it writes, and where it leaves its result."""

    contender: str
    bootstrap: str
    topics: list[str]
    output: str
    group: str
    messages: int
    result: str
    datadir: str

    def kafka(self) -> KafkaSettings:
        return dataclasses.replace(load_settings().kafka, bootstrap=self.bootstrap)


def write_result(spec: Spec, result: dict[str, Any]) -> None:
    """The run's result as JSON, renamed into place so the parent never reads half of it."""
    path = Path(spec.result)
    path.with_suffix(".tmp").write_text(json.dumps(result))
    path.with_suffix(".tmp").rename(path)


def output_producer(kafka: KafkaSettings) -> Producer:
    return Producer(client_config(kafka, **{"linger.ms": LINGER_MS}))


def produce_outputs(producer: Producer, spec: Spec, seen_before: int, seen_after: int, problems: int) -> None:
    for _ in range(outputs_due(seen_before, seen_after)):
        producer.produce(spec.output, SUMMARY.pack(seen_after, problems), spec.contender.encode())
    producer.poll(0)


def run_confluent(spec: Spec, timeout_s: float = 600.0) -> None:
    """``raw`` and ``plain``: the consumer-group loop, decoding and validating unless ``raw``."""
    kafka = spec.kafka()
    decode = spec.contender == "plain"
    codec, validator = default_codec(), Validator()
    consumer = Consumer(client_config(kafka, **{
        "group.id": spec.group, "auto.offset.reset": "earliest", "enable.auto.commit": False,
        "partition.assignment.strategy": "cooperative-sticky"}))
    consumer.subscribe(spec.topics)
    producer = output_producer(kafka)
    seen = problems = 0
    start: tuple[float, float] | None = None
    deadline = time.monotonic() + timeout_s
    while seen < spec.messages and time.monotonic() < deadline:
        batch = [m for m in consumer.consume(BATCH, 0.5) if m.error() is None]
        if not batch:
            continue
        start = start or (time.perf_counter(), time.process_time())
        values = [m.value() for m in batch]
        if decode:
            problems += problems_in(codec, validator, values, int(time.time() * 1000))
        produce_outputs(producer, spec, seen, seen + len(values), problems)
        seen += len(values)
        if seen < spec.messages:
            consumer.commit(offsets=next_offsets(batch), asynchronous=True)
    producer.flush(60)
    if start is not None:  # the last batch's offsets, once every output is delivered
        consumer.commit(offsets=next_offsets(batch), asynchronous=False)
        write_result(spec, {"messages": seen, "problems": problems, "seconds": time.perf_counter() - start[0],
                            "cpu_seconds": time.process_time() - start[1]})
    consumer.close()


def next_offsets(batch: Sequence[Message]) -> list[TopicPartition]:
    """The offsets to commit after ``batch``: past its last message in each partition. (An
    argument-less ``commit`` under cooperative-sticky answers ``_NO_OFFSET`` once all is read.)"""
    ends = {(m.topic(), m.partition()): m.offset() + 1 for m in batch}
    return [TopicPartition(topic, partition, offset) for (topic, partition), offset in ends.items()]


def quiet_loggers() -> None:
    """faust leaves the root logger at DEBUG under ``-l warn``, so aiokafka would build a log
    record on every send through faust: the best configuration sets both to WARNING (outputs here
    go through confluent-kafka, so this only keeps stray debug records out)."""
    for name in ("", "aiokafka"):
        logging.getLogger(name).setLevel(logging.WARNING)


def run_faust(spec: Spec) -> None:
    """``faust``: one agent over the market topics, ``noack_take`` batches acked after each."""
    import faust

    kafka = spec.kafka()
    app = faust.App(spec.group, broker=[f"kafka://{host}" for host in kafka.bootstrap.split(",")],
                    broker_credentials=faust_credentials(kafka), datadir=spec.datadir, store="memory://",
                    web_enabled=False, consumer_auto_offset_reset="earliest", topic_replication_factor=1,
                    topic_partitions=spec_for(MARKET_TOPICS["IndexPrice"]).partitions, stream_wait_empty=False)
    source = app.topic(*spec.topics, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    codec, validator = default_codec(), Validator()
    producer = output_producer(kafka)

    @app.agent(source, concurrency=1)
    async def work(stream: faust.StreamT) -> None:
        quiet_loggers()
        seen = problems = 0
        start: tuple[float, float] | None = None
        async for events in stream.noack_take(BATCH, within=TAKE_WITHIN_MS / 1000):
            start = start or (time.perf_counter(), time.process_time())
            values = [event.message.value for event in events]
            problems += problems_in(codec, validator, values, int(time.time() * 1000))
            produce_outputs(producer, spec, seen, seen + len(values), problems)
            seen += len(values)
            for event in events:
                await stream.ack(event)
            if seen >= spec.messages:
                break
        await asyncio.get_running_loop().run_in_executor(None, producer.flush, 60.0)
        await app.consumer.commit()
        write_result(spec, {"messages": seen, "problems": problems, "seconds": time.perf_counter() - start[0],
                            "cpu_seconds": time.process_time() - start[1]})

    sys.argv = [sys.argv[0], "worker", "-l", "warn", "--without-web"]
    app.main()


def run_contender(spec: Spec, tmp: Path, timeout_s: float = 900.0) -> dict[str, Any]:
    """Start ``spec``'s contender process, wait for its result, stop it (start-up and shutdown
    are outside the timed window). The 1-minute load average at the start is kept beside it."""
    env = dict(os.environ, **{SPEC_ENV: json.dumps(dataclasses.asdict(spec))})
    log = tmp / f"{spec.contender}.log"
    load = os.getloadavg()[0]
    with open(log, "ab") as stderr:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve())], env=env, stdout=subprocess.DEVNULL,
                                stderr=stderr, start_new_session=True, cwd=REPO)
    result = Path(spec.result)
    deadline = time.monotonic() + timeout_s
    try:
        while not result.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        stop(proc)
    if not result.exists():
        raise UserError(f"contender {spec.contender} left no result; see {log}")
    return {**json.loads(result.read_text()), "load_1min": load}


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# ------------------------------------------------------------------ the broker side

def create_topics(admin: AdminClient, prefix: str) -> list[str]:
    """Fresh copies of the market topics (catalogue layout) and the output topic, under ``prefix``."""
    layout = {f"{prefix}{topic}": spec_for(topic).partitions for topic in MARKET_TOPICS.values()}
    layout[f"{prefix}{OUTPUT_TOPIC}"] = 1
    futures = admin.create_topics([NewTopic(name, partitions, 1) for name, partitions in layout.items()],
                                  operation_timeout=30)
    for future in futures.values():
        future.result()
    return list(layout)


def produce_workload(kafka: KafkaSettings, prefix: str, messages: list[tuple[str, bytes, bytes]]) -> None:
    producer = Producer(client_config(kafka, **{"partitioner": "murmur2_random", "linger.ms": LINGER_MS}))
    for topic, key, value in messages:
        while True:
            try:
                producer.produce(f"{prefix}{topic}", value, key)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(120):
        raise UserError("the workload was not all delivered to the broker within 120 s")


def clean_up(admin: AdminClient, prefix: str, groups: list[str]) -> None:
    """Delete every topic under ``prefix`` (faust's own included) and the runs' consumer groups."""
    topics = [name for name in admin.list_topics(timeout=30).topics if name.startswith(prefix)]
    for future in (admin.delete_topics(topics, operation_timeout=30) if topics else {}).values():
        future.result()
    for future in admin.delete_consumer_groups(groups, request_timeout=30).values():
        try:
            future.result()
        except KafkaException:  # a group that never committed does not exist: nothing to delete
            pass


# ------------------------------------------------------------------ the command

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", help="host:port of the broker (default: the project's settings)")
    parser.add_argument("--quick", action="store_true", help="20,000 messages instead of 300,000")
    parser.add_argument("--messages", type=int, help="workload size (overrides --quick)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every contender (default 3)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "framework.json"))
    args = parser.parse_args(argv)
    args.messages = args.messages if args.messages is not None else (20_000 if args.quick else 300_000)
    if args.messages < 1 or args.rounds < 1:
        raise UserError("--messages and --rounds must be at least 1")
    return args


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def measure(args: argparse.Namespace) -> dict[str, Any]:
    kafka = load_settings().kafka
    kafka = dataclasses.replace(kafka, bootstrap=args.bootstrap or kafka.bootstrap)
    admin = AdminClient(client_config(kafka))
    prefix = f"bf{uuid.uuid4().hex[:6]}."
    tmp = REPO / ".backstop" / "bench-framework" / prefix.rstrip(".")
    tmp.mkdir(parents=True, exist_ok=True)
    records = market_records(args.messages, int(time.time() * 1000))
    problems = expected_problems(args.messages)
    groups: list[str] = []
    rounds: list[dict[str, dict[str, Any]]] = []
    uptime_before = uptime()
    try:
        create_topics(admin, prefix)
        produce_workload(kafka, prefix, encoded(records, default_codec()))
        for k in range(args.rounds):
            runs = {}
            for name in CONTENDERS:
                group = f"{prefix}{name}-{k}"
                groups.append(group)
                spec = Spec(name, kafka.bootstrap, [f"{prefix}{t}" for t in MARKET_TOPICS.values()],
                            f"{prefix}{OUTPUT_TOPIC}", group, args.messages, str(tmp / f"{name}-{k}.json"),
                            str(tmp / f"faust-{k}"))
                runs[name] = run_contender(spec, tmp)
                problem = run_problem(name, runs[name], args.messages, problems)
                if problem:
                    raise UserError(problem)
                print(f"round {k + 1}  {name:5}  {args.messages / runs[name]['seconds']:10,.0f} msgs/s  "
                      f"{1e6 * runs[name]['cpu_seconds'] / args.messages:6.1f} µs CPU/msg", flush=True)
            rounds.append(runs)
    finally:
        clean_up(admin, prefix, groups)
    return {
        "benchmark": "worker framework", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "command": "bench/bench_framework.py " + " ".join(sys.argv[1:]),
        "uptime_before": uptime_before, "uptime_after": uptime(),
        "workload": {"messages": args.messages, "invalid": problems, "options": OPTIONS, "batch": BATCH,
                     "output_every": OUTPUT_EVERY, "rounds": args.rounds},
        **summarise(rounds),
    }


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        result = measure(args)
    except (UserError, KafkaException) as exc:
        print(f"bench_framework: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for name in CONTENDERS:
        rate, cpu = result["contenders"][name]["msgs_per_s"], result["contenders"][name]["cpu_us_per_msg"]
        print(f"{name:5}  {rate['median']:10,.0f} msgs/s ({rate['min']:,.0f}-{rate['max']:,.0f})  "
              f"{cpu['median']:6.1f} µs CPU/msg ({cpu['min']:.1f}-{cpu['max']:.1f})")
    for label, ratio in result["ratios"].items():
        print(f"{label:15} x{ratio['of_medians']:.3f} (by round x{ratio['by_round']['min']:.3f}-"
              f"x{ratio['by_round']['max']:.3f}; from CPU per message x{ratio['of_cpu_per_msg']:.3f})")
    print(f"faust stays in the hot path (>= x{RULE_MIN_RATIO} of plain): {result['faust_stays_in_hot_path']}")
    print(f"load: {result['uptime_before']}  ->  {result['uptime_after']}")
    print(f"-> {out}")
    return 0


def contender_main() -> None:
    spec = Spec(**json.loads(os.environ[SPEC_ENV]))
    if spec.contender == "faust":
        run_faust(spec)
    else:
        run_confluent(spec)


if __name__ == "__main__":
    if SPEC_ENV in os.environ:
        contender_main()
    else:
        sys.exit(main())
