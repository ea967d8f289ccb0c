"""``backstop executor``: run one executor of the consumer group on the action topic."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
from pathlib import Path

from confluent_kafka import Consumer, Producer

from pipelines import arguments
from pipelines.config import load_settings
from pipelines.errors import UserError
from pipelines.events.codec import default_codec
from pipelines.execution.executor import Executor, ExecutorConfig
from pipelines.execution.market import MARKET_RECORDS, MarketFeed
from pipelines.execution.venue import SimulatedVenue, SimulatedVenueConfig
from pipelines.execution.waterfall import AdlCandidate, LiquidityProvider, WaterfallParams
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
    parser.add_argument("--batch-size", type=arguments.positive_int, default=200,
                        help="most actions read and carried out per Kafka transaction (default %(default)s)")
    parser.add_argument("--session-timeout-ms", type=arguments.positive_int, default=10_000,
                        help="failover time for a dead executor (default 10 s; the broker's minimum is 6 s)")
    parser.add_argument("--max-actions", type=arguments.positive_int, help="exit after handling this many actions")
    parser.add_argument("--idle-exit", type=arguments.positive_float, metavar="SECONDS",
                        help="exit after this long without actions (counted once the executor has joined its group)")
    parser.add_argument("--static-books", action="store_true",
                        help="fill against the venue config's books only; by default the venue follows the market "
                             "topics' depth and marks")
    shell.add_arguments(parser)
    parser.set_defaults(func=run)


def venue_config_from(path: str) -> SimulatedVenueConfig:
    """``--venue-config``: a UTF-8 JSON object of ``SimulatedVenueConfig``'s fields (LPs, waterfall and
    ADL candidates of their classes' fields); any problem, an unknown field included, is a ``UserError``
    naming it."""
    flag = f"--venue-config {path}"
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"{flag}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise UserError(f"{flag}: not UTF-8 text (JSON files are UTF-8; save it as UTF-8)") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{flag}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(data, dict):
        raise UserError(f"{flag}: expected a JSON object")
    _known_fields(data, SimulatedVenueConfig, flag, "")
    for k, lp in enumerate(data.get("lps") or []):
        if isinstance(lp, dict):
            _known_fields(lp, LiquidityProvider, flag, f"lps[{k}].")
    if isinstance(data.get("waterfall"), dict):
        _known_fields(data["waterfall"], WaterfallParams, flag, "waterfall.")
    for instrument, candidates in (data.get("adl_candidates") or {}).items():
        for k, candidate in enumerate(candidates if isinstance(candidates, list) else []):
            if isinstance(candidate, dict):
                _known_fields(candidate, AdlCandidate, flag, f"adl_candidates.{instrument}[{k}].")
    try:
        return SimulatedVenueConfig.from_json(data)
    except KeyError as exc:
        raise UserError(f"{flag}: missing field {exc}") from None
    except (ValueError, TypeError, AttributeError) as exc:
        raise UserError(f"{flag}: {exc}") from None


def _known_fields(obj: dict, cls: type, flag: str, where: str) -> None:
    allowed = [f.name for f in dataclasses.fields(cls)]
    for key in obj:
        if key not in allowed:
            raise UserError(f"{flag}: {where}{key}: unknown field (expected {', '.join(allowed)})")


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    ops = shell.configure(args, settings.ops)
    kafka = settings.kafka
    bootstrap = {"bootstrap.servers": args.bootstrap} if args.bootstrap else {}
    venue_config = venue_config_from(args.venue_config)
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
    market = None
    if not args.static_books:
        market = MarketFeed(Consumer(client_config(kafka, **bootstrap, **{
            "group.id": f"backstop-executor-market-{args.instance_id}", "enable.auto.commit": False,
            "isolation.level": "read_committed"})), default_codec(), venue,
            {topic_name(spec_for(topic), kafka.topic_prefix): record for topic, record in MARKET_RECORDS.items()})
    executor = Executor(consumer, producer, default_codec(), venue,
                        SigningKey.from_env(), config, metrics=metrics, market=market)
    try:
        with shell.endpoint(ops, metrics, executor.ready):
            stats = executor.run(max_actions=args.max_actions, idle_exit_s=args.idle_exit)
    finally:
        venue.close()
    print(json.dumps(dataclasses.asdict(stats)))
    return 0
