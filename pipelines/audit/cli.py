"""Sub-commands: ``audit migrate``, ``audit query``, ``audit-sink``, ``incident timeline|summary|plot``.

Every command reads the store from ``--clickhouse URL`` (a server) or ``--store PATH`` (the
embedded chdb store), else from settings (``[clickhouse] url``, else ``[clickhouse] store``).
The read-only commands (``audit query``, ``incident ...``) refuse an embedded store folder that
does not exist instead of creating it, and ``incident plot`` writes only into existing folders.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading
from pathlib import Path

from pipelines import arguments
from pipelines.audit import migrations, render
from pipelines.audit.store import Store, StoreError, open_store
from pipelines.config import load_settings
from pipelines.errors import UserError
from pipelines.ops import shell


def _store_args(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--clickhouse", metavar="URL",
                       help="ClickHouse server, clickhouse://user:password@host:port/database (default: settings)")
    where.add_argument("--store", metavar="PATH", type=arguments.store_folder,
                       help="embedded chdb store folder (default: settings clickhouse.store)")
    parser.add_argument("--database", help="database name (default: from the URL, else settings clickhouse.database)")


def _json_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable JSON instead of text tables")


def register(subparsers: argparse._SubParsersAction) -> None:
    """``backstop audit``, ``backstop audit-sink`` and ``backstop incident``."""
    _register_audit(subparsers)
    _register_sink(subparsers)
    _register_incident(subparsers)


def _register_audit(subparsers: argparse._SubParsersAction) -> None:
    audit = subparsers.add_parser("audit", help="audit store: schema migrations and read-only queries")
    sub = audit.add_subparsers(dest="audit_command", metavar="ACTION")
    sub.required = True

    migrate = sub.add_parser("migrate", help="apply the versioned audit DDL (idempotent)")
    _store_args(migrate)
    migrate.add_argument("--cluster", metavar="NAME",
                         help="ClickHouse cluster: ON CLUSTER DDL, ReplicatedReplacingMergeTree + Distributed tables")
    migrate.add_argument("--print", action="store_true", dest="print_only",
                         help="print the DDL instead of applying it (no connection needed)")
    migrate.add_argument("--server-version", default="26.1",
                         help="with --print: render for this ClickHouse version (TTL from 19.6; default %(default)s)")
    migrate.add_argument("--inputs-ttl-days", type=arguments.non_negative_int, default=180,
                         help="TTL of inputs and dead letters (0: none)")
    migrate.add_argument("--audit-ttl-days", type=arguments.non_negative_int, default=3650,
                         help="TTL of breaches, actions and executions (0: none)")
    migrate.set_defaults(func=run_migrate)

    query = sub.add_parser("query", help="run one read-only SQL statement (parameters: %%(name)s with --param)")
    _store_args(query)
    query.add_argument("sql",
                       help="SELECT/WITH/SHOW/DESCRIBE/EXISTS/EXPLAIN statement; tables are in the audit database")
    query.add_argument("--param", "-p", action="append", default=[], metavar="NAME=VALUE",
                       help="a parameter for %%(NAME)s; integers and decimals are passed as numbers")
    query.add_argument("--string-params", action="store_true", help="pass every --param as a string")
    _json_arg(query)
    query.set_defaults(func=run_query)


def _register_sink(subparsers: argparse._SubParsersAction) -> None:
    sink = subparsers.add_parser("audit-sink", help="consume the audit topics into the audit store")
    _store_args(sink)
    sink.add_argument("--bootstrap", help="broker address (default: settings kafka.bootstrap)")
    sink.add_argument("--group", default="backstop-audit-sink", help="consumer group (default %(default)s)")
    sink.add_argument("--topics", help="comma-separated topics (default: the catalogue's input, breach, action, "
                                       "execution and dead-letter topics)")
    sink.add_argument("--batch-rows", type=arguments.positive_int, default=5000,
                      help="rows per insert (default %(default)s)")
    sink.add_argument("--linger-ms", type=arguments.non_negative_int, default=500,
                      help="longest wait before inserting a partial batch")
    sink.add_argument("--idle-exit", type=arguments.positive_float, metavar="SECONDS",
                      help="stop after this long without messages (counted once the sink has joined its group)")
    sink.add_argument("--no-migrate", action="store_true", help="do not apply missing migrations at start")
    shell.add_arguments(sink)
    sink.set_defaults(func=run_sink)


def _register_incident(subparsers: argparse._SubParsersAction) -> None:
    incident = subparsers.add_parser("incident", help="post-incident analysis from the audit store")
    isub = incident.add_subparsers(dest="incident_command", metavar="ACTION")
    isub.required = True
    timeline = isub.add_parser("timeline", help="one account's ordered story: inputs, breaches, actions, fills")
    _store_args(timeline)
    timeline.add_argument("--account", required=True, help="account id, as in the breaches and actions")
    timeline.add_argument("--from", dest="start", help="ISO 8601 UTC time or epoch ms (inclusive)")
    timeline.add_argument("--to", dest="end", help="ISO 8601 UTC time or epoch ms (inclusive)")
    timeline.add_argument("--no-market", action="store_true", help="leave out market inputs")
    timeline.add_argument("--all-ticks", action="store_true",
                          help="text output: every market tick, not one summary line per price series (JSON has all)")
    _json_arg(timeline)
    timeline.set_defaults(func=run_timeline)

    summary = isub.add_parser("summary", help="what fired, latencies, losses, LP / insurance fund / ADL usage")
    _store_args(summary)
    summary.add_argument("--from", dest="start", required=True, help="ISO 8601 UTC time or epoch ms")
    summary.add_argument("--to", dest="end", required=True, help="ISO 8601 UTC time or epoch ms")
    _json_arg(summary)
    summary.set_defaults(func=run_summary)

    plot = isub.add_parser("plot", help="PNG (and HTML) of price, margin ratio and actions for an account")
    _store_args(plot)
    plot.add_argument("--account", required=True, help="account id, as in the breaches and actions")
    plot.add_argument("--from", dest="start", help="ISO 8601 UTC time or epoch ms (inclusive)")
    plot.add_argument("--to", dest="end", help="ISO 8601 UTC time or epoch ms (inclusive)")
    plot.add_argument("--out", required=True, type=arguments.output_file,
                      help="PNG file to write (its folder must exist)")
    plot.add_argument("--html", type=arguments.output_file,
                      help="also write an HTML page (PNG embedded, plus the event table)")
    plot.set_defaults(func=run_plot)


# ---------------------------------------------------------------------- helpers

#: epoch-ms columns of the summary, and their names once shown as ISO times
TIME_COLUMNS = {"first_ms": "first", "last_ms": "last"}


def _open(args: argparse.Namespace, read_only: bool = False) -> Store:
    """The store the flags or settings name; ``read_only``: an embedded store must already exist."""
    settings = load_settings(getattr(args, "config", None)).clickhouse
    embedded = args.store or (None if args.clickhouse or settings.url else settings.store)
    if read_only and embedded and not Path(embedded).is_dir():
        raise UserError(f"no audit store at {embedded} (give --store PATH of one, such as the folder backstop demo "
                        "printed)")
    return open_store(url=args.clickhouse, store_path=args.store, settings=settings, database=args.database)


def _range(args: argparse.Namespace) -> tuple[int | None, int | None]:
    start = render.parse_time(args.start, what="--from")
    end = render.parse_time(args.end, what="--to")
    if start is not None and end is not None and end < start:
        raise UserError("--to is before --from")
    return start, end


def _guard(fn):
    """Store errors are the user's to fix (server down, no migration, bad SQL): one line, no traceback."""
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except StoreError as exc:
            raise UserError(str(exc)) from None
    wrapper.__name__ = fn.__name__
    return wrapper


def _param(text: str, as_string: bool) -> tuple[str, object]:
    if "=" not in text:
        raise UserError(f"--param {text!r}: expected NAME=VALUE")
    name, value = text.split("=", 1)
    if not name.isidentifier():
        raise UserError(f"--param {text!r}: invalid name")
    if not as_string:
        for kind in (int, float):
            try:
                return name, kind(value)
            except ValueError:
                pass
    return name, value


# ---------------------------------------------------------------------- commands


@_guard
def run_migrate(args: argparse.Namespace) -> int:
    retention = {"inputs_ttl_days": args.inputs_ttl_days, "audit_ttl_days": args.audit_ttl_days}
    if args.print_only:
        from pipelines.audit.store import check_identifier, parse_version

        settings = load_settings(args.config).clickhouse
        version = parse_version(args.server_version)
        database = check_identifier(args.database or settings.database, "database name")
        if args.cluster:
            check_identifier(args.cluster, "cluster name")
        target = migrations.Target(database, args.cluster, ttl=version >= (19, 6, 0),
                                   dedup_window=version >= (21, 5, 0), **retention)
        sys.stdout.write(migrations.render(target))
        return 0
    with _open(args) as store:
        applied = migrations.migrate(store, args.cluster, **retention)
        where = getattr(store, "address", None) or getattr(store, "path", "")
        version = ".".join(map(str, store.version()))
        if applied:
            for number, name in applied:
                print(f"applied {number:03d} {name}")
        print(f"{store.kind} {where} (ClickHouse {version}) database {store.database}: "
              f"schema at version {migrations.latest_version()}"
              + ("" if store.supports_ttl else " (no TTL: the server predates 19.6)"))
    return 0


@_guard
def run_query(args: argparse.Namespace) -> int:
    params = dict(_param(p, args.string_params) for p in args.param)
    from pipelines.audit.store import check_read_only

    check_read_only(args.sql)
    with _open(args, read_only=True) as store:
        result = store.query(args.sql, params or None, readonly=True)
    if args.json:
        sys.stdout.write(render.to_json(render.json_safe({"columns": result.columns, "types": result.types,
                                                          "rows": [list(r) for r in result.rows]})))
    else:
        print(render.table(result.columns, result.rows))
        print(f"({len(result.rows)} row{'s' if len(result.rows) != 1 else ''})")
    return 0


@_guard
def run_timeline(args: argparse.Namespace) -> int:
    from pipelines.audit import timeline

    start, end = _range(args)
    with _open(args, read_only=True) as store:
        entries = timeline.timeline(store, args.account, start, end, include_market=not args.no_market)
    if args.json:
        sys.stdout.write(render.to_json(render.json_safe({"account": args.account, "from_ms": start, "to_ms": end,
                                                          "entries": [e.as_dict() for e in entries]})))
        return 0
    if not entries:
        print(f"nothing recorded for account {args.account} in that range")
        return 0
    shown = entries if args.all_ticks else timeline.condense(entries)
    print(render.table(timeline.COLUMNS, timeline.rows(shown)))
    if len(shown) < len(entries):
        print("(market ticks summarised, one line per series: --all-ticks lists every one)")
    return 0


@_guard
def run_summary(args: argparse.Namespace) -> int:
    from pipelines.audit import summary

    start, end = _range(args)
    with _open(args, read_only=True) as store:
        result = summary.summary(store, start, end)
    if args.json:
        sys.stdout.write(render.to_json(render.json_safe(result)))
        return 0
    print(f"incident summary {render.iso_ms(start)} .. {render.iso_ms(end)}")
    for section in ("breaches", "actions", "executions"):
        _section(section, result[section])
    columns, rows = summary.latency_rows(result["latency_ms"])
    print("\nlatency (ms)")
    print(render.table(columns, rows))
    _section("losses", result["losses"])
    _section("liquidity (lp, insurance fund, adl)", result["liquidity"])
    adl = result["adl_actions"]
    print(f"\nauto-deleverage actions: {adl['count']} ({adl['accounts']} accounts)")
    _section("dead letters", result["dead_letters"])
    return 0


def _section(title: str, rows: list[dict]) -> None:
    """A summary section as a table; its epoch-ms time columns as ISO times, like the timeline."""
    print(f"\n{title}")
    if not rows:
        print("(none)")
        return
    columns = list(rows[0])
    print(render.table([TIME_COLUMNS.get(c, c) for c in columns],
                       [[render.iso_ms(r[c]) if c in TIME_COLUMNS else r[c] for c in columns] for r in rows]))


@_guard
def run_plot(args: argparse.Namespace) -> int:
    from pipelines.audit import plot, timeline

    start, end = _range(args)
    with _open(args, read_only=True) as store:
        entries = timeline.timeline(store, args.account, start, end)
        snapshots = plot.exposures(store, args.account, start, end)
    png = plot.plot_png(entries, args.account, Path(args.out), snapshots)
    print(f"wrote {png}")
    if args.html:
        print(f"wrote {plot.write_html(entries, args.account, png, Path(args.html))}")
    return 0


@_guard
def run_sink(args: argparse.Namespace) -> int:
    from pipelines.audit.sink import make_sink
    from pipelines.ops.metrics import Metrics

    settings = load_settings(args.config)
    ops = shell.configure(args, settings.ops)
    kafka = settings.kafka
    if args.bootstrap:
        kafka = dataclasses.replace(kafka, bootstrap=args.bootstrap)
    topics = [t.strip() for t in args.topics.split(",") if t.strip()] if args.topics else None
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with _open(args) as store:
            if not args.no_migrate:
                migrations.migrate(store)
            metrics = Metrics("audit-sink", lag_interval_s=ops.lag_interval_s)
            sink = make_sink(store, kafka, group=args.group, topics=topics, batch_rows=args.batch_rows,
                             linger_s=args.linger_ms / 1000, metrics=metrics)
            try:
                with shell.endpoint(ops, metrics, sink.ready):
                    stats = sink.run(stop, idle_exit_s=args.idle_exit)
            except KeyboardInterrupt:
                stop.set()
                stats = sink.stats
            finally:
                sink.consumer.close()
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"audit-sink: {stats.messages} messages, {stats.rows_inserted} rows in {stats.batches} batches, "
          f"{stats.insert_failures} failed inserts retried, {stats.undecodable} undecodable")
    return 0
