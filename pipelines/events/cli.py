"""``backstop schemas check|lock|list``: the event schemas from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.events.evolution import MODES, check_tree
from pipelines.events.registry import MANIFEST_NAME, EmbeddedRegistry, lock
from pipelines.events.schemas import SCHEMAS_DIR, SchemaSet


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("schemas", help="event schemas: compatibility check, ids, listing")
    sub = parser.add_subparsers(dest="schemas_command", metavar="SUBCOMMAND")
    sub.required = True

    def dir_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--dir", default=str(SCHEMAS_DIR), help="schemas folder (default: the project's schemas/)")

    check = sub.add_parser("check", help="check conventions and compatibility with the committed version")
    dir_arg(check)
    check.add_argument("--mode", default="BACKWARD", type=str.upper, choices=MODES,
                       help="compatibility mode (default BACKWARD: new schemas read old data)")
    check.add_argument("--against", default="HEAD", metavar="REV", help="git revision to compare with (default HEAD)")
    check.add_argument("--allow-unlocked", action="store_true",
                       help="do not fail on schemas that have no id in the manifest yet")
    check.set_defaults(func=_check)

    lock_p = sub.add_parser("lock", help=f"give changed or new schemas the next ids in {MANIFEST_NAME}")
    dir_arg(lock_p)
    lock_p.set_defaults(func=_lock)

    list_p = sub.add_parser("list", help="list records, their key field, current id and fingerprint")
    dir_arg(list_p)
    list_p.set_defaults(func=_list)


def _check(args: argparse.Namespace) -> int:
    report = check_tree(Path(args.dir), args.mode, args.against, require_locked=not args.allow_unlocked)
    for problem in report.problems:
        print(f"FAIL {problem}")
    new = f", {len(report.new)} new ({', '.join(report.new)})" if report.new else ""
    status = "ok" if report.ok else f"{len(report.problems)} problem(s)"
    print(f"schemas check ({args.mode} vs {args.against}): {len(report.checked)} schemas{new}: {status}")
    return 0 if report.ok else 1


def _lock(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    added = lock(SchemaSet.load(directory), directory / MANIFEST_NAME)
    for entry in added:
        print(f"{entry.record} version {entry.version} -> id {entry.schema_id}")
    if not added:
        print("every schema already has an id")
    return 0


def _list(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    schemas = SchemaSet.load(directory)
    registry = EmbeddedRegistry(schemas, directory / MANIFEST_NAME)
    unlocked = set(registry.unlocked())
    for schema in schemas:
        schema_id = "-" if schema.name in unlocked else str(registry.id_for(schema.name))
        print(f"{schema.fullname:40} key={schema.key_field:11} id={schema_id:4} {schema.fingerprint[:16]}")
    return 0
