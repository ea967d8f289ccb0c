"""Snapshots of an engine's state as explicit, versioned data: Avro with a schema, never pickle.

A worker snapshots each account partition it holds alone (``PartitionSnapshot``: the partition's
accounts, ``Engine.export_accounts``) with the market side (``MarketSnapshot``:
``Engine.market_state``) at the same tick boundary, as one ``Checkpoint``: together they restore
an engine that goes on exactly as the one they were taken from (``Engine.restore``). ``inputs``
records, per input, the last record the state holds and the newest event time the input had
shown there (its place in the merge: ``Sequencer.add_input``), so that reading on from the next
offset puts every later record where the uninterrupted run put it.

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
from typing import Any, cast

import fastavro

from pipelines.engine.state_schema import SCHEMAS
from pipelines.events.schemas import default_schemas

MAGIC = b"BKS"
FORMAT = 4  # 2: inputs carry the newest event time; partition and market travel as one checkpoint
# 3: an account's penalty (frozen withdrawals, margin add-on); the detectors' mark windows and
#    manipulated instruments' prices before the manipulation
# 4: which manipulated instruments fire as a pump, and the instruments delisted after one
NAMESPACE = "backstop.state"


class SnapshotFormatError(ValueError):
    """Stored bytes that are not a snapshot this version reads."""


@dataclasses.dataclass(frozen=True)
class Released:
    """How far an input was read into a state: the offset of the last record it holds (-1: none)
    and the newest event time the input had shown up to there."""

    offset: int
    newest_ms: int


@dataclasses.dataclass(frozen=True)
class PartitionSnapshot:
    partition: int
    partitions: int  # how many account partitions the accounts were split into
    boundary_ms: int  # the tick boundary it was taken at
    accounts: list[dict[str, Any]]  # Engine.export_accounts
    inputs: dict[str, Released]  # the partition's own inputs, e.g. backstop.positions/3


@dataclasses.dataclass(frozen=True)
class MarketSnapshot:
    boundary_ms: int
    market: dict[str, Any]  # Engine.market_state
    inputs: dict[str, Released]  # every market input, e.g. backstop.market.index/0


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """What a worker stores for one account partition: it and the market, at one tick boundary."""

    partition: PartitionSnapshot
    market: MarketSnapshot

    def __post_init__(self) -> None:
        if self.partition.boundary_ms != self.market.boundary_ms:
            raise ValueError(f"checkpoint of partition {self.partition.partition}: partition at "
                             f"{self.partition.boundary_ms}, market at {self.market.boundary_ms}")


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
    ("penalty", _optional("backstop.state.PenaltyState"), "Its withdraw-then-liquidate penalty, if any."),
    ("attention", "boolean", "Whether the ladder or the margin detectors are watching it."),
    ("emitted", _optional(_record("EmittedState", "The last exposure snapshot sent.",
                                  ("time_ms", "long", "Its event time."), ("ratio", "double", "Its margin ratio."))),
     "The last exposure snapshot sent; null before the first."),
    ("waiting_ref", _optional("string"),
     "For an account touched while an underlying it holds had no index price: the event that touched it."))

INPUT = _record("InputOffset", "How far an input was read.", ("input", "string", "Input, e.g. backstop.positions/3."),
                ("offset", "long", "Offset of the last record the state holds; -1 for none."),
                ("newest_ms", "long", "The newest event time the input had shown up to there."))

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


CHECKPOINT_SCHEMA = _record(
    "Checkpoint", "One account partition and the market at the same tick boundary.",
    ("partition", "backstop.state.PartitionSnapshot", "The partition."),
    ("market", "backstop.state.MarketSnapshot", "The market."))


@functools.cache
def _parsed() -> tuple[Any, Any, Any]:
    named: dict[str, Any] = {}
    fastavro.parse_schema(dict(default_schemas()["InstrumentDefinition"].json), named_schemas=named)
    for schema in SCHEMAS.values():
        fastavro.parse_schema(schema, named_schemas=named)
    return (fastavro.parse_schema(PARTITION_SCHEMA, named_schemas=named),
            fastavro.parse_schema(MARKET_SCHEMA, named_schemas=named),
            fastavro.parse_schema(CHECKPOINT_SCHEMA, named_schemas=named))


def _inputs(inputs: dict[str, Released]) -> list[dict[str, Any]]:
    return [{"input": name, "offset": r.offset, "newest_ms": r.newest_ms} for name, r in sorted(inputs.items())]


def _released(inputs: list[dict[str, Any]]) -> dict[str, Released]:
    return {i["input"]: Released(i["offset"], i["newest_ms"]) for i in inputs}


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
    try:
        value = fastavro.schemaless_reader(io.BytesIO(zlib.decompress(data[len(MAGIC) + 1:])), schema, None)
    except Exception as exc:  # noqa: BLE001 - zlib and fastavro raise many types on damaged bytes
        raise SnapshotFormatError(f"the stored {what} snapshot is damaged ({exc.__class__.__name__}): "
                                  f"read its inputs again") from None
    return cast(dict[str, Any], value)  # a record schema reads as a dict


def _partition_record(snapshot: PartitionSnapshot) -> dict[str, Any]:
    return {"partition": snapshot.partition, "partitions": snapshot.partitions, "boundary_ms": snapshot.boundary_ms,
            "accounts": snapshot.accounts, "inputs": _inputs(snapshot.inputs)}


def _market_record(snapshot: MarketSnapshot) -> dict[str, Any]:
    return {"boundary_ms": snapshot.boundary_ms, "market": snapshot.market, "inputs": _inputs(snapshot.inputs)}


def _partition(r: dict[str, Any]) -> PartitionSnapshot:
    return PartitionSnapshot(r["partition"], r["partitions"], r["boundary_ms"], r["accounts"], _released(r["inputs"]))


def _market(r: dict[str, Any]) -> MarketSnapshot:
    return MarketSnapshot(r["boundary_ms"], r["market"], _released(r["inputs"]))


def encode_checkpoint(checkpoint: Checkpoint) -> bytes:
    return _encode(_parsed()[2], {"partition": _partition_record(checkpoint.partition),
                                  "market": _market_record(checkpoint.market)})


def decode_checkpoint(data: bytes) -> Checkpoint:
    r = _decode(_parsed()[2], data, "checkpoint")
    return Checkpoint(_partition(r["partition"]), _market(r["market"]))
