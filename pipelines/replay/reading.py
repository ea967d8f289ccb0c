"""A replay file's records for the replay commands, with every file problem a ``UserError``.

A missing or unreadable file, a file that is not an Avro container of ``ReplayRecord`` (a JSON
input given by mistake, an engine snapshot) and a file cut short are reported as one line naming
the file; errors raised by whoever consumes the records are not touched.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro

from pipelines.errors import UserError
from pipelines.events.files import REPLAY_RECORD, read_replay


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


def _check_header(fo: Any, path: str | Path) -> None:
    try:
        schema = fastavro.reader(fo).writer_schema
    except (EOFError, ValueError):
        raise UserError(f"replay file {path}: not an Avro replay file (write one with backstop record "
                        "or backstop scenarios record)") from None
    name = schema.get("name", "") if isinstance(schema, dict) else ""
    if name.rsplit(".", 1)[-1] != REPLAY_RECORD:
        raise UserError(f"replay file {path}: an Avro file of {name or 'another schema'}, not of {REPLAY_RECORD}")
