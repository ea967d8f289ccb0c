"""``backstop executor`` on the real broker, observed from outside: /metrics counts what it did,
/readyz follows its group membership, JSON log lines carry the action and breach ids, and
SIGTERM mid-stream drains, commits and exits 0 with nothing lost and nothing executed twice."""

from __future__ import annotations

import collections
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from pipelines.events.codec import default_codec
from pipelines.execution.executor import Executor, ExecutorConfig
from pipelines.execution.venue import SimulatedVenue, SimulatedVenueConfig
from pipelines.ops.metrics import Metrics
from pipelines.ops.server import serve
from pipelines.policy.actions import ActionType
from pipelines.policy.signing import SigningKey
from tests.kit.actions import signed
from tests.kit.ports import free_ports
from tests.kit.probes import get, json_lines, scrape, series, total, wait_for

pytestmark = [pytest.mark.ops, pytest.mark.kafka, pytest.mark.timeout(300)]

SECRET = "ops-test-signing-key-0123456789abcdef"
KEY = SigningKey("default", SECRET.encode())
DEEP = {"bids": [{"price": 60_000 - i, "quantity": 50.0} for i in range(1, 40)],
        "asks": [{"price": 60_000 + i, "quantity": 50.0} for i in range(1, 40)]}
PARTITIONS = 3


@pytest.fixture
def prefix(kafka_bootstrap: str) -> Iterator[str]:
    """The executor's topics under a fresh prefix (the market ones its venue follows too); deleted afterwards."""
    prefix = f"ops{uuid.uuid4().hex[:8]}."
    names = [f"{prefix}backstop.{t}" for t in ("actions", "executions", "deadletters", "market.depth", "market.mark")]
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for future in admin.create_topics([NewTopic(n, num_partitions=PARTITIONS, replication_factor=1)
                                       for n in names]).values():
        future.result(timeout=30)
    yield prefix
    for future in admin.delete_topics(names, operation_timeout=30).values():
        try:
            future.result(timeout=30)
        except Exception:  # noqa: BLE001 - best effort: the names are unique
            pass


def hedge(i: int) -> dict:
    return signed(KEY, ActionType.DELTA_HEDGE, f"acct-{i % 17}", 1_795_000_000_000 + i,
                  instrument="BTC-PERPETUAL", side="buy" if i % 2 else "sell", quantity=0.1 + i / 1000,
                  breach_ids=[f"breach-{i}", f"breach-{i}-b"])


class Actions:
    """Produces actions (and garbage) onto the action topic, remembering the partitions used."""

    def __init__(self, bootstrap: str, prefix: str) -> None:
        self.topic = f"{prefix}backstop.actions"
        self.codec = default_codec()
        self.producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
        self.partitions: set[int] = set()

    def _delivered(self, error, message) -> None:
        assert error is None, error
        self.partitions.add(message.partition())

    def send(self, actions: list[dict], garbage: int = 0, per_second: float | None = None) -> None:
        for action in actions:
            self.producer.produce(self.topic, key=action["account"].encode(), value=self.codec.encode("Action", action),
                                  on_delivery=self._delivered)
            if per_second:
                self.producer.poll(0)
                time.sleep(1 / per_second)
        for i in range(garbage):
            self.producer.produce(self.topic, key=f"junk-{i}".encode(), value=b"\x07not an action",
                                  on_delivery=self._delivered)
        assert self.producer.flush(30) == 0


def start_executor(bootstrap: str, prefix: str, tmp_path: Path, name: str, port: int, *extra: str,
                   latency_s: float = 0.0) -> subprocess.Popen:
    venue = tmp_path / "venue.json"
    venue.write_text(json.dumps({"books": {"BTC-PERPETUAL": DEEP}, "latency_s": latency_s}))
    env = dict(os.environ, BACKSTOP_ACTIONS_SIGNING_KEY=SECRET, BACKSTOP_KAFKA_TOPIC_PREFIX=prefix,
               BACKSTOP_OPS_LAG_INTERVAL_S="0.5")
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "executor", "--venue-config", str(venue), "--ledger",
         str(tmp_path / "ledger.sqlite"), "--instance-id", f"{prefix}{name}", "--group", f"{prefix}executors",
         "--bootstrap", bootstrap, "--metrics-port", str(port), "--log-format", "json", *extra],
        env=env, stdout=subprocess.PIPE, stderr=open(tmp_path / f"{name}.log", "w"), text=True,
        start_new_session=True)


def terminate(proc: subprocess.Popen, timeout_s: float = 60) -> tuple[int, str]:
    """SIGTERM, then (exit code, stdout)."""
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=timeout_s)
    return proc.returncode, out


def executed_ids(records: list[dict]) -> list[str]:
    return [r["action_id"] for r in records if r.get("outcome") == "executed"]


def read_reports(bootstrap: str, topic: str, at_least: int, timeout_s: float = 60.0) -> list[dict]:
    """Committed execution reports, read until ``at_least`` came, then 2 s more for any extra."""
    codec = default_codec()
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    consumer.subscribe([topic])
    out: list[dict] = []
    deadline, quiet_until = time.monotonic() + timeout_s, None
    try:
        while time.monotonic() < deadline and (quiet_until is None or time.monotonic() < quiet_until):
            out += [codec.decode(m.value(), expected="ExecutionReport").value
                    for m in consumer.consume(500, 0.5) if m.error() is None]
            if quiet_until is None and len(out) >= at_least:
                quiet_until = time.monotonic() + 2.0
    finally:
        consumer.close()
    return out


def ledger_orders(tmp_path: Path) -> set[str]:
    with sqlite3.connect(tmp_path / "ledger.sqlite") as db:
        return {row[0] for row in db.execute("SELECT client_order_id FROM orders")}


def test_metrics_readiness_and_json_logs_of_a_running_executor(kafka_bootstrap: str, prefix: str,
                                                               tmp_path: Path) -> None:
    good = [hedge(i) for i in range(40)]
    forged = [signed(SigningKey("default", b"attacker-key-0123456789"), ActionType.DELTA_HEDGE, "victim",
                     1_795_000_000_000 + i, instrument="BTC-PERPETUAL", side="sell", quantity=50.0,
                     breach_ids=["forged"]) for i in range(2)]
    actions = Actions(kafka_bootstrap, prefix)
    actions.send(good + forged, garbage=1)
    port = free_ports()
    proc = start_executor(kafka_bootstrap, prefix, tmp_path, "e1", port, "--batch-size", "10")
    log = tmp_path / "e1.log"
    try:
        wait_for(lambda: get(port, "/readyz")[0] == 200, 90, f"/readyz 200; log: {log.read_text()[-2000:]}")
        assert get(port, "/healthz") == (200, "ok\n")
        s = wait_for(lambda: (s := scrape(port)) and total(s, "backstop_actions_total") == 42 and s, 90,
                     "42 actions counted")
        topic = actions.topic
        assert total(s, "backstop_events_consumed_total", stage="executor", topic=topic) == 43
        assert total(s, "backstop_actions_total", action_type="delta_hedge", outcome="executed") == 40
        assert total(s, "backstop_actions_total", action_type="delta_hedge", outcome="rejected") == 2
        assert total(s, "backstop_dead_letters_total", stage="executor", reason="bad_signature") == 2
        assert total(s, "backstop_dead_letters_total", stage="executor", reason="bad_magic") == 1
        # every decoded action's latency, from its Kafka timestamp to the commit: seconds, not the
        # ~2026 event times of these actions (which would land every one in +Inf)
        assert total(s, "backstop_action_to_execution_latency_seconds_count") == 42
        assert total(s, "backstop_action_to_execution_latency_seconds_bucket", le="300.0") == 42

        def caught_up() -> dict | None:
            lags = {dict(k)["partition"]: v for k, v in series(scrape(port), "backstop_consumer_lag").items()
                    if dict(k)["topic"] == topic}
            return lags if {str(p) for p in actions.partitions} <= set(lags) and not any(lags.values()) else None

        lags = wait_for(caught_up, 30, "lag 0 reported for every partition that had actions")
        assert set(lags) <= {str(p) for p in range(PARTITIONS)}
    finally:
        code, out = terminate(proc)
    assert code == 0, log.read_text()[-3000:]
    assert json.loads(out.strip().splitlines()[-1])["actions"] == 43
    assert get(port, "/healthz")[0] == 0  # the endpoint went with the process

    records = json_lines(log)
    by_id = collections.defaultdict(list)
    for r in records:
        if "action_id" in r:
            by_id[r["action_id"]].append(r)
    for action in good:  # one line per action, after its commit, with the ids that link it
        [line] = by_id[action["action_id"]]
        assert (line["outcome"], line["level"], line["breach_ids"], line["account"], line["topic"]) == \
            ("executed", "INFO", action["breach_ids"], action["account"], topic)
        assert action["action_id"] in line["msg"] and isinstance(line["offset"], int)
    for action in forged:
        rejected = [r for r in by_id[action["action_id"]] if r.get("outcome") == "rejected"]
        assert [(r["reason"], r["level"], r["breach_ids"]) for r in rejected] == \
            [("bad_signature", "WARNING", ["forged"])]
    [junk] = [r for r in records if r.get("reason") == "bad_magic"]
    assert junk["topic"] == topic and junk["partition"] in actions.partitions and junk["level"] == "WARNING"


def test_sigterm_mid_stream_drains_commits_and_exits_clean(kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    everything = [hedge(i) for i in range(240)]
    actions = Actions(kafka_bootstrap, prefix)
    feeder = threading.Thread(target=actions.send, args=(everything,), kwargs={"per_second": 40}, daemon=True)
    port = free_ports()
    first = start_executor(kafka_bootstrap, prefix, tmp_path, "e1", port, "--batch-size", "10", latency_s=0.01)
    try:
        wait_for(lambda: get(port, "/readyz")[0] == 200, 90, "the first executor ready")
        feeder.start()  # six seconds of actions: the SIGTERM lands while they still arrive
        wait_for(lambda: total(scrape(port), "backstop_actions_total") >= 30, 60, "30 actions executed")
    finally:
        code, out = terminate(first)
    assert code == 0, (tmp_path / "e1.log").read_text()[-3000:]
    stats = json.loads(out.strip().splitlines()[-1])
    by_first = executed_ids(json_lines(tmp_path / "e1.log"))
    assert feeder.is_alive(), "the stream had ended before the SIGTERM: not mid-stream"
    assert 30 <= stats["actions"] == len(by_first) < len(everything)
    # drained: every order it placed was committed (logged after its commit), none is left in an
    # aborted transaction for the next executor to find already done at the venue
    assert ledger_orders(tmp_path) == set(by_first)

    feeder.join(60)
    port = free_ports()
    second = start_executor(kafka_bootstrap, prefix, tmp_path, "e2", port, "--batch-size", "10", latency_s=0.01)
    try:
        wait_for(lambda: total(scrape(port), "backstop_actions_total") >= len(everything) - len(by_first)
                 if get(port, "/readyz")[0] == 200 else False, 120, "the rest executed by the second executor")
    finally:
        code, _ = terminate(second)
    assert code == 0, (tmp_path / "e2.log").read_text()[-3000:]
    by_second = executed_ids(json_lines(tmp_path / "e2.log"))
    assert not set(by_first) & set(by_second)  # the second resumed exactly where the first committed
    assert sorted(by_first + by_second) == sorted(a["action_id"] for a in everything)

    reports = read_reports(kafka_bootstrap, f"{prefix}backstop.executions", len(everything))
    counts = collections.Counter(r["action_id"] for r in reports)
    assert set(counts) == {a["action_id"] for a in everything} and set(counts.values()) == {1}
    assert ledger_orders(tmp_path) == set(counts)


def test_in_process_executor_is_ready_only_while_a_group_member(kafka_bootstrap: str, prefix: str,
                                                                tmp_path: Path) -> None:
    codec = default_codec()
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"{prefix}executors",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "isolation.level": "read_committed"})
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": f"{prefix}ready"})
    venue = SimulatedVenue(SimulatedVenueConfig(books={"BTC-PERPETUAL": DEEP}), tmp_path / "ledger.sqlite")
    metrics = Metrics("executor")
    executor = Executor(consumer, producer, codec, venue, KEY,
                        ExecutorConfig(f"{prefix}backstop.actions", f"{prefix}backstop.executions",
                                       f"{prefix}backstop.deadletters"), metrics=metrics)
    with serve(0, metrics.registry, executor.ready) as server:
        assert get(server.port, "/readyz")[0] == 503  # not started: not a member
        runner = threading.Thread(target=executor.run, daemon=True)
        runner.start()
        wait_for(lambda: get(server.port, "/readyz")[0] == 200, 60, "ready once the group assigned partitions")
        executor.stop()
        runner.join(60)
        assert not runner.is_alive()
        assert get(server.port, "/readyz")[0] == 503  # stopped: no longer a member
        assert get(server.port, "/healthz")[0] == 200
    venue.close()
