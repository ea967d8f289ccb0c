"""``backstop record`` (Kafka or the audit store → replay file) and ``backstop replay FILE``
(into Kafka, or in-process through the core)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines import arguments
from pipelines.audit import render
from pipelines.config import KafkaSettings, load_settings
from pipelines.engine.wire import action_record
from pipelines.errors import UserError
from pipelines.kafka import client_config
from pipelines.policy.actions import Action

if TYPE_CHECKING:
    from pipelines.detect.breach import Breach

#: how long ``record`` and ``replay --kafka`` wait for the broker's first answer
REACH_TIMEOUT_S = 5.0


def register(subparsers: argparse._SubParsersAction) -> None:
    rec = subparsers.add_parser("record", help="capture input topics (or the audit store's inputs) into a replay file")
    src = rec.add_mutually_exclusive_group()
    src.add_argument("--bootstrap", help="broker address (default: settings kafka.bootstrap)")
    src.add_argument("--store", metavar="PATH", type=arguments.store_folder,
                     help="export from this embedded audit store instead of Kafka")
    rec.add_argument("--from", dest="start", help="ISO 8601 UTC time or epoch ms (inclusive)")
    rec.add_argument("--to", dest="end", help="ISO 8601 UTC time or epoch ms (inclusive)")
    rec.add_argument("--idle", type=arguments.positive_float, default=3.0,
                     help="stop reading Kafka after this many idle seconds (default %(default)s)")
    rec.add_argument("--out", required=True, metavar="FILE", type=arguments.output_file,
                     help="replay file to write (Avro container)")
    rec.set_defaults(func=run_record)

    rep = subparsers.add_parser("replay", help="replay a recording into Kafka or in-process")
    rep.add_argument("file", help="replay file (from backstop record or backstop scenarios record)")
    mode = rep.add_mutually_exclusive_group(required=True)
    mode.add_argument("--kafka", action="store_true", help="produce into Kafka (keys, partitions, order preserved)")
    mode.add_argument("--in-process", action="store_true", help="run through the core in-process, no broker")
    rep.add_argument("--bootstrap", help="broker address (default: settings kafka.bootstrap)")
    rep.add_argument("--speed", type=arguments.positive_float,
                     help="x N real time by event time (default: as fast as possible)")
    rep.add_argument("--keep-timestamps", action="store_true",
                     help="with --kafka: write the recorded Kafka timestamps (default: the replay's own time, the "
                          "recorded one in a header; a broker deletes messages older than a topic's retention)")
    rep.add_argument("--venue", action="store_true",
                     help="with --in-process, on a scenario recording: closed loop through the scenario's simulated "
                          "venue with its hedged accounts, as backstop demo runs it (the demo's breaches and actions)")
    rep.add_argument("--json", action="store_true",
                     help="with --in-process: every breach and action as JSON instead of the summary tables")
    rep.set_defaults(func=run_replay)


def run_record(args: argparse.Namespace) -> int:
    start, end = render.parse_time(args.start, what="--from"), render.parse_time(args.end, what="--to")
    if args.store:
        from pipelines.audit.store import EmbeddedStore
        from pipelines.replay.record import export_store

        if not Path(args.store).is_dir():
            raise UserError(f"--store {args.store}: no audit store there")
        store = EmbeddedStore(args.store)
        try:
            count = export_store(store, args.out, start_ms=start, end_ms=end)
        finally:
            store.close()
    else:
        from pipelines.replay.record import record_kafka

        kafka = _kafka(args)
        config = client_config(kafka)
        count = record_kafka(args.out, config, prefix=kafka.topic_prefix, start_ms=start, end_ms=end, idle_s=args.idle)
    print(f"recorded {count:,d} messages to {args.out}")
    return 0


def _kafka(args: argparse.Namespace) -> KafkaSettings:
    """Settings with ``--bootstrap`` applied, once the broker has answered (a one-line error within
    ``REACH_TIMEOUT_S`` otherwise, instead of a client retrying for a minute)."""
    from pipelines.topics_cli import broker_topics

    kafka = load_settings(args.config).kafka
    if args.bootstrap:
        kafka = dataclasses.replace(kafka, bootstrap=args.bootstrap)
    broker_topics(kafka, REACH_TIMEOUT_S)
    return kafka


def run_replay(args: argparse.Namespace) -> int:
    if args.kafka:
        from pipelines.replay.kafka_replay import replay_to_kafka

        for flag, given in (("--json", args.json), ("--venue", args.venue)):
            if given:
                raise UserError(f"{flag} applies to an --in-process replay; --kafka only produces")
        kafka = _kafka(args)
        count = replay_to_kafka(args.file, client_config(kafka), prefix=kafka.topic_prefix, speed=args.speed,
                                keep_timestamps=args.keep_timestamps)
        print(f"produced {count:,d} messages")
        return 0
    from pipelines.replay.inprocess import replay, replay_with_venue

    for flag, given in (("--bootstrap", args.bootstrap), ("--speed", args.speed),
                        ("--keep-timestamps", args.keep_timestamps)):
        if given:
            raise UserError(f"{flag} applies to --kafka; an --in-process replay runs as fast as it can, no broker")
    refused: Counter[str] = Counter()
    out = replay_with_venue(args.file) if args.venue else replay(
        args.file, params=load_settings(args.config).engine.engine_params(), refused=refused)
    if refused:
        reasons = ", ".join(f"{reason} x{count:,d}" for reason, count in sorted(refused.items()))
        n = sum(refused.values())
        print(f"left out {n:,d} record{'' if n == 1 else 's'} the worker's intake refuses (its dead letters): "
              f"{reasons}", file=sys.stderr)
    if args.json:
        sys.stdout.write(render.to_json(render.json_safe({"breaches": [breach_dict(b) for b in out.breaches],
                                                          "actions": [action_record(a) for a in out.actions]})))
        return 0
    print(f"breaches ({sum(not b.cleared for b in out.breaches):,d} fired, "
          f"{sum(b.cleared for b in out.breaches):,d} cleared)")
    print(render.table(*breach_rows(out.breaches)) if out.breaches else "(none)")
    print(f"\nactions ({len(out.actions):,d})")
    print(render.table(*action_rows(out.actions)) if out.actions else "(none)")
    return 0


def breach_dict(breach: Breach) -> dict[str, Any]:
    """A core breach as JSON: its fields, its id, and ``kind`` as the kind's name."""
    return {"breach_id": breach.breach_id, **dataclasses.asdict(breach), "kind": breach.kind.value}


def breach_rows(breaches: list[Breach]) -> tuple[list[str], list[list[Any]]]:
    """Per breach kind: fired, cleared, distinct subjects (accounts or markets), first and last fired."""
    columns = ["kind", "fired", "cleared", "subjects", "first fired", "last fired"]
    rows = []
    for kind in sorted({b.kind.value for b in breaches}):
        of_kind = [b for b in breaches if b.kind.value == kind]
        fired = [b.event_time_ms for b in of_kind if not b.cleared]
        rows.append([kind, len(fired), len(of_kind) - len(fired), len({b.subject for b in of_kind}),
                     render.iso_ms(min(fired, default=None)), render.iso_ms(max(fired, default=None))])
    return columns, rows


def action_rows(actions: list[Action]) -> tuple[list[str], list[list[Any]]]:
    """Per action type: count, distinct targets (accounts or underlyings), first and last."""
    columns = ["action", "count", "targets", "first", "last"]
    rows = []
    for action_type in sorted({a.action_type.value for a in actions}):
        of_type = [a for a in actions if a.action_type.value == action_type]
        times = [a.event_time_ms for a in of_type]
        rows.append([action_type, len(of_type), len({a.target for a in of_type}),
                     render.iso_ms(min(times)), render.iso_ms(max(times))])
    return columns, rows
