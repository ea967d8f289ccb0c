"""Snapshots of an engine's state as explicit, versioned data: Avro with a schema, never pickle.

A worker snapshots each account partition it holds alone (``PartitionSnapshot``: the partition's
accounts, ``Engine.export_accounts``) and the market side once (``MarketSnapshot``:
``Engine.market_state``), both at the same tick boundary. Either restores an engine that goes
on exactly as the one it was taken from (``Engine.restore``); ``inputs`` records how far the
shell had read each input when it was taken, so that it knows where to read on.

Stored form: ``MAGIC``, one byte of ``FORMAT``, then the zlib-compressed Avro body (schemaless,
``PARTITION_SCHEMA`` / ``MARKET_SCHEMA``). ``FORMAT`` is raised whenever the schema or the
meaning of a field changes; a snapshot of another format is refused with ``SnapshotFormatError``
and its partition is read again from the input topics, never restored on a guess.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import zlib
from typing import Any

import fastavro

from pipelines.engine.state_schema import SCHEMAS
from pipelines.events.schemas import default_schemas

MAGIC = b"BKS"
FORMAT = 1
NAMESPACE = "backstop.state"


class SnapshotFormatError(ValueError):
    """Stored bytes that are not a snapshot this version reads."""


@dataclasses.dataclass(frozen=True)
class PartitionSnapshot:
    partition: int
    partitions: int  # how many account partitions the accounts were split into
    boundary_ms: int  # the tick boundary it was taken at
    accounts: list[dict[str, Any]]  # Engine.export_accounts
    inputs: dict[str, int]  # input name -> offset of the last record the state holds


@dataclasses.dataclass(frozen=True)
class MarketSnapshot:
    boundary_ms: int
    market: dict[str, Any]  # Engine.market_state
    inputs: dict[str, int]


def _record(name: str, doc: str, *fields: tuple[str, Any, str]) -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": NAMESPACE, "doc": doc,
            "fields": [{"name": n, "type": t, "doc": d} for n, t, d in fields]}


def _optional(type_: Any) -> list[Any]:
    return ["null", type_]


ACCOUNT = _record(
    "AccountState", "Everything an engine holds for one account (Engine.export_accounts).",
    ("account", "string", "The account."),
    ("book", _record(
        "AccountBookState", "Positions and collateral; null where the account has no entry at all.",
        ("positions", _optional({"type": "array", "items": _record(
            "PositionState", "A net position.", ("instrument", "string", "Instrument name."),
            ("quantity", "double", "Signed quantity."), ("average_price", "double", "Average entry price."))}),
         "Positions, in the order first set."),
        ("collateral", _optional({"type": "array", "items": _record(
            "CollateralState", "A collateral balance.", ("asset", "string", "Asset."),
            ("amount", "double", "Amount held."))}), "Collateral, in the order first set.")),
     "Positions and collateral."),
    ("detectors", _optional("backstop.state.DetectorAccountState"), "The detectors' state of the account."),
    ("ladder", _optional("backstop.state.LadderAccountState"), "The account's escalation ladder."),
    ("attention", "boolean", "Whether the ladder or the margin detectors are watching it."),
    ("emitted", _optional(_record("EmittedState", "The last exposure snapshot sent.",
                                  ("time_ms", "long", "Its event time."), ("ratio", "double", "Its margin ratio."))),
     "The last exposure snapshot sent; null before the first."),
    ("waiting_ref", _optional("string"),
     "For an account touched while an underlying it holds had no index price: the event that touched it."))

INPUT = _record("InputOffset", "How far an input was read.", ("input", "string", "Input, e.g. backstop.positions/3."),
                ("offset", "long", "Offset of the last record the state holds."))

PARTITION_SCHEMA = _record(
    "PartitionSnapshot", "One account partition's accounts at a tick boundary.",
    ("partition", "long", "The account partition."), ("partitions", "long", "Account partitions in all."),
    ("boundary_ms", "long", "The tick boundary it was taken at."),
    ("accounts", {"type": "array", "items": ACCOUNT}, "Its accounts, in account order."),
    ("inputs", {"type": "array", "items": INPUT}, "How far each of its inputs was read."))

MARKET_SCHEMA = _record(
    "MarketSnapshot", "An engine's market side at a tick boundary (Engine.market_state).",
    ("boundary_ms", "long", "The tick boundary it was taken at."),
    ("market", _record(
        "EngineMarketState", "Everything but the accounts.",
        ("board", "backstop.state.MarketBoardState", "The market board."),
        ("detectors", "backstop.state.DetectorMarketState", "The market detectors."),
        ("circuits", "backstop.state.CircuitBreakersState", "The circuit breakers."),
        ("thin", {"type": "array", "items": "string"}, "Instruments in a liquidity breach, sorted."),
        ("index_history", {"type": "array", "items": _record(
            "UnderlyingHistoryState", "One underlying's index history.", ("underlying", "string", "Underlying."),
            ("history", "backstop.state.IndexHistoryState", "Its history."))}, "In the order first seen."),
        ("last_time_ms", _optional("long"), "The newest event time applied; null before the first."),
        ("events", "long", "Events applied.")), "The market state."),
    ("inputs", {"type": "array", "items": INPUT}, "How far each market input was read."))


@functools.cache
def _parsed() -> tuple[Any, Any]:
    named: dict[str, Any] = {}
    fastavro.parse_schema(default_schemas()["InstrumentDefinition"].json, named_schemas=named)
    for schema in SCHEMAS.values():
        fastavro.parse_schema(schema, named_schemas=named)
    return (fastavro.parse_schema(PARTITION_SCHEMA, named_schemas=named),
            fastavro.parse_schema(MARKET_SCHEMA, named_schemas=named))


def _inputs(inputs: dict[str, int]) -> list[dict[str, Any]]:
    return [{"input": name, "offset": offset} for name, offset in sorted(inputs.items())]


def _encode(schema: Any, record: dict[str, Any]) -> bytes:
    body = io.BytesIO()
    fastavro.schemaless_writer(body, schema, record)
    return MAGIC + bytes([FORMAT]) + zlib.compress(body.getvalue(), 1)


def _decode(schema: Any, data: bytes, what: str) -> dict[str, Any]:
    if data[:len(MAGIC)] != MAGIC or len(data) <= len(MAGIC):
        raise SnapshotFormatError(f"the stored {what} snapshot is not in this format (no {MAGIC!r} header): "
                                  f"read its inputs again")
    written = data[len(MAGIC)]
    if written != FORMAT:
        raise SnapshotFormatError(f"the stored {what} snapshot is format {written}; this version reads format "
                                  f"{FORMAT}: read its inputs again")
    return fastavro.schemaless_reader(io.BytesIO(zlib.decompress(data[len(MAGIC) + 1:])), schema, None)


def encode_partition(snapshot: PartitionSnapshot) -> bytes:
    return _encode(_parsed()[0], {"partition": snapshot.partition, "partitions": snapshot.partitions,
                                  "boundary_ms": snapshot.boundary_ms, "accounts": snapshot.accounts,
                                  "inputs": _inputs(snapshot.inputs)})


def decode_partition(data: bytes) -> PartitionSnapshot:
    r = _decode(_parsed()[0], data, "partition")
    return PartitionSnapshot(r["partition"], r["partitions"], r["boundary_ms"], r["accounts"],
                             {i["input"]: i["offset"] for i in r["inputs"]})


def encode_market(snapshot: MarketSnapshot) -> bytes:
    return _encode(_parsed()[1], {"boundary_ms": snapshot.boundary_ms, "market": snapshot.market,
                                  "inputs": _inputs(snapshot.inputs)})


def decode_market(data: bytes) -> MarketSnapshot:
    r = _decode(_parsed()[1], data, "market")
    return MarketSnapshot(r["boundary_ms"], r["market"], {i["input"]: i["offset"] for i in r["inputs"]})
