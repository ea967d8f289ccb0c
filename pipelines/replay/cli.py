"""``backstop record`` (Kafka or the audit store → replay file) and ``backstop replay FILE``
(into Kafka, or in-process through the core)."""

from __future__ import annotations

import argparse
import json
from collections import Counter

from pipelines.config import load_settings
from pipelines.errors import UserError


def _ms(text: str | None) -> int | None:
    if text is None:
        return None
    from pipelines.audit.render import parse_time

    return parse_time(text)


def register(subparsers: argparse._SubParsersAction) -> None:
    rec = subparsers.add_parser("record", help="capture input topics (or the audit store's inputs) into a replay file")
    src = rec.add_mutually_exclusive_group()
    src.add_argument("--bootstrap", help="broker address (default: settings kafka.bootstrap)")
    src.add_argument("--store", metavar="PATH", help="export from this embedded audit store instead of Kafka")
    rec.add_argument("--from", dest="start", help="ISO 8601 UTC time or epoch ms (inclusive)")
    rec.add_argument("--to", dest="end", help="ISO 8601 UTC time or epoch ms (inclusive)")
    rec.add_argument("--idle", type=float, default=3.0, help="stop reading Kafka after this many idle seconds")
    rec.add_argument("--out", required=True, metavar="FILE")
    rec.set_defaults(func=run_record)

    rep = subparsers.add_parser("replay", help="replay a recording into Kafka or in-process")
    rep.add_argument("file")
    mode = rep.add_mutually_exclusive_group(required=True)
    mode.add_argument("--kafka", action="store_true", help="produce into Kafka (keys, partitions, order preserved)")
    mode.add_argument("--in-process", action="store_true", help="run through the core in-process, no broker")
    rep.add_argument("--bootstrap", help="broker address (default: settings kafka.bootstrap)")
    rep.add_argument("--speed", type=float, help="x N real time by event time (default: as fast as possible)")
    rep.add_argument("--keep-timestamps", action="store_true",
                     help="with --kafka: write the recorded Kafka timestamps (default: the replay's own time, the "
                          "recorded one in a header; a broker deletes messages older than a topic's retention)")
    rep.add_argument("--json", action="store_true")
    rep.set_defaults(func=run_replay)


def run_record(args: argparse.Namespace) -> int:
    start, end = _ms(args.start), _ms(args.end)
    if args.store:
        from pipelines.audit.store import EmbeddedStore
        from pipelines.replay.record import export_store

        store = EmbeddedStore(args.store)
        try:
            count = export_store(store, args.out, start_ms=start, end_ms=end)
        finally:
            store.close()
    else:
        from pipelines.kafka import client_config
        from pipelines.replay.record import record_kafka

        kafka = load_settings(args.config).kafka
        config = client_config(kafka)
        if args.bootstrap:
            config["bootstrap.servers"] = args.bootstrap
        count = record_kafka(args.out, config, prefix=getattr(kafka, "topic_prefix", ""), start_ms=start, end_ms=end,
                             idle_s=args.idle)
    print(f"recorded {count} messages to {args.out}")
    return 0


def run_replay(args: argparse.Namespace) -> int:
    if args.speed is not None and args.speed <= 0:
        raise UserError("--speed must be positive")
    if args.kafka:
        from pipelines.kafka import client_config
        from pipelines.replay.kafka_replay import replay_to_kafka

        kafka = load_settings(args.config).kafka
        config = client_config(kafka)
        if args.bootstrap:
            config["bootstrap.servers"] = args.bootstrap
        count = replay_to_kafka(args.file, config, prefix=getattr(kafka, "topic_prefix", ""), speed=args.speed,
                               keep_timestamps=args.keep_timestamps)
        print(f"produced {count} messages")
        return 0
    from pipelines.replay.inprocess import replay

    out = replay(args.file)
    summary = {"breaches": dict(Counter(b.kind.value for b in out.breaches if not b.cleared)),
               "actions": dict(Counter(a["action_type"] for a in out.actions))}
    print(json.dumps(summary, sort_keys=True) if args.json else
          f"breaches {summary['breaches']}\nactions {summary['actions']}")
    return 0
