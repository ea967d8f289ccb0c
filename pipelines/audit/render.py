"""Readable text tables and JSON for the analysis commands."""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Sequence
from typing import Any


def iso_ms(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_time(text: str | None, *, what: str = "time") -> int | None:
    """UTC epoch ms from an ISO 8601 time (``2027-01-01T00:00:00Z``, a date) or an integer of epoch ms."""
    from pipelines.errors import UserError

    if text is None or text == "":
        return None
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        value = datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UserError(f"{what} {text!r}: expected ISO 8601 (2027-01-01T00:00:00Z) or epoch milliseconds") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    return int(value.timestamp() * 1000)


def cell(value: Any) -> str:
    """Text of a table cell: floats of 1,000 and more with thousands separators and cents
    (notionals: ``1,249,230.12``, never ``1.24923e+06``), smaller ones to 6 significant digits."""
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if math.isfinite(value) and abs(value) >= 1000:
            return f"{value:,.2f}"
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ",".join(cell(v) for v in value)
    return str(value)


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], *, max_width: int = 60) -> str:
    """A plain text table with a header rule; long cells are cut with an ellipsis."""
    texts = [[cell(v) for v in row] for row in rows]
    texts = [[t if len(t) <= max_width else t[: max_width - 1] + "…" for t in row] for row in texts]
    widths = [len(c) for c in columns]
    for row in texts:
        for i, t in enumerate(row):
            widths[i] = max(widths[i], len(t))
    numeric = [all(_is_number(row[i]) for row in rows if row[i] is not None) and bool(rows)
               for i in range(len(columns))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [line(list(columns)), "  ".join("-" * w for w in widths)]
    out.extend(line(row) for row in texts)
    return "\n".join(out)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def to_json(value: Any) -> str:
    return json.dumps(value, default=_default, indent=2, allow_nan=False) + "\n"


def _default(value: Any) -> Any:
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    return str(value)


def json_safe(value: Any) -> Any:
    """NaN/inf floats -> None, recursively (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
