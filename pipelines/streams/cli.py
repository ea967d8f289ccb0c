"""``backstop worker``: one stream worker of the cluster (start more to add capacity)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import threading

from pipelines import arguments
from pipelines.config import load_settings
from pipelines.engine.engine import EngineParams
from pipelines.ops import shell
from pipelines.ops.metrics import Metrics
from pipelines.policy.signing import SigningKey
from pipelines.risk import kernels
from pipelines.streams.app import WorkerConfig, make_app


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("worker", help="run a stream worker (faust) of the cluster")
    parser.add_argument("--bootstrap", help="broker address (default: settings kafka.bootstrap)")
    parser.add_argument("--app-id", default="backstop-worker",
                        help="faust app id: workers with the same id share the work")
    parser.add_argument("--snapshot-every", type=arguments.positive_int, default=500,
                        help="records per partition between snapshots")
    parser.add_argument("--idle-ms", type=arguments.positive_int, default=1_000,
                        help="wall-clock silence after which an input stops holding others back")
    parser.add_argument("--max-event-age-s", type=arguments.positive_float, default=86_400.0,
                        help="events older than this (against the wall clock) are dead-lettered; raise it for "
                             "replays (the bundled scenarios are dated 2020-2025: e.g. 1e9)")
    parser.add_argument("--hedged", default="", help="comma-separated accounts to keep delta-hedged")
    parser.add_argument("--loglevel", default="warn", choices=("crit", "error", "warn", "info", "debug"),
                        help="faust's log level (default %(default)s)")
    shell.add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import faust

    settings = load_settings(args.config)
    if args.bootstrap:
        settings = dataclasses.replace(settings, kafka=dataclasses.replace(settings.kafka, bootstrap=args.bootstrap))
    config = WorkerConfig(app_id=args.app_id, snapshot_every=args.snapshot_every, idle_ms=args.idle_ms,
                          max_event_age_ms=int(args.max_event_age_s * 1000),
                          engine=EngineParams(hedged_accounts=frozenset(a for a in args.hedged.split(",") if a)))
    ops = shell.configure(args, settings.ops)
    kernels.warm()  # loaded before faust starts: never on the event loop, where heartbeats wait behind it
    metrics, ready = Metrics("worker", lag_interval_s=ops.lag_interval_s), threading.Event()
    app = make_app(settings, SigningKey.from_env(), config, metrics, ready)
    sys.argv = [sys.argv[0]]  # faust's worker parses argv itself
    with shell.endpoint(ops, metrics, ready.is_set):
        faust.Worker(app, loglevel=args.loglevel).execute_from_commandline()
    return 0
