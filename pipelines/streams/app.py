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
restores its snapshot and drops the redelivered messages the snapshot already holds (and
reads further back where the snapshot holds less than the commits: ``cover_snapshots``). Both agents
take each partition strictly in offset order from where the worker positioned the consumer
itself, and re-read from the first offset missed (``streams/inorder.py``): faust can lose or
leave over messages around a rebalance. Outputs carry deterministic ids, so the few re-sent
after a crash are recognised downstream (executors execute an action id once).

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
from collections.abc import Callable
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
from pipelines.streams.inorder import InOrder, behind_snapshot
from pipelines.streams.intake import Refused, admit
from pipelines.streams.settled import (TP, BrokerProgress, deleted_unread, describe_input, read_progress,
                                       settled_inputs)
from pipelines.topics import ACCOUNT_PARTITIONS, CATALOGUE, spec_for, topic_name

log = logging.getLogger(__name__)

SNAPSHOT_MAX_BYTES = 16 * 1024 * 1024
PROGRESS_TIMEOUT_S = 10.0
# Events a shard runs through its engine before it lets the event loop breathe: a backlog released
# at once (a drain after a takeover: thousands of events) held the loop, and the consumer's
# heartbeats with it, for seconds; past the 10 s session timeout the group drops the worker.
RELEASE_CHUNK = 500
# A shard that has released nothing for this long while holding events says which input it waits for.
HELD_WARN_S = 30.0


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
    # restored at positioning, in use (in ``shards``) from the first message taken: the timers work on
    # ``shards`` with the reading of where each input stands, which holds only once it is positioned
    staged: dict[int, Shard] = {}
    owned: set[int] = set()  # account partitions assigned to this worker now
    positions_topic = name("backstop.positions")
    pending: dict[int, list[Any]] = {}  # messages taken since the partition's last snapshot, to acknowledge
    backlog: dict[int, int] = {}  # records in them (a fan-out message carries many)
    last_seen: dict[tuple[int, str], float] = {}
    compacted = {name(spec.name) for spec in CATALOGUE if spec.cleanup_policy == "compact"}
    order = InOrder(compacted)
    taken = order.next  # next offset to take, per topic-partition read
    releases: dict[int, int] = {}  # per partition: how many times its shard released something
    held: dict[int, tuple[int, float, float]] = {}  # per partition: (releases, holding since, last warned)
    dropped_reported = 0  # messages dropped out of offset order, as last logged

    def in_order(events: list[Any]) -> list[Any]:
        """The events that are, each, the next offset of their partition here (``streams/inorder.py``)."""
        return [event for event in events if order.take((event.message.topic, event.message.partition),
                                                        event.message.offset, event.message.time_in)]

    def restored(partition: int) -> Shard:
        """The partition's shard as its last snapshot holds it, or a new one where none is stored."""
        stored = snapshots.get(str(partition))
        return (Shard.restore(base64.b64decode(stored), key) if stored
                else Shard(partition, ACCOUNT_PARTITIONS, key, config.engine))

    def shard_for(partition: int) -> Shard:
        """The partition's shard in use, from its first message taken: the one ``cover_snapshots``
        restored when the partition was positioned, or restored now."""
        shard = shards.get(partition)
        if shard is None:
            shard = staged.pop(partition, None) or restored(partition)
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
            events = in_order(events)
            if not events:
                continue
            items = []
            for event in events:
                metrics.consumed(event.message.topic.removeprefix(prefix))
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
            for event in in_order(events):
                metrics.consumed(event.message.topic.removeprefix(prefix))
                partition = event.message.partition
                shard = shard_for(partition)
                pending[partition].append(event)
                message = event.message
                if message.topic == fanout_name:
                    shard.read_past(f"{FANOUT_TOPIC}/{partition}", message.offset)
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
            if len(shard.sequencer) < queued:
                releases[partition] = releases.get(partition, 0) + 1
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
                shard.read_past(admitted.input, admitted.offset)
            return
        last_seen[(message.partition, admitted.input)] = time.monotonic()
        shard.push(admitted)

    async def checkpoint(partition: int, stream: faust.StreamT) -> None:
        """The shard stored, then the messages it covers acknowledged (faust commits up to them),
        each step only once the broker has confirmed the one before: offsets never run ahead of a
        snapshot, and a snapshot never holds an event whose outputs are not on the broker."""
        shard = shards[partition]
        # Taken first: the idle timer may release events while this waits for the broker, and
        # their outputs, queued after this point, are not what this snapshot holds.
        stored = base64.b64encode(shard.snapshot()).decode()
        covered, pending[partition], backlog[partition] = pending[partition], [], 0
        await outbox.drained()
        if shards.get(partition) is not shard:
            return  # revoked meanwhile: its next owner restores the last stored snapshot
        # A batch has no "current event" for faust to take the changelog partition from, so the
        # record goes to the changelog partition of its shard explicitly. Its delivery is awaited
        # before anything it covers is acknowledged: faust flushes its producer before it commits,
        # but that flush gives up after 100 ms without a send (ProducerBuffer.flush_atmost), and a
        # commit that overtook the snapshot would have the next owner start after records only
        # the lost snapshot held.
        delivered = snapshots.send_changelog(partition, str(partition), stored)
        snapshots.data[str(partition)] = stored
        await delivered
        if shards.get(partition) is not shard:
            # Revoked (perhaps handed back) meanwhile: acknowledging now would let faust commit
            # messages that a shard restored from an older snapshot has not seen.
            return
        for event in covered:
            await stream.ack(event)

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
        if progress is not None and not app.rebalancing:
            await reposition(progress)
        for partition, shard in list(shards.items()):
            lost = deleted_unread(partition, progress, taken, shard.offsets, topic_of, ACCOUNT_TOPICS, fanout_name)
            for input_name, (first, start) in lost.items():
                if (partition, input_name, start) not in reported_lost:
                    reported_lost.add((partition, input_name, start))
                    log.error("shard %d never read %s offsets %d..%d: the broker deleted them first (retention "
                              "counts from message timestamps; docs/operations.md); the shard goes on without them",
                              partition, input_name, first, start - 1)

    async def reposition(reading: BrokerProgress) -> None:
        """Position the consumer where ``order`` needs it: newly assigned partitions at their
        committed offsets, holes and stalled partitions at the next offset to take."""
        assignment = {(tp.topic, tp.partition): tp for tp in app.consumer.assignment()}
        targets = order.due(assignment, reading, time.monotonic())
        if not targets:
            return
        cover_snapshots(targets, reading)
        generation = app.consumer_generation_id
        try:
            await asyncio.wait_for(app.consumer.seek_wait({assignment[tp]: offset for tp, offset in targets.items()}),
                                   PROGRESS_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - the assignment moved on meanwhile: the next reading retries
            log.info("could not position the consumer (%r); retrying at the next reading", exc)
            return
        if app.consumer_generation_id == generation and not app.rebalancing:  # else a rebalance has seeked since
            for tp in targets:
                if tp[0] not in compacted:
                    # faust counts offsets it sees skipped as processed ("gaps": meant for compaction
                    # and transaction markers) and commits past them. After a seek back, a message left
                    # over from an earlier fetch looks like such a skip; with no read offset faust
                    # computes none, and drops what it already passed until the re-read catches up.
                    # (Private fields of faust's Consumer: pyproject.toml pins the line they were read in.)
                    app.consumer._read_offset.pop(assignment[tp], None)
                    app.consumer._gap.pop(assignment[tp], None)
            order.positioned(targets, time.monotonic())
            log.info("reading from %s", offsets_label(targets))

    def cover_snapshots(targets: dict[TP, int], reading: BrokerProgress) -> None:
        """Restore the shard of every account partition positioned here for the first time, and
        read its inputs from where its state ends where that falls short of the group's commits
        (``inorder.behind_snapshot``): state lost between the snapshot table and the commits
        would otherwise leave the shard's accounts without their positions, and nothing would
        say so. Runs after faust's table recovery (``reposition`` waits out the rebalance)."""
        account_names = {name(topic) for topic in ACCOUNT_TOPICS}
        for partition in sorted({p for topic, p in targets if topic in account_names and (topic, p) not in taken}):
            shard = shards.get(partition) or staged.get(partition)
            known = shard is not None
            if shard is None:
                shard = staged[partition] = restored(partition)
            inputs = {(name(topic), partition): f"{topic}/{partition}" for topic in ACCOUNT_TOPICS}
            fanout_input = ((fanout_name, partition), f"{FANOUT_TOPIC}/{partition}")
            moved = behind_snapshot(targets, inputs, fanout_input, shard.offsets, reading.starts)
            found = bool(shard.offsets)  # a shard that has taken nothing holds nothing, snapshot or not
            held = {input_name: shard.offsets.get(input_name, -1) for input_name in (*inputs.values(), fanout_input[1])}
            if moved:
                why = f"its snapshot holds {held}" if found else "no snapshot was found"
                log.error("shard %d holds less than its group committed (%s): reading from %s, not from %s",
                          partition, why, offsets_label(moved), offsets_label({tp: targets[tp] for tp in moved}))
                targets.update(moved)
            elif not known:
                log.info("shard %d %s", partition, f"restored from its snapshot, which holds {held}" if found
                         else "starts empty")

    def offsets_label(offsets: dict[TP, int]) -> dict[str, int]:
        return {f"{topic.removeprefix(prefix)}/{partition}": offset for (topic, partition), offset in offsets.items()}

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

    @app.timer(interval=5.0)
    async def report_held() -> None:
        """A shard that holds events and has released none for ``HELD_WARN_S`` names the input it
        waits for and where that input stands on the broker: the first question when outputs stop.
        Messages dropped out of offset order since the last report are counted too."""
        nonlocal dropped_reported
        if order.dropped > dropped_reported:
            log.info("dropped %d messages out of offset order (left over from a rebalance, or past a hole): they are "
                     "read again in order", order.dropped - dropped_reported)
            dropped_reported = order.dropped
        now = time.monotonic()
        for partition, shard in list(shards.items()):
            mark = releases.get(partition, 0)
            previous = held.get(partition)
            if not len(shard.sequencer) or previous is None or previous[0] != mark:
                held[partition] = (mark, now, 0.0)
                continue
            _, since, warned = previous
            if now - since < HELD_WARN_S or now - warned < HELD_WARN_S:
                continue
            held[partition] = (mark, since, now)
            bound = shard.sequencer.bound()
            waiting = "no input (all idle)" if bound is None else (
                f"{bound[0]} (its newest event time {bound[1]}; "
                + describe_input(bound[0], partition, progress, taken, shard.offsets, topic_of, ACCOUNT_TOPICS,
                                 fanout_name) + ")")
            log.warning("shard %d has held %d events for %.0f s without releasing any (next in line at event time "
                        "%s), waiting for %s", partition, len(shard.sequencer), now - since,
                        shard.sequencer.head_time(), waiting)

    unpriced_since: dict[int, tuple[float, float]] = {}  # per partition: (unpriced since, last warned)

    @app.timer(interval=5.0)
    async def report_unpriced() -> None:
        """A shard whose accounts have had no index price to be valued on for ``HELD_WARN_S``
        says so, with where its index inputs stand: nothing watches those accounts meanwhile,
        and a shard in that state holds nothing back, so ``report_held`` is silent about it."""
        now = time.monotonic()
        for partition, shard in list(shards.items()):
            waiting = shard.engine.unpriced()
            if not waiting:
                unpriced_since.pop(partition, None)
                continue
            since, warned = unpriced_since.setdefault(partition, (now, 0.0))
            if now - since < HELD_WARN_S or now - warned < HELD_WARN_S:
                continue
            unpriced_since[partition] = (since, now)
            inputs = "; ".join(
                f"{name}: " + describe_input(name, partition, progress, taken, shard.offsets, topic_of, ACCOUNT_TOPICS,
                                             fanout_name)
                for name in shard.inputs if name.startswith("backstop.market.index/"))
            log.warning("shard %d has had accounts it cannot value for %.0f s (no index price; accounts per "
                        "underlying: %s); its index inputs: %s", partition, now - since, waiting, inputs)

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
        for tp in revoked:
            order.forget((tp.topic, tp.partition))
            owned.discard(tp.partition)
            shards.pop(tp.partition, None)
            staged.pop(tp.partition, None)
            pending.pop(tp.partition, None)
            backlog.pop(tp.partition, None)
            held.pop(tp.partition, None)
            unpriced_since.pop(tp.partition, None)
        if not owned:
            ready.clear()

    @app.on_partitions_assigned.connect
    async def own(app: faust.App, assigned: set, **_: Any) -> None:  # noqa: ARG001
        owned.update(tp.partition for tp in assigned if tp.topic == positions_topic)
        if owned:
            ready.set()

    return app


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
