"""The stream workers: a faust-streaming app that drives one ``Shard`` per account partition.

Two agents, both stateless shells around the pure core:

- ``fanout`` reads the market topics (as a consumer group, so each market partition is read
  by one worker) and copies every record to *every* partition of ``backstop.market.fanout``,
  tagged with its source coordinates. Market data thereby sits beside the account data of each
  partition, and the worker owning partition *p* sees all of it.
- ``shards`` reads ``backstop.positions``, ``backstop.collateral`` and the fan-out, which faust
  co-partitions (same partition count, same worker per partition number). Each message is
  decoded and validated (bad ones go to the dead letters), then pushed into its partition's
  ``Shard``: the sequencer orders it by event time across inputs, and the engine turns it into
  breaches and signed actions, which are sent to their topics.

State and recovery. The agent does not acknowledge messages as it goes (``noack``); every
``snapshot_every`` messages of a partition it writes the whole shard to a changelogged faust
table (keyed by partition, written while processing that partition, so the changelog record
lands in the same partition) and only then acknowledges what the snapshot covers. Offsets faust
commits therefore never run ahead of a stored snapshot; a worker that takes a partition over
restores its snapshot and drops the redelivered messages the snapshot already holds. Outputs
carry deterministic ids, so the few re-sent after a crash are recognised downstream (executors
execute an action id once).

Silent inputs would hold the sequencer back: an input with nothing new for ``idle_ms`` of
wall-clock time is marked idle, and a partition whose inputs are all quiet is drained (its queue
released; revaluation keeps to the engine's event-time ticks). This is the only place wall-clock
time enters, and only for inputs that are silent.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import time
from typing import Any

import faust

from pipelines.config import Settings
from pipelines.engine.engine import EngineOutput, EngineParams
from pipelines.engine.shard import FANOUT_TOPIC, MARKET_TOPICS, Message, Shard
from pipelines.engine.shards import ACCOUNT_BREACHES, market_subject
from pipelines.events.codec import DecodeError, default_codec
from pipelines.events.deadletter import dead_letter
from pipelines.events.validation import Validator
from pipelines.policy.signing import SigningKey
from pipelines.topics import ACCOUNT_PARTITIONS, spec_for, topic_name

log = logging.getLogger(__name__)

SOURCE_HEADER = "backstop-source"


@dataclasses.dataclass(frozen=True)
class WorkerConfig:
    app_id: str = "backstop-worker"
    snapshot_every: int = 500
    idle_ms: int = 1_000
    max_event_age_ms: int = 24 * 3600 * 1000
    engine: EngineParams = EngineParams()


def source_of(message: Any, prefix: str) -> str:
    """``topic:partition:offset`` of the original event: the header a replay or the fan-out
    set, else this message's own coordinates (topic named without the deployment prefix)."""
    for name, value in message.headers or ():
        if name == SOURCE_HEADER:
            return value.decode()
    return f"{message.topic.removeprefix(prefix)}:{message.partition}:{message.offset}"


def make_app(settings: Settings, key: SigningKey, config: WorkerConfig | None = None) -> faust.App:
    config = config or WorkerConfig()
    kafka = settings.kafka
    prefix = kafka.topic_prefix
    codec = default_codec()
    validator = Validator(max_past_ms=config.max_event_age_ms)
    name = lambda catalogue_name: topic_name(spec_for(catalogue_name), prefix)  # noqa: E731

    app = faust.App(
        f"{prefix}{config.app_id}",
        broker=[f"kafka://{host}" for host in kafka.bootstrap.split(",")],
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
    )
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    market = app.topic(*[name(spec.name) for spec in MARKET_TOPICS], **raw)
    fanout = app.topic(name(FANOUT_TOPIC), partitions=ACCOUNT_PARTITIONS, **raw)
    inputs = app.topic(name("backstop.positions"), name("backstop.collateral"), name(FANOUT_TOPIC), **raw)
    outputs = {record: app.topic(name(topic), **raw) for record, topic in
               (("Breach", "backstop.breaches"), ("Action", "backstop.actions"),
                ("ExposureSnapshot", "backstop.exposures"))}
    dead_letters = app.topic(name("backstop.deadletters"), **raw)
    # snapshot bytes travel base64-encoded: faust tables pick a JSON codec for plain types
    snapshots = app.Table("engine-snapshots", default=None, partitions=ACCOUNT_PARTITIONS, key_type=str, value_type=str)

    shards: dict[int, Shard] = {}
    pending: dict[int, list[Any]] = {}
    last_seen: dict[tuple[int, str], float] = {}

    def shard_for(partition: int) -> Shard:
        shard = shards.get(partition)
        if shard is None:
            stored = snapshots.get(str(partition))
            shard = (Shard.restore(base64.b64decode(stored), key) if stored
                     else Shard(partition, ACCOUNT_PARTITIONS, key, config.engine))
            shards[partition] = shard
            pending[partition] = []
        return shard

    async def emit(output: EngineOutput) -> None:
        for breach in output.breaches:
            await outputs["Breach"].send(key=breach_key(breach).encode(),
                                         value=codec.encode("Breach", breach_record(breach)))
        for action in output.actions:
            await outputs["Action"].send(key=action["account"].encode(), value=codec.encode("Action", action))
        for exposure in output.exposures:
            await outputs["ExposureSnapshot"].send(key=exposure["account"].encode(),
                                                   value=codec.encode("ExposureSnapshot", exposure))

    @app.agent(market, concurrency=1)
    async def fan_out(stream: faust.StreamT) -> None:
        async for event in stream.events():
            headers = {SOURCE_HEADER: source_of(event.message, prefix).encode()}
            for partition in range(ACCOUNT_PARTITIONS):
                await fanout.send(key=event.message.key, value=event.message.value, partition=partition,
                                  headers=headers)

    @app.agent(inputs, concurrency=1)
    async def run_shards(stream: faust.StreamT) -> None:
        async for event in stream.noack().events():
            message = event.message
            partition = message.partition
            shard = shard_for(partition)
            pending[partition].append(event)
            ref = source_of(message, prefix)
            source_topic, source_partition, source_offset = ref.rsplit(":", 2)
            try:
                decoded = codec.decode(message.value)
                problem = validator.validate(decoded.record, decoded.value, int(time.time() * 1000))
            except DecodeError as exc:
                await dead_letter_send(message, exc.reason, str(exc))
                continue
            if problem is not None:
                await dead_letter_send(message, problem.reason, str(problem))
                continue
            input_name = f"{source_topic}/{source_partition}"
            last_seen[(partition, input_name)] = time.monotonic()
            shard.push(Message(input_name, int(source_offset), ref, decoded.record, decoded.value))
            await emit(shard.advance())
            if len(pending[partition]) >= config.snapshot_every:
                await checkpoint(partition, stream)

    async def checkpoint(partition: int, stream: faust.StreamT) -> None:
        """Store the shard, then acknowledge the messages it covers (faust commits up to them)."""
        snapshots[str(partition)] = base64.b64encode(shards[partition].snapshot()).decode()
        for event in pending[partition]:
            await stream.ack(event)
        pending[partition] = []

    async def dead_letter_send(message: Any, reason: str, detail: str) -> None:
        record = dead_letter(reason=reason, detail=detail, topic=message.topic, partition=message.partition,
                             offset=message.offset, value=message.value, key=message.key, consumer="worker",
                             event_time_ms=int(time.time() * 1000))
        await dead_letters.send(key=message.topic.encode(), value=codec.encode("DeadLetter", record))

    @app.timer(interval=0.1)
    async def release_idle_inputs() -> None:
        now = time.monotonic()
        for partition, shard in list(shards.items()):
            quiet = [name for name in shard.inputs if now - last_seen.get((partition, name), 0.0) > config.idle_ms / 1000]
            if len(quiet) == len(shard.inputs):
                if len(shard.sequencer):
                    await emit(shard.drain())
            else:
                for name in quiet:
                    shard.idle(name)
                await emit(shard.advance())

    @app.on_partitions_revoked.connect
    async def forget(app: faust.App, revoked: set, **_: Any) -> None:  # noqa: ARG001
        """A moved partition's shard is rebuilt from its snapshot by whoever owns it next."""
        for tp in revoked:
            shards.pop(tp.partition, None)
            pending.pop(tp.partition, None)

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
