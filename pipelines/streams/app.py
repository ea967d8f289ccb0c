"""The stream workers: a faust-streaming app that drives one ``Shard`` per account partition.

Two agents, both stateless shells around the pure core:

- ``fanout`` reads the market topics (as a consumer group, so each market partition is read
  by one worker) and copies every batch of records it takes to *every* partition of
  ``backstop.market.fanout``, as one ``MarketBatch`` message per partition (``streams/fanout.py``:
  faust's cost is per message), each record tagged with its source coordinates. Market data
  thereby sits beside the account data of each partition, and the worker owning partition *p*
  sees all of it.
- ``shards`` reads ``backstop.positions``, ``backstop.collateral`` and the fan-out, which faust
  co-partitions (same partition count, same worker per partition number). Each record is
  decoded and validated (bad ones go to the dead letters), then pushed into its partition's
  ``Shard``: the sequencer orders it by event time across inputs, and the engine turns it into
  breaches and signed actions, which are sent to their topics.

Both agents take messages in batches (up to ``batch_max``, or what arrived within
``batch_within_ms``) and write through a confluent-kafka producer (``Outbox``): faust's own
send path costs tens of microseconds a record. Nothing is acknowledged before everything written on its
behalf is confirmed by the broker (``Outbox.drained``), so a crash re-sends, never loses.

State and recovery. The agent does not acknowledge messages as it goes (``noack``); every
``snapshot_every`` records of a partition it writes the whole shard to a changelogged faust
table (keyed by partition, written while processing that partition, so the changelog record
lands in the same partition) and only then acknowledges what the snapshot covers. Offsets faust
commits therefore never run ahead of a stored snapshot; a worker that takes a partition over
restores its snapshot and drops the redelivered messages the snapshot already holds; messages
taken before a rebalance are dropped too, unacknowledged (``current``), since every partition is
then read again from its committed offset. Outputs
carry deterministic ids, so the few re-sent after a crash are recognised downstream (executors
execute an action id once).

Silent inputs would hold the sequencer back: an input with nothing new for ``idle_ms`` of
wall-clock time is marked idle, and a partition whose inputs are all quiet is drained (its queue
released; revaluation keeps to the engine's event-time ticks). This is the only place wall-clock
time enters, and only for inputs that are silent *and settled* — read to the end of what the
broker holds for them (``streams/settled.py``): an input silent because a rebalance or a backlog
keeps it from being read is never idled, so a crash cannot change the order the core sees.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import faust
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient

from pipelines.config import KafkaSettings, Settings
from pipelines.engine.engine import EngineOutput, EngineParams
from pipelines.engine.shard import ACCOUNT_TOPICS, FANOUT_TOPIC, MARKET_TOPICS, Message, Shard
from pipelines.engine.shards import ACCOUNT_BREACHES, market_subject
from pipelines.events.codec import default_codec
from pipelines.events.deadletter import dead_letter
from pipelines.events.validation import Validator
from pipelines.kafka import client_config, faust_credentials
from pipelines.ops.metrics import Metrics
from pipelines.policy.signing import SigningKey
from pipelines.streams import fanout
from pipelines.streams.intake import Refused, admit
from pipelines.streams.settled import BrokerProgress, deleted_unread, read_progress, settled_inputs
from pipelines.topics import ACCOUNT_PARTITIONS, spec_for, topic_name

log = logging.getLogger(__name__)

SNAPSHOT_MAX_BYTES = 16 * 1024 * 1024
PROGRESS_TIMEOUT_S = 10.0
# Events a shard runs through its engine before it lets the event loop breathe: a backlog released
# at once (a drain after a takeover: thousands of events) held the loop, and the consumer's
# heartbeats with it, for seconds; past the 10 s session timeout the group drops the worker.
RELEASE_CHUNK = 500


@dataclasses.dataclass(frozen=True)
class WorkerConfig:
    app_id: str = "backstop-worker"
    snapshot_every: int = 500
    idle_ms: int = 1_000
    max_event_age_ms: int = 24 * 3600 * 1000
    batch_max: int = 2_000
    batch_within_ms: int = 5
    engine: EngineParams = EngineParams()


class Outbox:
    """Records out through one confluent-kafka producer: ``send`` only queues (librdkafka
    batches and pipelines), ``drained`` waits — off the event loop — until the broker has
    confirmed every queued record, and fails loudly if any was refused."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.producer = Producer(client_config(kafka, **{"enable.idempotence": True, "linger.ms": 2}))
        self.error: str | None = None

    def send(self, topic: str, key: bytes | None, value: bytes, partition: int | None = None) -> None:
        extra: dict[str, Any] = {} if partition is None else {"partition": partition}
        while True:
            try:
                self.producer.produce(topic, value, key, on_delivery=self._delivered, **extra)
                return
            except BufferError:  # the local queue is full: let deliveries drain it
                self.producer.poll(0.05)

    def _delivered(self, error: Any, _message: Any) -> None:
        if error is not None and self.error is None:
            self.error = str(error)

    async def drained(self) -> None:
        left = await asyncio.get_running_loop().run_in_executor(None, self.producer.flush, 60.0)
        if left or self.error:
            # crash the worker: its unacknowledged input is redelivered to whoever takes over
            raise KafkaException(f"output not delivered ({left} queued): {self.error or 'flush timed out'}")


async def watch_loop(observe: Callable[[float], None], interval_s: float = 1.0) -> None:
    """Sleep ``interval_s`` again and again and ``observe`` how late each sleep ended: how long
    something held the event loop. The loop carries the consumer's heartbeats too, so a reading
    near the session timeout is a worker about to be dropped from its group."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval_s
        await asyncio.sleep(interval_s)
        observe(loop.time() - due)


def source_of(message: Any, prefix: str) -> str:
    """``topic:partition:offset`` of a message, the topic named without the deployment prefix:
    how breaches reference the events that triggered them, in Kafka and in-process alike."""
    return f"{message.topic.removeprefix(prefix)}:{message.partition}:{message.offset}"


def make_app(settings: Settings, key: SigningKey, config: WorkerConfig | None = None,
             metrics: Metrics | None = None, ready: threading.Event | None = None) -> faust.App:
    """The worker app; ``metrics`` counts what it does, ``ready`` is set while it owns partitions."""
    config = config or WorkerConfig()
    ready = ready or threading.Event()
    metrics = metrics or Metrics("worker")
    kafka = settings.kafka
    prefix = kafka.topic_prefix
    codec = default_codec()
    validator = Validator(max_past_ms=config.max_event_age_ms)
    name = lambda catalogue_name: topic_name(spec_for(catalogue_name), prefix)  # noqa: E731

    app = faust.App(
        f"{prefix}{config.app_id}",
        broker=[f"kafka://{host}" for host in kafka.bootstrap.split(",")],
        broker_credentials=faust_credentials(kafka),
        store="memory://",
        topic_partitions=ACCOUNT_PARTITIONS,
        topic_replication_factor=kafka.replication_factor,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        table_standby_replicas=0,
        # messages wait un-acknowledged until their snapshot is stored; shutdown must not wait for them
        stream_wait_empty=False,
        # a dead worker's partitions move after 10 s without heartbeats, not faust's default 60 s
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
        # a snapshot carries the events its shard still holds back: allow it to outgrow 1 MB
        producer_max_request_size=SNAPSHOT_MAX_BYTES,
    )
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    market = app.topic(*[name(spec.name) for spec in MARKET_TOPICS], **raw)
    inputs = app.topic(*[name(topic) for topic in ACCOUNT_TOPICS], name(FANOUT_TOPIC), **raw)
    # snapshot bytes travel base64-encoded: faust tables pick a JSON codec for plain types
    snapshots = app.Table("engine-snapshots", default=None, partitions=ACCOUNT_PARTITIONS, key_type=str, value_type=str,
                          extra_topic_configs={"max.message.bytes": SNAPSHOT_MAX_BYTES})

    shards: dict[int, Shard] = {}
    owned: set[int] = set()  # account partitions assigned to this worker now
    positions_topic = name("backstop.positions")
    pending: dict[int, list[Any]] = {}  # messages taken since the partition's last snapshot, to acknowledge
    backlog: dict[int, int] = {}  # records in them (a fan-out message carries many)
    last_seen: dict[tuple[int, str], float] = {}
    revoked_at: dict[tuple[str, int], float] = {}  # when each topic-partition was last revoked here
    taken: dict[tuple[str, int], int] = {}  # next offset to take, per topic-partition read

    def fresh(events: list[Any]) -> list[Any]:
        kept = [event for event in events if current(event.message, revoked_at)]
        if len(kept) < len(events):
            log.info("dropped %d messages taken before the last rebalance: they are read again in order",
                     len(events) - len(kept))
        return kept

    def shard_for(partition: int) -> Shard:
        shard = shards.get(partition)
        if shard is None:
            stored = snapshots.get(str(partition))
            shard = (Shard.restore(base64.b64decode(stored), key) if stored
                     else Shard(partition, ACCOUNT_PARTITIONS, key, config.engine))
            shards[partition] = shard
            pending[partition], backlog[partition] = [], 0
        return shard

    outbox, fan = Outbox(kafka), Outbox(kafka)
    batches = fanout.OpenedBatches(codec, validator)
    output_topics = {record: name(topic) for record, topic in
                     (("Breach", "backstop.breaches"), ("Action", "backstop.actions"),
                      ("ExposureSnapshot", "backstop.exposures"))}
    fanout_name = name(FANOUT_TOPIC)

    def emit(output: EngineOutput) -> None:
        metrics.record_outputs(output.breaches, output.actions, int(time.time() * 1000))
        for breach in output.breaches:
            outbox.send(output_topics["Breach"], breach_key(breach).encode(),
                        codec.encode("Breach", breach_record(breach)))
        for action in output.actions:
            outbox.send(output_topics["Action"], action["account"].encode(), codec.encode("Action", action))
        for exposure in output.exposures:
            outbox.send(output_topics["ExposureSnapshot"], exposure["account"].encode(),
                        codec.encode("ExposureSnapshot", exposure))
        outbox.producer.poll(0)

    @app.agent(market, concurrency=1)
    async def fan_out(stream: faust.StreamT) -> None:
        async for events in stream.noack_take(config.batch_max, within=config.batch_within_ms / 1000):
            events = fresh(events)
            if not events:
                continue
            items = []
            for event in events:
                metrics.consumed(event.message.topic.removeprefix(prefix))
                taken[(event.message.topic, event.message.partition)] = event.message.offset + 1
                items.append((source_of(event.message, prefix), event.message.key, event.message.value))
            newest_ms = int(max(event.message.timestamp or 0.0 for event in events) * 1000)
            for batch in fanout.batches(items, newest_ms):
                value, batch_key = codec.encode("MarketBatch", batch), batch["batch_id"].encode()
                for partition in range(ACCOUNT_PARTITIONS):
                    fan.send(fanout_name, batch_key, value, partition)
            await fan.drained()
            for event in events:  # forwarded and confirmed: faust may commit past them
                await stream.ack(event)

    @app.agent(inputs, concurrency=1)
    async def run_shards(stream: faust.StreamT) -> None:
        async for events in stream.noack_take(config.batch_max, within=config.batch_within_ms / 1000):
            now_ms = int(time.time() * 1000)
            touched: dict[int, None] = {}
            for event in fresh(events):
                metrics.consumed(event.message.topic.removeprefix(prefix))
                taken[(event.message.topic, event.message.partition)] = event.message.offset + 1
                partition = event.message.partition
                shard = shard_for(partition)
                pending[partition].append(event)
                message = event.message
                if message.topic == fanout_name:
                    opened = batches.open(message.value, now_ms)
                    if isinstance(opened, Refused):
                        dead_letter_send(message, opened.reason, opened.detail, now_ms, message.value, message.key)
                        continue
                    for item, admitted in opened:
                        take(shard, message, item["source"], item["key"], item["value"], admitted, now_ms)
                    backlog[partition] += len(opened)
                else:
                    source = source_of(message, prefix)
                    take(shard, message, source, message.key, message.value,
                         admit(codec, validator, message.value, source, now_ms), now_ms)
                    backlog[partition] += 1
                touched[partition] = None
            for partition in touched:
                await release(partition)
            for partition in touched:
                # a checkpoint awaits the broker, and a rebalance may revoke partitions meanwhile
                if partition in shards and backlog[partition] >= config.snapshot_every:
                    await checkpoint(partition, stream)

    async def release(partition: int) -> None:
        """Run what the partition's shard can release through its engine, ``RELEASE_CHUNK``
        events at a time, yielding to the loop in between; stops if the partition is revoked
        meanwhile (its next owner redoes the rest from the snapshot)."""
        shard = shards.get(partition)
        while shard is not None and shards.get(partition) is shard:
            queued = len(shard.sequencer)
            emit(shard.advance(RELEASE_CHUNK))
            if queued - len(shard.sequencer) < RELEASE_CHUNK:
                return
            await asyncio.sleep(0)

    def take(shard: Shard, message: Any, source: str, key: bytes | None, value: bytes | None,
             admitted: Message | Refused, now_ms: int) -> None:
        """Queue one record read from ``source`` in its shard, as admitted (bad input to the
        dead letters, with the coordinates of the ``message`` that carried it)."""
        if isinstance(admitted, Refused):
            detail = admitted.detail if message.topic != fanout_name else f"{source}: {admitted.detail}"
            dead_letter_send(message, admitted.reason, detail, now_ms, value, key)
            if admitted.input is not None:
                shard.skip(admitted.input, admitted.offset)
            return
        last_seen[(message.partition, admitted.input)] = time.monotonic()
        shard.push(admitted)

    async def checkpoint(partition: int, stream: faust.StreamT) -> None:
        """Outputs confirmed, then the shard stored, then the messages it covers acknowledged
        (faust commits up to them): offsets never run ahead of a snapshot or of an output."""
        await outbox.drained()
        if partition not in shards:
            return  # revoked while waiting: the next owner restores the last stored snapshot
        stored = base64.b64encode(shards[partition].snapshot()).decode()
        # A batch has no "current event" for faust to take the changelog partition from, so the
        # record goes to the changelog partition of its shard explicitly. Its delivery is awaited
        # before anything it covers is acknowledged: faust flushes its producer before it commits,
        # but that flush gives up after 100 ms without a send (ProducerBuffer.flush_atmost), and a
        # commit that overtook the snapshot would have the next owner start after records only
        # the lost snapshot held.
        delivered = snapshots.send_changelog(partition, str(partition), stored)
        snapshots.data[str(partition)] = stored
        await delivered
        for event in pending[partition]:
            await stream.ack(event)
        pending[partition], backlog[partition] = [], 0

    def dead_letter_send(message: Any, reason: str, detail: str, now_ms: int, value: bytes | None,
                         key: bytes | None) -> None:
        metrics.dead_letter(reason)
        record = dead_letter(reason=reason, detail=detail, topic=message.topic, partition=message.partition,
                             offset=message.offset, value=value, key=key, consumer="worker", event_time_ms=now_ms)
        outbox.send(name("backstop.deadletters"), message.topic.encode(), codec.encode("DeadLetter", record))

    # what the broker holds for every input: only an input read to its end may be idled
    read_specs = (*MARKET_TOPICS, *(spec_for(topic) for topic in (*ACCOUNT_TOPICS, FANOUT_TOPIC)))
    topic_of = {spec.name: name(spec.name) for spec in read_specs}
    readable = [(name(spec.name), p) for spec in read_specs for p in range(spec.partitions)]
    admin = AdminClient(client_config(kafka))
    progress: BrokerProgress | None = None

    reported_lost: set[tuple[int, str, int]] = set()

    @app.timer(interval=max(0.1, config.idle_ms / 2000))
    async def refresh_progress() -> None:
        nonlocal progress
        try:
            progress = await asyncio.get_running_loop().run_in_executor(
                None, read_progress, admin, app.conf.id, readable, PROGRESS_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - a broker hiccup costs a reading, never the worker
            progress = None  # unknown progress settles nothing (a stale reading could)
            log.warning("broker progress not read: %r", exc)
        for partition, shard in list(shards.items()):
            lost = deleted_unread(partition, progress, taken, shard.offsets, topic_of, ACCOUNT_TOPICS, fanout_name)
            for input_name, (first, start) in lost.items():
                if (partition, input_name, start) not in reported_lost:
                    reported_lost.add((partition, input_name, start))
                    log.error("shard %d never read %s offsets %d..%d: the broker deleted them first (retention "
                              "counts from message timestamps; docs/operations.md); the shard goes on without them",
                              partition, input_name, first, start - 1)

    @app.timer(interval=0.1)
    async def release_idle_inputs() -> None:
        now = time.monotonic()
        for partition, shard in list(shards.items()):
            if shards.get(partition) is not shard:  # revoked while an earlier one was released
                continue
            settled = settled_inputs(shard.inputs, partition, progress, taken, shard.offsets, topic_of,
                                     ACCOUNT_TOPICS, fanout_name)
            quiet = [name for name in shard.inputs if name in settled
                     and now - last_seen.get((partition, name), 0.0) > config.idle_ms / 1000]
            if len(quiet) == len(shard.inputs):
                if not len(shard.sequencer):
                    continue
                shard.idle_all()
            else:
                for input_name in quiet:
                    shard.idle(input_name)
            await release(partition)

    @app.task
    async def probe_loop() -> None:
        await watch_loop(metrics.loop_lag)

    @app.timer(interval=metrics.lag_interval_s)
    async def report_lag() -> None:
        """Consumer lag of every input partition assigned here: the end offset (from the last
        broker reading) minus the next offset this worker takes (taken, not yet committed: lag
        is about keeping up), or the group's committed offset where nothing was taken yet."""
        if progress is None:
            return
        lags: dict[tuple[str, int], int] = {}
        for tp in app.consumer.assignment():
            key = (tp.topic, tp.partition)
            if key in progress.ends:  # an input, not the snapshots' changelog
                lags[(tp.topic.removeprefix(prefix), tp.partition)] = max(0, progress.ends[key]
                                                                            - progress.read_to(key, taken))
        metrics.set_lags(lags)

    @app.on_partitions_revoked.connect
    async def forget(app: faust.App, revoked: set, **_: Any) -> None:  # noqa: ARG001
        """A moved partition's shard is rebuilt from its snapshot by whoever owns it next."""
        now = time.monotonic()
        for tp in revoked:
            taken.pop((tp.topic, tp.partition), None)
            revoked_at[(tp.topic, tp.partition)] = now
            owned.discard(tp.partition)
            shards.pop(tp.partition, None)
            pending.pop(tp.partition, None)
            backlog.pop(tp.partition, None)
        if not owned:
            ready.clear()

    @app.on_partitions_assigned.connect
    async def own(app: faust.App, assigned: set, **_: Any) -> None:  # noqa: ARG001
        owned.update(tp.partition for tp in assigned if tp.topic == positions_topic)
        if owned:
            ready.set()

    return app


def current(message: Any, revoked_at: Mapping[tuple[str, int], float]) -> bool:
    """Whether faust handed ``message`` to the streams after its partition was last revoked
    here (``revoked_at``: monotonic times; a partition never revoked has no entry).

    A rebalance revokes every partition (aiokafka's eager protocol) but leaves what a take buffer
    already holds in place (streams are not waited for: their messages wait for a snapshot);
    fetching stops until the new assignment has read every partition back to its committed
    offset. An older copy processed after that would put a shard ahead of the re-read, and the
    records in between would be dropped as redeliveries: another order than the in-process
    replay's. So it is dropped itself, unacknowledged, and comes back in its place (or goes to
    the partition's new owner). faust stamps ``time_in`` when it hands a message over, on the
    monotonic clock."""
    return message.time_in is not None and message.time_in > revoked_at.get((message.topic, message.partition),
                                                                             float("-inf"))


def breach_key(breach) -> str:
    """Account breaches are keyed by account; market breaches by their underlying."""
    return breach.subject if breach.kind in ACCOUNT_BREACHES else market_subject(breach.subject)


def breach_record(breach) -> dict[str, Any]:
    """The ``Breach`` Avro datum of a core breach."""
    market = breach.kind not in ACCOUNT_BREACHES
    instrument = breach.subject if market and "-" in breach.subject else None
    triggers = []
    for ref in breach.triggers:
        topic, partition, offset = ref.rsplit(":", 2)
        triggers.append({"topic": topic, "partition": int(partition), "offset": int(offset), "event_id": ref})
    return {
        "breach_id": breach.breach_id,
        "kind": breach.kind.value,
        "account": breach_key(breach),
        "underlying": market_subject(breach.subject) if market else None,
        "instrument": instrument,
        "observed": float(breach.value),
        "threshold": float(breach.threshold),
        "severity": "critical" if breach.kind.value in ("equity_below_liquidation", "margin_shortfall") else "warning",
        "window_start_ms": breach.window_start_ms,
        "window_end_ms": breach.window_end_ms,
        "triggers": triggers,
        "details": {"level": str(breach.level), "cleared": "true" if breach.cleared else "false",
                    "subject": breach.subject},
        "event_time_ms": breach.event_time_ms,
    }
