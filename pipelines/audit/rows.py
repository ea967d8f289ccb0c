"""The sink's core, without Kafka: decoded records and their coordinates -> columnar batches.

``Batch.add(record, value, coords)`` turns one decoded record (the codec's dict) into one row of
its audit table; ``Batch.add_undecodable`` turns a message the codec rejected into a
``dead_letters`` row at its own coordinates, so every message consumed becomes exactly one row.
``Batch.blocks()`` yields ``(table, {column: values}, dedup_token)`` for columnar inserts; the
token is a hash of the table and the exact coordinates, so a retried block is recognisably the
same block on servers that deduplicate inserts by token.

Absent values: floats NaN, strings '', integers -1 (offsets) or 0 (times).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
import time
from collections.abc import Iterator, Mapping
from typing import Any

from pipelines.engine.wire import record_target
from pipelines.risk.instruments import underlying_of

NAN = float("nan")
MARGIN_KINDS = frozenset({"margin_shortfall", "equity_below_liquidation"})

TABLE_OF_RECORD = {
    "Breach": "breaches",
    "Action": "actions",
    "ExecutionReport": "executions",
    "DeadLetter": "dead_letters",
    "ExposureSnapshot": "exposures",
}
INPUT_RECORDS = frozenset({"InstrumentDefinition", "IndexPrice", "MarkPrice", "VolatilityUpdate", "OrderBookDepth",
                           "OraclePrice", "PositionUpdate", "CollateralUpdate"})

COLUMNS: dict[str, tuple[str, ...]] = {
    "inputs": ("event_date", "event_time_ms", "record", "account", "underlying", "instrument", "price", "index_price",
               "iv", "quantity", "sequence", "payload"),
    "breaches": ("event_date", "event_time_ms", "account", "breach_id", "kind", "severity", "underlying", "instrument",
                 "observed", "threshold", "margin_ratio", "window_start_ms", "window_end_ms", "trigger_topics",
                 "trigger_partitions", "trigger_offsets", "trigger_event_ids", "detail_keys", "detail_values"),
    "actions": ("event_date", "event_time_ms", "account", "action_id", "action_type", "instrument", "side", "quantity",
                "limit_price", "breach_ids", "param_keys", "param_values", "expires_at_ms", "signing_key_id",
                "signature_hex"),
    "executions": ("event_date", "event_time_ms", "account", "execution_id", "action_id", "status", "venue",
                   "instrument", "side", "filled_quantity", "avg_price", "fee", "fee_currency", "slippage_bps",
                   "counterparty", "reason"),
    "dead_letters": ("event_date", "event_time_ms", "reason", "detail", "source_topic", "source_partition",
                     "source_offset", "message_timestamp_ms", "schema_id", "record", "consumer", "original_key",
                     "original_value_hex"),
    "exposures": ("event_date", "event_time_ms", "account", "equity_usd", "maintenance_margin_usd",
                  "initial_margin_usd", "margin_ratio", "state"),
}
KAFKA = ("kafka_topic", "kafka_partition", "kafka_offset", "kafka_timestamp_ms", "ingest_version")


@dataclasses.dataclass(frozen=True, slots=True)
class Coordinates:
    """Where a message sits on Kafka."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int = 0


EPOCH = datetime.date(1970, 1, 1)
LAST_DATE = datetime.date(2149, 6, 6)  # ClickHouse's Date (days since 1970 in a UInt16) ends here


def event_date(ms: int) -> datetime.date:
    """The partition date of an event time, clamped to what a ClickHouse ``Date`` holds: a
    producer's clock set to year 10000 must not stop the sink (``event_time_ms`` keeps the truth)."""
    days = ms // 86_400_000
    if days <= 0:
        return EPOCH
    if days >= (LAST_DATE - EPOCH).days:
        return LAST_DATE
    return EPOCH + datetime.timedelta(days=days)


def _f(value: Any) -> float:
    return NAN if value is None else float(value)


def _s(value: Any) -> str:
    return "" if value is None else str(value)


def _underlying_of(instrument: str | None) -> str:
    return underlying_of(instrument) if instrument else ""


def _input_row(record: str, v: Mapping[str, Any]) -> tuple:
    account = _s(v.get("account"))
    instrument = _s(v.get("instrument"))
    underlying = _s(v.get("underlying")) or _underlying_of(instrument)
    price = index_price = iv = quantity = NAN
    sequence = int(v.get("sequence") or 0)
    if record == "IndexPrice":
        price = index_price = _f(v["price"])
    elif record == "MarkPrice":
        price, index_price, iv = _f(v["mark_price"]), _f(v.get("index_price")), _f(v.get("mark_iv"))
    elif record == "OraclePrice":
        price = _f(v["price"])
    elif record == "VolatilityUpdate":
        iv = _f(v.get("iv"))
    elif record == "PositionUpdate":
        price, quantity = _f(v["average_price"]), _f(v["quantity"])
    elif record == "CollateralUpdate":
        quantity, underlying = _f(v["amount"]), _s(v.get("asset"))
    elif record == "OrderBookDepth":
        bids, asks = v.get("bids") or [], v.get("asks") or []
        if bids and asks:
            price = (bids[0]["price"] + asks[0]["price"]) / 2
    elif record == "InstrumentDefinition":
        price = _f(v.get("strike"))
    payload = json.dumps(v, default=_json_default, separators=(",", ":"), sort_keys=True)
    ms = int(v["event_time_ms"])
    return (event_date(ms), ms, record, account, underlying, instrument, price, index_price, iv, quantity, sequence,
            payload)


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    return str(value)


def _margin_ratio(v: Mapping[str, Any]) -> float:
    details = v.get("details") or {}
    for key in ("margin_ratio", "margin_ratio_after"):
        if key in details:
            try:
                return float(details[key])
            except ValueError:
                pass
    return float(v["observed"]) if v.get("kind") in MARGIN_KINDS else NAN


def _breach_row(v: Mapping[str, Any]) -> tuple:
    ms = int(v["event_time_ms"])
    triggers = v.get("triggers") or []
    details = v.get("details") or {}
    keys = sorted(details)
    return (event_date(ms), ms, v["account"], v["breach_id"], v["kind"], _s(v.get("severity")), _s(v.get("underlying")),
            _s(v.get("instrument")), float(v["observed"]), float(v["threshold"]), _margin_ratio(v),
            int(v["window_start_ms"]), int(v["window_end_ms"]),
            [t["topic"] for t in triggers], [int(t["partition"]) for t in triggers],
            [int(t["offset"]) for t in triggers], [_s(t.get("event_id")) for t in triggers],
            keys, [str(details[k]) for k in keys])


def _action_row(v: Mapping[str, Any]) -> tuple:
    """An action's row; ``account`` is its target, the underlying of a halt or resume."""
    ms = int(v["event_time_ms"])
    params = v.get("params") or {}
    keys = sorted(params)
    signature = v.get("signature") or b""
    return (event_date(ms), ms, record_target(v), v["action_id"], v["action_type"], _s(v.get("instrument")),
            _s(v.get("side")), float(v.get("quantity") or 0.0), _f(v.get("limit_price")),
            list(v.get("breach_ids") or []), keys, [str(params[k]) for k in keys], int(v.get("expires_at_ms") or 0),
            _s(v.get("signing_key_id")),
            signature.hex() if isinstance(signature, (bytes, bytearray)) else _s(signature))


def _execution_row(v: Mapping[str, Any]) -> tuple:
    ms = int(v["event_time_ms"])
    return (event_date(ms), ms, v["account"], v["execution_id"], v["action_id"], v["status"], v["venue"],
            _s(v.get("instrument")), _s(v.get("side")), float(v.get("filled_quantity") or 0.0), _f(v.get("avg_price")),
            float(v.get("fee") or 0.0), _s(v.get("fee_currency")), _f(v.get("slippage_bps")), _s(v.get("counterparty")),
            _s(v.get("reason")))


def _dead_letter_row(v: Mapping[str, Any]) -> tuple:
    ms = int(v["event_time_ms"])
    key = v.get("original_key")
    value = v.get("original_value")
    return (event_date(ms), ms, v["reason"], _s(v.get("detail")), v["topic"], int(v["partition"]), int(v["offset"]),
            int(v.get("message_timestamp_ms") or 0), -1 if v.get("schema_id") is None else int(v["schema_id"]),
            _s(v.get("record")), _s(v.get("consumer")),
            key.decode("utf-8", "backslashreplace") if isinstance(key, (bytes, bytearray)) else _s(key),
            value.hex() if isinstance(value, (bytes, bytearray)) else "")


def _exposure_row(v: Mapping[str, Any]) -> tuple:
    ms = int(v["event_time_ms"])
    return (event_date(ms), ms, v["account"], float(v["equity_usd"]), float(v["maintenance_margin_usd"]),
            float(v["initial_margin_usd"]), float(v["margin_ratio"]), v["state"])


def row_for(record: str, value: Mapping[str, Any]) -> tuple[str, tuple]:
    """(table, row without the Kafka columns) for one decoded record."""
    if record == "Breach":
        return "breaches", _breach_row(value)
    if record == "Action":
        return "actions", _action_row(value)
    if record == "ExecutionReport":
        return "executions", _execution_row(value)
    if record == "DeadLetter":
        return "dead_letters", _dead_letter_row(value)
    if record == "ExposureSnapshot":
        return "exposures", _exposure_row(value)
    if record in INPUT_RECORDS:
        return "inputs", _input_row(record, value)
    raise ValueError(f"the audit sink does not store {record} records")


@dataclasses.dataclass
class _Pending:
    table: str
    row: tuple
    coords: Coordinates


class Batch:
    """Rows waiting for their insert, with the offsets they cover."""

    def __init__(self, consumer_name: str = "audit-sink") -> None:
        self.consumer_name = consumer_name
        self._rows: list[_Pending] = []
        self.done_tables: set[str] = set()
        self.ingest_version: int | None = None
        self.created = time.monotonic()

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, record: str, value: Mapping[str, Any], coords: Coordinates) -> str:
        """Add a decoded record; returns its table. Records the sink does not store become dead letters."""
        try:
            table, row = row_for(record, value)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            return self.add_undecodable("processing_error", f"{record}: {exc.__class__.__name__}: {exc}", coords,
                                        record=record)
        self._rows.append(_Pending(table, row, coords))
        return table

    def add_undecodable(self, reason: str, detail: str, coords: Coordinates, *, key: bytes | None = None,
                        value: bytes | None = None, schema_id: int | None = None, record: str | None = None) -> str:
        """A message that could not be decoded: a dead_letters row at the message's own coordinates."""
        ms = coords.timestamp_ms  # deterministic, so a redelivered copy has the same key (0 if Kafka has none)
        letter = {"reason": reason, "detail": detail[:2000], "topic": coords.topic, "partition": coords.partition,
                  "offset": coords.offset, "message_timestamp_ms": coords.timestamp_ms or None, "original_key": key,
                  "original_value": value, "schema_id": schema_id, "record": record, "consumer": self.consumer_name,
                  "event_time_ms": ms}
        self._rows.append(_Pending("dead_letters", _dead_letter_row(letter), coords))
        return "dead_letters"

    def offsets(self) -> dict[tuple[str, int], int]:
        """Highest offset per (topic, partition) in the batch: commit offset + 1 after the insert."""
        result: dict[tuple[str, int], int] = {}
        for pending in self._rows:
            key = (pending.coords.topic, pending.coords.partition)
            if pending.coords.offset > result.get(key, -1):
                result[key] = pending.coords.offset
        return result

    def drop_partitions(self, partitions: set[tuple[str, int]]) -> int:
        """Forget rows of revoked partitions (they were not committed, so their new owner re-reads them)."""
        before = len(self._rows)
        self._rows = [p for p in self._rows if (p.coords.topic, p.coords.partition) not in partitions]
        return before - len(self._rows)

    def blocks(self) -> Iterator[tuple[str, dict[str, list[Any]], str]]:
        """(table, columns, dedup_token) per table not yet inserted; the ingest version is fixed on first call."""
        if self.ingest_version is None:
            self.ingest_version = time.time_ns()
        by_table: dict[str, list[_Pending]] = {}
        for pending in self._rows:
            by_table.setdefault(pending.table, []).append(pending)
        for table, pendings in by_table.items():
            if table in self.done_tables:
                continue
            names = COLUMNS[table]
            columns: dict[str, list[Any]] = {name: [p.row[i] for p in pendings] for i, name in enumerate(names)}
            columns["kafka_topic"] = [p.coords.topic for p in pendings]
            columns["kafka_partition"] = [p.coords.partition for p in pendings]
            columns["kafka_offset"] = [p.coords.offset for p in pendings]
            columns["kafka_timestamp_ms"] = [p.coords.timestamp_ms for p in pendings]
            columns["ingest_version"] = [self.ingest_version] * len(pendings)
            digest = hashlib.sha256(table.encode())
            for p in pendings:
                digest.update(f"{p.coords.topic}\0{p.coords.partition}\0{p.coords.offset}\n".encode())
            yield table, columns, f"{table}-{digest.hexdigest()[:32]}"


def nan_to_none(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value
