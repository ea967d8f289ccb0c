"""A replay file's records for the replay commands, with every file problem a ``UserError``.

A missing or unreadable file, a file that is not an Avro container of ``ReplayRecord`` (a JSON
input given by mistake, an engine snapshot) and a file cut short are reported as one line naming
the file; errors raised by whoever consumes the records are not touched.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro

from pipelines.errors import UserError
from pipelines.events.files import REPLAY_RECORD, read_replay
from pipelines.scenarios.generate import SCENARIO_META


def replay_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """The ``ReplayRecord`` dicts of ``path``, in order (``read_replay``), checked as they are read."""
    try:
        fo = open(path, "rb")
    except OSError as exc:
        raise UserError(f"replay file {path}: cannot read ({exc.strerror or exc})") from None
    with fo:
        _check_header(fo, path)
        fo.seek(0)
        count = 0
        try:
            for record in read_replay(fo):
                yield record
                count += 1
        except (EOFError, ValueError) as exc:
            raise UserError(f"replay file {path}: cut short or corrupt after {count} records ({exc})") from None


def recorded_scenario(path: str | Path) -> dict[str, Any] | None:
    """The header a scenario recording carries (``scenario_header``: scenario, seed, hedged_accounts),
    or None for a recording of topics or of an audit store; file problems as in ``replay_records``."""
    try:
        fo = open(path, "rb")
    except OSError as exc:
        raise UserError(f"replay file {path}: cannot read ({exc.strerror or exc})") from None
    with fo:
        raw = _check_header(fo, path).metadata.get(SCENARIO_META)
    return json.loads(raw) if raw else None


def _check_header(fo: Any, path: str | Path) -> fastavro.reader:
    """The Avro reader of ``fo`` once its schema is known to be ``ReplayRecord``."""
    try:
        reader = fastavro.reader(fo)
    except (EOFError, ValueError):
        raise UserError(f"replay file {path}: not an Avro replay file (write one with backstop record "
                        "or backstop scenarios record)") from None
    schema = reader.writer_schema
    name = schema.get("name", "") if isinstance(schema, dict) else ""
    if name.rsplit(".", 1)[-1] != REPLAY_RECORD:
        raise UserError(f"replay file {path}: an Avro file of {name or 'another schema'}, not of {REPLAY_RECORD}")
    return reader
