"""``backstop demo``: the whole system on one machine, no services.

A named crash scenario is generated (seeded), framed through the real codec, sequenced, and run
closed-loop through the engine (in-process bus), the simulated venue's liquidation waterfall and
back; every input, exposure snapshot, breach, action and execution goes into the embedded ClickHouse store (chdb)
through the audit sink's own row builder, at synthetic Kafka coordinates: the catalogue topic,
Kafka's partition for the record's key, and the record's position in its topic-partition within
this run as the offset. The same scenario also runs without the backstop for comparison.

The store keeps its rows without TTL: the scenarios are dated on their incidents' (past) dates, which
the audit tables' retention would otherwise expire. The printed follow-up commands run as printed
from the current directory, with the ``backstop`` of this installation.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pipelines import arguments
from pipelines.audit.migrations import AUDIT_TABLES, migrate
from pipelines.audit.render import iso_ms
from pipelines.audit.rows import Batch, Coordinates
from pipelines.audit.store import EmbeddedStore
from pipelines.backtest.run import engine_params, simulate
from pipelines.engine.shards import partition_for
from pipelines.engine.wire import action_key, action_record, breach_key, breach_record
from pipelines.errors import UserError
from pipelines.scenarios import library
from pipelines.scenarios.generate import KEY_FIELD, TOPIC_OF, generate
from pipelines.topics import spec_for

OUTPUT_TOPIC = {"exposure": "backstop.exposures", "breach": "backstop.breaches", "action": "backstop.actions",
                "execution": "backstop.executions"}
RECORD_OF = {"exposure": "ExposureSnapshot", "breach": "Breach", "action": "Action", "execution": "ExecutionReport"}


def _output_record(kind: str, value: Any) -> tuple[dict[str, Any], str]:
    """The datum and Kafka key of an output: a ``Breach``, an ``Action`` or an execution report."""
    if kind == "breach":
        return breach_record(value), breach_key(value)
    if kind == "action":
        return action_record(value), action_key(value)
    return value, value["account"]


class AuditCollector:
    """Rows for the audit store at synthetic coordinates (topic, Kafka partition of the key, offset
    = position in that topic-partition during the run)."""

    def __init__(self) -> None:
        self.batch = Batch("demo")
        self.offsets: dict[tuple[str, int], int] = {}
        self.rows = 0
        self.first_ms: int | None = None  # event-time range of everything collected
        self.last_ms: int | None = None

    def _coords(self, topic: str, key: str, t: int) -> Coordinates:
        self.first_ms = t if self.first_ms is None else min(self.first_ms, t)
        self.last_ms = t if self.last_ms is None else max(self.last_ms, t)
        partition = partition_for(key, spec_for(topic).partitions)
        offset = self.offsets.get((topic, partition), 0)
        self.offsets[(topic, partition)] = offset + 1
        return Coordinates(topic, partition, offset, t)

    def __call__(self, kind: str, value: Any) -> None:
        if kind == "input":
            record, datum = value
            topic = TOPIC_OF[record]
            self.batch.add(record, datum, self._coords(topic, str(datum[KEY_FIELD[record]]), datum["event_time_ms"]))
        else:
            datum, key = _output_record(kind, value)
            self.batch.add(RECORD_OF[kind], datum, self._coords(OUTPUT_TOPIC[kind], key, datum["event_time_ms"]))
        self.rows += 1

    def write(self, store: EmbeddedStore) -> int:
        total = 0
        for table, columns, token in self.batch.blocks():
            total += store.insert(table, columns, dedup_token=token)
        return total


def run_demo(scenario_name: str, store_path: str | Path | None = None, seed: int | None = None,
             progress: bool | None = None) -> dict[str, Any]:
    """The demo's figures (``run`` prints them); a ``store_path`` that already holds audit rows is a
    ``UserError`` raised before anything runs: one store holds one run, so its reads never mix two."""
    started = time.perf_counter()
    scenario = library.get(scenario_name)
    path = Path(store_path) if store_path else Path(tempfile.mkdtemp(prefix="backstop-demo-")) / "audit"
    store = EmbeddedStore(path)
    try:
        migrate(store, inputs_ttl_days=0, audit_ttl_days=0)
        refuse_used(store, path)
        generated = generate(scenario, seed)
        collector = AuditCollector()
        with_ = simulate(generated, with_backstop=True, params=engine_params(generated), on_output=collector,
                         progress=progress)
        without = simulate(generated, with_backstop=False, progress=progress)
        rows = collector.write(store)
    finally:
        store.close()
    liquidated = sorted(with_.liquidated_accounts)
    start, end = iso_ms(collector.first_ms), iso_ms(collector.last_ms)
    return {
        "scenario": scenario.name,
        "seed": generated.seed,
        "accounts": len(generated.accounts),
        "events": with_.events,
        "breaches": dict(sorted(with_.breaches.items())),
        "actions": dict(sorted(with_.actions.items())),
        "executions": with_.executions,
        "bad_debt_usd": round(with_.bad_debt_usd, 2),
        "bad_debt_without_backstop_usd": round(without.bad_debt_usd, 2),
        "insurance_fund_draw_usd": round(with_.fund_draw_usd, 2),
        "insurance_fund_draw_without_backstop_usd": round(without.fund_draw_usd, 2),
        "liquidated_accounts": liquidated,
        "accounts_saved": sorted(without.bankrupt_accounts - with_.bankrupt_accounts),
        "audit_rows": rows,
        "audit_store": str(path.resolve()),
        "from": start,
        "to": end,
        "commands": follow_up_commands(path.resolve(), start, end, liquidated[0] if liquidated else None),
        "seconds": round(time.perf_counter() - started, 2),
    }


def refuse_used(store: EmbeddedStore, path: Path) -> None:
    """A ``UserError`` when ``store`` already holds audit rows (an earlier demo run, a sink's rows)."""
    held = sum(store.count(table, final=False) for table in AUDIT_TABLES)
    if held:
        raise UserError(f"--store {path}: already holds {held:,d} audit rows of an earlier run; a demo writes into "
                        "a new or empty folder, so that its incident reads never mix two runs")


def backstop_command() -> str:
    """This installation's ``backstop`` as it can be typed from the current directory: ``backstop`` when
    that is the one on PATH, else its path (relative when under the current directory), else the module."""
    script = Path(sys.executable).with_name("backstop")
    if not script.exists():
        return f"{shlex.quote(sys.executable)} -m pipelines.cli"
    on_path = shutil.which("backstop")
    if on_path and Path(on_path).resolve() == script.resolve():
        return "backstop"
    if script.is_relative_to(Path.cwd()):
        return shlex.quote(str(script.relative_to(Path.cwd())))
    return shlex.quote(str(script))


def follow_up_commands(store: Path, start: str, end: str, account: str | None) -> dict[str, str]:
    """Shell commands, runnable as printed, that query the demo's audit store: the incident summary over
    the run's event-time range and, when an account was liquidated, its timeline and plot."""
    exe, where = backstop_command(), f"--store {shlex.quote(str(store))}"
    commands = {"summary": f"{exe} incident summary {where} --from {start} --to {end}"}
    if account is not None:
        commands["timeline"] = f"{exe} incident timeline {where} --account {shlex.quote(account)}"
        commands["plot"] = f"{exe} incident plot {where} --account {shlex.quote(account)} --out incident.png"
    return commands


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser("demo", help="run the whole system in-process on a crash scenario (no services)")
    demo.add_argument("--scenario", default=library.DEFAULT, choices=library.names(),
                      help="named scenario (default %(default)s; `backstop scenarios list`)")
    demo.add_argument("--seed", type=arguments.seed, help="random seed (default: the scenario's own)")
    demo.add_argument("--store", metavar="PATH", type=arguments.store_folder,
                      help="embedded audit store folder, new or without audit rows (default: a new temporary folder)")
    demo.add_argument("--json", action="store_true", help="print one JSON object")
    demo.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    summary = run_demo(args.scenario, args.store, args.seed, progress=None if not args.json else False)
    if args.json:
        print(json.dumps(summary, sort_keys=True))
        return 0
    print(f"scenario        {summary['scenario']} (seed {summary['seed']}, {summary['accounts']} accounts)")
    print(f"events          {summary['events']}")
    print(f"breaches fired  {_counts(summary['breaches'])}")
    print(f"actions         {_counts(summary['actions'])}")
    print(f"executions      {summary['executions']}")
    print(f"bad debt        ${summary['bad_debt_usd']:,.2f} with the backstop, "
          f"${summary['bad_debt_without_backstop_usd']:,.2f} without")
    print(f"insurance fund  ${summary['insurance_fund_draw_usd']:,.2f} drawn with, "
          f"${summary['insurance_fund_draw_without_backstop_usd']:,.2f} without")
    print(f"liquidated      {len(summary['liquidated_accounts'])} accounts; saved from bankruptcy: "
          f"{len(summary['accounts_saved'])}")
    print(f"audit store     {summary['audit_store']} ({summary['audit_rows']} rows)")
    print(f"incident        {summary['from']} .. {summary['to']} (event time, UTC)")
    for name, command in summary["commands"].items():
        print(f"{name:<16}{command}")
    return 0


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"
