"""Fixture factories for worker tests: a recording published into an in-memory broker, the
in-process oracle of it, a cluster of workers stepped on a fake clock, and what they emitted."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pipelines.engine.engine import EngineOutput, EngineParams
from pipelines.engine.shard import Message, run_shards, shard_of
from pipelines.engine.shards import partition_for
from pipelines.engine.wire import action_record, breach_record
from pipelines.events.codec import default_codec
from pipelines.policy.signing import SigningKey
from pipelines.scenarios.generate import KEY_FIELD, TOPIC_OF
from pipelines.topics import ACCOUNT_PARTITIONS, spec_for
from pipelines.worker.memory import MemoryBroker, MemoryGroup, MemoryPorts, MemoryStore
from pipelines.worker.worker import OUTPUT_TOPICS, Worker, WorkerConfig

KEY = SigningKey("test", b"worker-test-signing-key-0123456789")
CODEC = default_codec()
CONFIG = WorkerConfig(batch_max=60, idle_ms=500, checkpoint_ms=300, max_event_age_ms=10**13, stall_ms=60_000)


def publish(broker: MemoryBroker, events: Iterable[tuple[str, dict[str, Any]]]) -> list[tuple[int | None, Message]]:
    """Append ``(record, value)`` events to their topics as Kafka's partitioner places them;
    the messages as the in-process run sees them."""
    messages = []
    for record, value in events:
        topic = TOPIC_OF[record]
        key = str(value[KEY_FIELD[record]])
        partition = partition_for(key, spec_for(topic).partitions)
        offset = broker.append(topic, partition, key.encode(), CODEC.encode(record, value))
        messages.append((shard_of(record, value, ACCOUNT_PARTITIONS),
                         Message(f"{topic}/{partition}", offset, f"{topic}:{partition}:{offset}", record, value)))
    return messages


def oracle(messages: list[tuple[int | None, Message]], params: EngineParams) -> dict[str, dict]:
    """The in-process run's outputs, as ``outputs`` reads them from the broker."""
    out: EngineOutput = run_shards(messages, ACCOUNT_PARTITIONS, KEY, params)
    return {"Breach": {b.breach_id: breach_record(b) for b in out.breaches},
            "Action": {a.action_id: action_record(a) for a in out.actions},
            "ExposureSnapshot": {(e["account"], e["event_time_ms"]): e for e in out.exposures}}


def outputs(broker: MemoryBroker) -> dict[str, dict]:
    """What the workers emitted, by id; a copy sent again must equal the first."""
    found: dict[str, dict] = {}
    for record, topic in OUTPUT_TOPICS.items():
        found[record] = {}
        for r in broker.records(topic):
            value = CODEC.decode(r.value, expected=record).value
            key = {"Breach": lambda v: v["breach_id"], "Action": lambda v: v["action_id"],
                   "ExposureSnapshot": lambda v: (v["account"], v["event_time_ms"])}[record](value)
            assert found[record].setdefault(key, value) == value, f"{record} {key} sent twice, differently"
    return found


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class Cluster:
    """Workers on one in-memory broker and group, stepped in turn on one fake clock."""

    def __init__(self, config: WorkerConfig = CONFIG, seed: int = 0) -> None:
        self.broker, self.group, self.store = MemoryBroker(), MemoryGroup(), MemoryStore()
        self.clock = Clock()
        self.config = config
        self.seed = seed
        self.workers: dict[str, Worker] = {}
        self.ports: dict[str, MemoryPorts] = {}
        self.feeding: list[tuple[str, dict[str, Any]]] = []
        self.per_step = 0

    def feed(self, events: list[tuple[str, dict[str, Any]]], per_step: int) -> None:
        """Publish ``events`` as a live feed: ``per_step`` of them before each step."""
        self.feeding, self.per_step = list(reversed(events)), per_step

    def start(self, name: str) -> Worker:
        seed = hash((self.seed, name, len(self.ports)))
        self.ports[name] = MemoryPorts(self.broker, self.group, self.store, name, seed=seed)
        worker = self.workers[name] = Worker(self.ports[name], KEY, self.config, self.clock)
        return worker

    def crash(self, name: str) -> set[int]:
        """The worker dies: what it had not flushed is lost, its partitions go to nobody."""
        del self.workers[name], self.ports[name]
        return self.group.leave(name)

    def step(self, steps: int = 1, tick_s: float = 0.05) -> None:
        for _ in range(steps):
            publish(self.broker, [self.feeding.pop() for _ in range(min(self.per_step, len(self.feeding)))])
            for name, worker in list(self.workers.items()):
                worker.step()
                self.ports[name].sink.flush()  # a producer delivers on its own, between checkpoints too
            self.clock.now += tick_s

    def settle(self, max_steps: int = 20_000) -> None:
        """Step until every worker has read everything, applied all it can, and the idle limit
        has passed with nothing new."""
        quiet = 0
        for _ in range(max_steps):
            self.step()
            busy = self.feeding or any(track.source.lag(tp) or track.lane.held_back()
                       for worker in self.workers.values() for track in worker.tracks
                       for tp in [tuple(n.rsplit("/", 1)) for n in track.lane.inputs()]
                       for tp in [(tp[0], int(tp[1]))])
            quiet = 0 if busy else quiet + 1
            if quiet * 0.05 * 1000 > 4 * self.config.idle_ms:
                return
        raise AssertionError("the cluster did not settle")


def assert_same(got: dict, want: dict) -> None:
    for record in want:
        missing = set(want[record]) - set(got[record])
        extra = set(got[record]) - set(want[record])
        assert not missing and not extra, (record, sorted(missing)[:5], sorted(extra)[:5])
        assert got[record] == want[record], record
