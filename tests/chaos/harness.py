"""What the chaos tests share: private Kafka clusters from ``infra/local`` (their own state
folder and free ports, so the shared broker is never touched), a steady feed of signed actions,
the executor and audit sink as real processes, and the checks that nothing was lost or doubled."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from pipelines.events.codec import default_codec
from pipelines.policy.actions import ActionType
from pipelines.policy.signing import SigningKey
from tests.kit.actions import signed
from tests.kit.ports import free_ports
from tests.kit.probes import stop

LOCAL = Path(__file__).resolve().parents[2] / "infra" / "local"
SECRET = "chaos-test-signing-key-0123456789abcdef"
KEY = SigningKey("default", SECRET.encode())
DEEP = {"bids": [{"price": 60_000 - i, "quantity": 500.0} for i in range(1, 40)],
        "asks": [{"price": 60_000 + i, "quantity": 500.0} for i in range(1, 40)]}
class PrivateKafka:
    """``infra/local up --brokers N --only kafka`` in a state folder of its own."""

    def __init__(self, tmp_path: Path, brokers: int = 1) -> None:
        self.brokers = brokers
        self.env = {**os.environ, "BACKSTOP_INFRA_DIR": str(tmp_path / "infra"),
                    "BACKSTOP_KAFKA_PORT": str(free_ports(brokers)),
                    "BACKSTOP_KAFKA_CONTROLLER_PORT": str(free_ports(brokers)),
                    "BACKSTOP_KAFKA_SASL_PORT": str(free_ports(brokers)), "BACKSTOP_KAFKA_HEAP": "384m"}
        self.base = int(self.env["BACKSTOP_KAFKA_PORT"])
        self.bootstrap = ",".join(f"127.0.0.1:{self.base + n}" for n in range(brokers))

    def local(self, *args: str) -> None:
        result = subprocess.run([sys.executable, str(LOCAL), *args], env=self.env, capture_output=True, text=True,
                                timeout=240)
        assert result.returncode == 0, result.stderr + result.stdout

    def up(self) -> None:
        self.local("up", "--only", "kafka", "--brokers", str(self.brokers))

    def down(self) -> None:
        self.local("down")

    def kill(self, node: int) -> None:
        """SIGKILL one broker, as a machine losing power would."""
        pid = int((Path(self.env["BACKSTOP_INFRA_DIR"]) / "pids" / f"kafka-{node}.pid").read_text().split()[0])
        os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)


def hedge(i: int) -> dict:
    return signed(KEY, ActionType.DELTA_HEDGE, f"acct-{i % 23}", 1_795_000_000_000 + i,
                  instrument="BTC-PERPETUAL", side="buy" if i % 2 else "sell", quantity=0.1 + i / 10_000,
                  breach_ids=[f"breach-{i}"])


class Feed(threading.Thread):
    """Produces ``count`` signed actions at ``per_second``, through whatever happens to the broker
    (librdkafka queues and retries; idempotence keeps a retry from writing twice). An action the
    broker acknowledged is in ``delivered``; one it never did is in ``failed`` with the error the
    producer was told (the worker's sink fails its flush on such an error and the worker stops, so
    its partitions are read again from their checkpoints)."""

    def __init__(self, bootstrap: str, topic: str, count: int, per_second: float) -> None:
        super().__init__(daemon=True)
        self.topic, self.count, self.per_second = topic, count, per_second
        self.producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                                  "message.timeout.ms": 90_000})
        self.actions = [hedge(i) for i in range(count)]
        self.delivered: set[str] = set()
        self.failed: dict[str, str] = {}
        self.sent = 0

    def run(self) -> None:
        codec = default_codec()
        for action in self.actions:
            self.producer.produce(self.topic, codec.encode("Action", action), action["account"].encode(),
                                  on_delivery=lambda error, _m, action_id=action["action_id"]:
                                  self._delivered(action_id, error))
            self.sent += 1
            self.producer.poll(0)
            time.sleep(1 / self.per_second)
        self.producer.flush(120)

    def _delivered(self, action_id: str, error) -> None:
        if error is None:
            self.delivered.add(action_id)
        else:
            self.failed[action_id] = str(error)


def cli(args: list[str], tmp_path: Path, name: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", *args],
                            env={**os.environ, "BACKSTOP_ACTIONS_SIGNING_KEY": SECRET, **(env or {})},
                            stdout=open(tmp_path / f"{name}.out", "a"), stderr=open(tmp_path / f"{name}.log", "a"),
                            start_new_session=True)


def start_executor(bootstrap: str, prefix: str, tmp_path: Path, name: str,
                   instance: str = "executor") -> subprocess.Popen:
    """An executor process logging to ``name``; a restart keeps its ``instance`` id, hence its
    transactional id, so it fences the open transaction of the process it replaces (a new id
    would leave that transaction, and the offsets it holds, to the broker's timeout)."""
    venue = tmp_path / "venue.json"
    venue.write_text(json.dumps({"books": {"BTC-PERPETUAL": DEEP}}))
    return cli(["executor", "--venue-config", str(venue), "--ledger", str(tmp_path / "ledger.sqlite"),
                "--instance-id", f"{prefix}{instance}", "--group", f"{prefix}executors", "--bootstrap", bootstrap],
               tmp_path, name, {"BACKSTOP_KAFKA_TOPIC_PREFIX": prefix})


class Supervised:
    """A process started again whenever it has exited, as compose's ``restart: unless-stopped``
    does; ``check()`` is that supervisor's round."""

    def __init__(self, start: Callable[[str], subprocess.Popen], name: str) -> None:
        self.start, self.name, self.restarts = start, name, 0
        self.proc = start(name)

    def check(self) -> None:
        if self.proc.poll() is not None:
            self.restarts += 1
            self.proc = self.start(f"{self.name}-{self.restarts}")

    def stop(self) -> int:
        return stop(self.proc)


def ledger_orders(tmp_path: Path) -> list[str]:
    path = tmp_path / "ledger.sqlite"
    if not path.exists():
        return []
    try:
        with sqlite3.connect(path, timeout=30) as db:
            return [row[0] for row in db.execute("SELECT client_order_id FROM orders")]
    except sqlite3.OperationalError:  # the executor has created the file, not yet its tables
        return []


def committed_reports(bootstrap: str, topic: str, want: int, timeout_s: float) -> Counter:
    """Execution reports visible to read_committed readers, per action id: read until ``want``
    distinct ids came (or the time is up), then 3 s more, so a late duplicate would be seen too."""
    codec = default_codec()
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed",
                         "enable.auto.commit": False})
    consumer.subscribe([topic])
    seen: Counter = Counter()
    deadline, quiet_until = time.monotonic() + timeout_s, None
    try:
        while time.monotonic() < deadline and (quiet_until is None or time.monotonic() < quiet_until):
            for m in consumer.consume(500, 0.5):
                if m.error() is None:
                    seen[codec.decode(m.value(), expected="ExecutionReport").value["action_id"]] += 1
            if quiet_until is None and len(seen) >= want:
                quiet_until = time.monotonic() + 3.0
    finally:
        consumer.close()
    return seen


def kafka_state(bootstrap: str, topic: str, group: str, missing: set[str]) -> str:
    """For a failure message: per partition of ``topic`` its watermarks, ``group``'s committed
    offset and the leader/ISR, and where the ``missing`` action ids are in the topic (read from
    the start by a consumer outside the group), or that the topic does not have them."""
    # committed offsets from a consumer of the group that never subscribes, so never joins it
    # (AdminClient.list_consumer_group_offsets crashed the process for a group without offsets);
    # read_uncommitted: no waiting for the offsets of an open transaction
    member = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                       "isolation.level": "read_uncommitted"})
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "isolation.level": "read_uncommitted"})
    lines: list[str] = []
    try:
        partitions = member.list_topics(topic, timeout=10).topics[topic].partitions
        committed: dict[int, int] = {}
        try:
            committed = {tp.partition: tp.offset
                         for tp in member.committed([TopicPartition(topic, p) for p in partitions], timeout=15)}
        except KafkaException as exc:
            lines.append(f"committed offsets of {group} unknown: {exc.args[0].str()}")
        ends = {}
        for p in sorted(partitions):
            low, ends[p] = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            lines.append(f"{topic}[{p}] watermarks {low}..{ends[p]} committed {committed.get(p)} "
                         f"leader {partitions[p].leader} isr {partitions[p].isrs}")
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        codec, found, read = default_codec(), {}, Counter()
        deadline = time.monotonic() + 60
        while any(read[p] < end for p, end in ends.items()) and time.monotonic() < deadline:
            for m in consumer.consume(500, 1.0):
                if m.error() is None:
                    read[m.partition()] = m.offset() + 1
                    action_id = codec.decode(m.value(), expected="Action").value["action_id"]
                    if action_id in missing:
                        found[action_id] = f"[{m.partition()}]@{m.offset()}"
        absent = sorted(missing - set(found))
        lines.append(f"missing actions in the topic: {found or 'none'}; absent from the topic: {absent or 'none'}")
    except KafkaException as exc:
        lines.append(f"(Kafka state incomplete: {exc.args[0].str()})")
    finally:
        consumer.close()
        member.close()
    return "\n".join(lines)
