"""Log output of the long-running shells: readable text, or one JSON object a line.

A JSON line holds ``ts`` (ISO 8601 UTC, milliseconds), ``level``, ``logger``, ``msg`` (the
formatted message), then every field the call passed as ``extra=`` — ``action_id``,
``breach_ids``, ``account``, ``topic`` / ``partition`` / ``offset`` and so on — and ``exc``
with the traceback when there is one. The ids travel as fields rather than only in the text so
that a log store can join an execution to its action and the action to its breaches without
parsing prose. Text output shows the message alone; the messages name the ids that matter.
"""

from __future__ import annotations

import datetime
import json
import logging

from pipelines.errors import UserError

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# attributes every LogRecord has; anything else on a record came from ``extra=``
_STANDARD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update((k, v) for k, v in vars(record).items() if k not in _STANDARD_ATTRIBUTES)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure(log_format: str, level: int = logging.INFO) -> None:
    """Send the root logger to stderr in ``log_format``, replacing any handler installed before."""
    if log_format not in FORMATS:
        raise UserError(f"log format {log_format!r}: expected one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
