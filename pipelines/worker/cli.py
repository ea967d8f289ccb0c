"""``backstop worker``: one stream worker of the cluster (start more to add capacity)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import threading
import time

from pipelines import arguments
from pipelines.config import Settings, load_settings
from pipelines.ops import shell
from pipelines.ops.metrics import Metrics
from pipelines.policy.signing import SigningKey
from pipelines.risk import kernels
from pipelines.worker.kafka import KafkaPorts
from pipelines.worker.worker import Worker, WorkerConfig

LEVELS = {"crit": logging.CRITICAL, "error": logging.ERROR, "warn": logging.WARNING, "info": logging.INFO,
          "debug": logging.DEBUG}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("worker", help="run a stream worker of the cluster")
    parser.add_argument("--bootstrap", help="broker address (default: settings kafka.bootstrap)")
    parser.add_argument("--app-id", default="backstop-worker",
                        help="consumer group: workers with the same id share the account partitions")
    parser.add_argument("--checkpoint-ms", type=arguments.positive_int, default=10_000,
                        help="wall-clock time between checkpoints of the partitions held (default %(default)s)")
    parser.add_argument("--idle-ms", type=arguments.positive_int, default=200,
                        help="wall-clock silence after which an input read to its end stops holding others back")
    parser.add_argument("--stall-ms", type=arguments.positive_int, default=10_000,
                        help="a partition that applies nothing this long while records wait is reported "
                             "(ERROR, /readyz fails)")
    parser.add_argument("--session-timeout-ms", type=arguments.positive_int, default=10_000,
                        help="a worker silent this long leaves the group and its partitions move")
    parser.add_argument("--max-event-age-s", type=arguments.positive_float, default=86_400.0,
                        help="events older than this against their message's timestamp are dead-lettered (never "
                             "the wall clock: a record read again after a takeover is judged as it was the first "
                             "time); raise it for replays that stamp messages now (e.g. 1e9)")
    parser.add_argument("--hedged", default="", help="comma-separated accounts to keep delta-hedged")
    parser.add_argument("--loglevel", default="warn", choices=tuple(LEVELS), help="log level (default %(default)s)")
    shell.add_arguments(parser)
    parser.set_defaults(func=run)


def worker_config(args: argparse.Namespace, settings: Settings) -> WorkerConfig:
    """The worker's configuration: its flags, and the engine of the settings' ``[engine]`` section
    with the ``--hedged`` accounts."""
    hedged = frozenset(a for a in args.hedged.split(",") if a)
    return WorkerConfig(checkpoint_ms=args.checkpoint_ms, idle_ms=args.idle_ms, stall_ms=args.stall_ms,
                        max_event_age_ms=int(args.max_event_age_s * 1000),
                        engine=settings.engine.engine_params(hedged))


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    if args.bootstrap:
        settings = dataclasses.replace(settings, kafka=dataclasses.replace(settings.kafka, bootstrap=args.bootstrap))
    config = worker_config(args, settings)
    ops = shell.configure(args, settings.ops)
    logging.getLogger().setLevel(LEVELS[args.loglevel])
    kernels.warm()
    metrics = Metrics("worker", lag_interval_s=ops.lag_interval_s)
    ports = KafkaPorts(settings.kafka, f"{settings.kafka.topic_prefix}{args.app_id}", args.session_timeout_ms)
    worker = Worker(ports, SigningKey.from_env(), config, time.monotonic, metrics)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with shell.endpoint(ops, metrics, worker.ready):
        try:
            while not stop.is_set():
                worker.step()
        finally:
            worker.close()
            ports.close()
    return 0
