"""``backstop executor``: run one executor of the consumer group on the action topic."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
from pathlib import Path

from confluent_kafka import Consumer, Producer

from pipelines.config import load_settings
from pipelines.errors import UserError
from pipelines.events.codec import default_codec
from pipelines.execution.executor import Executor, ExecutorConfig
from pipelines.execution.venue import SimulatedVenue, SimulatedVenueConfig
from pipelines.kafka import client_config
from pipelines.ops import shell
from pipelines.ops.metrics import Metrics
from pipelines.policy.signing import SigningKey
from pipelines.topics import spec_for, topic_name


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("executor", help="carry out actions against a venue, exactly once")
    parser.add_argument("--venue-config", required=True, metavar="JSON",
                        help="simulated venue: books, LPs, insurance fund, ADL book, injected faults")
    parser.add_argument("--ledger", default=".backstop/venue-ledger.sqlite",
                        help="the simulated venue's durable ledger, shared by every executor on this host")
    parser.add_argument("--instance-id", default=f"{socket.gethostname()}-{os.getpid()}",
                        help="stable per executor: its Kafka transactional id (fences a zombie after restart)")
    parser.add_argument("--group", default="backstop-executors", help="consumer group")
    parser.add_argument("--bootstrap", help="broker address (default: settings kafka.bootstrap)")
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--session-timeout-ms", type=int, default=10_000,
                        help="failover time for a dead executor (default 10 s; the broker's minimum is 6 s)")
    parser.add_argument("--max-actions", type=int, help="exit after handling this many actions")
    parser.add_argument("--idle-exit", type=float, metavar="SECONDS",
                        help="exit after this long without actions (counted once the executor has joined its group)")
    shell.add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    ops = shell.configure(args, settings.ops)
    kafka = settings.kafka
    bootstrap = {"bootstrap.servers": args.bootstrap} if args.bootstrap else {}
    try:
        venue_config = SimulatedVenueConfig.from_json(json.loads(Path(args.venue_config).read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"--venue-config {args.venue_config}: {exc}") from None
    Path(args.ledger).parent.mkdir(parents=True, exist_ok=True)
    metrics = Metrics("executor", lag_interval_s=ops.lag_interval_s)
    consumer = Consumer(client_config(kafka, **bootstrap, **metrics.consumer_config(), **{
        "group.id": args.group, "enable.auto.commit": False, "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        # a dead executor's partitions move after this long without heartbeats (librdkafka: 45 s)
        "session.timeout.ms": args.session_timeout_ms}))
    producer = Producer(client_config(kafka, **bootstrap, **{
        "transactional.id": f"backstop-executor-{args.instance_id}", "enable.idempotence": True,
        "linger.ms": 2}))
    config = ExecutorConfig(
        actions_topic=topic_name(spec_for("backstop.actions"), kafka.topic_prefix),
        executions_topic=topic_name(spec_for("backstop.executions"), kafka.topic_prefix),
        dead_letter_topic=topic_name(spec_for("backstop.deadletters"), kafka.topic_prefix),
        batch_size=args.batch_size)
    venue = SimulatedVenue(venue_config, args.ledger)
    executor = Executor(consumer, producer, default_codec(), venue,
                        SigningKey.from_env(), config, metrics=metrics)
    try:
        with shell.endpoint(ops, metrics, executor.ready):
            stats = executor.run(max_actions=args.max_actions, idle_exit_s=args.idle_exit)
    finally:
        venue.close()
    print(json.dumps(dataclasses.asdict(stats)))
    return 0
