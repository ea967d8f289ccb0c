"""``backstop scenarios list`` / ``backstop scenarios record NAME --out FILE``."""

from __future__ import annotations

import argparse
import json

from pipelines import arguments
from pipelines.scenarios import library
from pipelines.scenarios.generate import generate, write_recording


def register(subparsers: argparse._SubParsersAction) -> None:
    scenarios = subparsers.add_parser("scenarios", help="the named crash scenarios")
    sub = scenarios.add_subparsers(dest="scenarios_command", metavar="ACTION")
    sub.required = True
    show = sub.add_parser("list", help="list the named scenarios with their incident and failure mode")
    show.add_argument("--json", action="store_true", help="machine-readable JSON")
    show.set_defaults(func=run_list)
    record = sub.add_parser("record", help="write a scenario's events as a replay file (Avro container)")
    record.add_argument("name", choices=library.names(), help="scenario name (backstop scenarios list)")
    record.add_argument("--seed", type=arguments.seed, help="random seed (default: the scenario's own)")
    record.add_argument("--out", required=True, metavar="FILE", type=arguments.output_file,
                        help="replay file to write (Avro container)")
    record.set_defaults(func=run_record)


def run_list(args: argparse.Namespace) -> int:
    rows = [{"name": s.name, "title": s.title, "incident": s.incident, "failure_mode": s.failure_mode,
             "duration_s": s.duration_s, "underlyings": [u.underlying for u in s.underlyings], "seed": s.seed}
            for s in library.SCENARIOS]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        print(f"{r['name']:<{width}}  {r['title']}")
        print(f"{'':<{width}}  failure mode: {r['failure_mode']}")
    return 0


def run_record(args: argparse.Namespace) -> int:
    generated = generate(library.get(args.name), args.seed)
    count = write_recording(generated, args.out)
    print(f"wrote {count} records of {args.name} (seed {generated.seed}) to {args.out}")
    return 0
