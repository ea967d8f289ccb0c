"""``backstop incident timeline``: one account's story, in event-time order, cause to effect.

The story is assembled from the audit tables (every read with ``FINAL``, so redelivered copies
never show twice): the account's own inputs (positions, collateral), the market inputs of what it
trades (index and oracle prices of its underlyings, marks and vols of its instruments), its
breaches (with the margin ratio), the actions answering them and the execution reports (fills
with prices, fees and slippage), the venue states of its underlyings: the circuit's halt,
market_reduce_only and resume actions, each with its state, and their reports, and the
delisting of an instrument it trades: the ``mark_manipulation`` breach and its
``delist_settle`` (the account's settlement is among its own reports). Each entry carries
its Kafka coordinates and the ids of its causes: triggering events for a breach, breach ids for an
action, the action id for a fill.

Each table is queried on its own (simple, portable SQL: no JOIN, no window function) and the
entries are merged here, ordered by event time, then cause before effect, then coordinates.

``condense`` is the short text view: market ticks (most of a crash's entries) become one line per
price series, at its first tick, with its count, range and extremes; everything else is kept.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

from pipelines.audit.render import iso_ms
from pipelines.audit.store import Store
from pipelines.policy.circuit import CIRCUIT_ACTIONS
from pipelines.risk.instruments import underlying_of

KIND_ORDER = {"input": 0, "breach": 1, "action": 2, "execution": 3}
MARKET_RECORDS = ("IndexPrice", "OraclePrice", "MarkPrice", "VolatilityUpdate")
MAX_INPUTS = 20_000


@dataclasses.dataclass
class Entry:
    time_ms: int
    kind: str  # input | breach | action | execution
    what: str  # record type, breach kind, action type or execution status
    account: str
    instrument: str = ""
    price: float | None = None
    margin_ratio: float | None = None
    quantity: float | None = None
    detail: str = ""
    id: str = ""
    causes: list[str] = dataclasses.field(default_factory=list)
    coordinates: str = ""
    fields: dict[str, Any] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["time"] = iso_ms(self.time_ms)
        return data


def time_filter(start_ms: int | None, end_ms: int | None) -> tuple[str, dict[str, Any]]:
    """A WHERE fragment on event_time_ms, with the day partitions pruned through event_date."""
    parts, params = [], {}
    if start_ms is not None:
        parts.append("event_date >= %(from_date)s AND event_time_ms >= %(from_ms)s")
        params.update(from_date=_date(start_ms), from_ms=start_ms)
    if end_ms is not None:
        parts.append("event_date <= %(to_date)s AND event_time_ms <= %(to_ms)s")
        params.update(to_date=_date(end_ms), to_ms=end_ms)
    return (" AND ".join(parts) or "1"), params


def _date(ms: int) -> datetime.date:
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC).date()


def _coords(row: dict[str, Any]) -> str:
    return f"{row['kafka_topic']}/{row['kafka_partition']}@{row['kafka_offset']}"


def _in(values: set[str]) -> tuple[str, ...]:
    return tuple(sorted(values)) or ("",)


def fetch(store: Store, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    return store.query(sql, params).dicts()


OWN_INPUT_COLUMNS = ("event_time_ms, record, account, underlying, instrument, price, quantity, sequence, "
                     "kafka_topic, kafka_partition, kafka_offset")
BREACH_COLUMNS = ("event_time_ms, account, breach_id, kind, severity, underlying, instrument, observed, threshold, "
                  "margin_ratio, trigger_topics, trigger_partitions, trigger_offsets, trigger_event_ids, "
                  "kafka_topic, kafka_partition, kafka_offset")
ACTION_COLUMNS = ("event_time_ms, account, action_id, action_type, instrument, side, quantity, limit_price, "
                  "breach_ids, param_keys, param_values, kafka_topic, kafka_partition, kafka_offset")
EXECUTION_COLUMNS = ("event_time_ms, account, execution_id, action_id, status, venue, instrument, side, "
                     "filled_quantity, avg_price, fee, fee_currency, slippage_bps, counterparty, reason, "
                     "kafka_topic, kafka_partition, kafka_offset")
VENUE_STATE_ACTIONS = tuple(str(action) for action in CIRCUIT_ACTIONS.values())
DELISTING = ("mark_manipulation", "delist_settle")  # the breach kind and the action type
ORDER = "ORDER BY event_time_ms, kafka_topic, kafka_partition, kafka_offset"


def timeline(store: Store, account: str, start_ms: int | None = None, end_ms: int | None = None, *,
             include_market: bool = True) -> list[Entry]:
    """The ordered story of ``account`` between ``start_ms`` and ``end_ms`` (inclusive, UTC epoch ms):
    its own inputs, breaches, actions and executions; the market ticks of what it trades (unless
    ``include_market`` is false); the venue states of its underlyings (halt, reduce-only, resume)
    with their execution reports; the mark-manipulation breaches and delistings of its instruments.
    Venue-state entries carry an empty ``account``; a delisting's, its underlying."""
    where, params = time_filter(start_ms, end_ms)
    params["account"] = account
    own = _account_rows(store, where, params)
    underlyings, instruments = _subjects(own)
    market = _market_rows(store, where, params, underlyings, instruments) if include_market else []
    states, state_reports = _venue_state_rows(store, where, params, underlyings)
    manipulations, delistings = _delisting_rows(store, where, params, underlyings, instruments)
    entries = ([_input_entry(r) for r in own["inputs"]] + [_market_entry(r) for r in market]
               + [_breach_entry(r) for r in own["breaches"] + manipulations]
               + [_action_entry(r) for r in own["actions"] + delistings] + [_venue_state_entry(r) for r in states]
               + [_execution_entry(r) for r in own["executions"] + state_reports])
    entries.sort(key=lambda e: (e.time_ms, KIND_ORDER[e.kind], e.coordinates))
    return entries


def _account_rows(store: Store, where: str, params: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The account's own rows of every table, by kind (``inputs``, ``breaches``, ``actions``, ``executions``)."""
    tables = {"inputs": ("inputs", OWN_INPUT_COLUMNS), "breaches": ("breaches", BREACH_COLUMNS),
              "actions": ("actions", ACTION_COLUMNS), "executions": ("executions", EXECUTION_COLUMNS)}
    return {kind: fetch(store, f"""
        SELECT {columns} FROM {store.table(table)} FINAL
        WHERE account = %(account)s AND {where} {ORDER}""", params) for kind, (table, columns) in tables.items()}


def _subjects(own: dict[str, list[dict[str, Any]]]) -> tuple[set[str], set[str]]:
    """The underlyings and instruments the account's story involves: what it holds, what its
    breaches name, what its actions and fills traded."""
    instruments = {r["instrument"] for r in own["inputs"] if r["instrument"]}
    underlyings = {r["underlying"] for r in own["inputs"] if r["underlying"] and r["record"] == "PositionUpdate"}
    for row in own["breaches"]:
        if row["underlying"]:
            underlyings.add(row["underlying"])
        if row["instrument"]:
            instruments.add(row["instrument"])
    for row in own["actions"] + own["executions"]:
        if row["instrument"]:
            instruments.add(row["instrument"])
            underlyings.add(underlying_of(row["instrument"]))
    return underlyings, instruments


def _market_rows(store: Store, where: str, params: dict[str, Any], underlyings: set[str],
                 instruments: set[str]) -> list[dict[str, Any]]:
    """Index and oracle prices of ``underlyings``, marks and vols of ``instruments`` (at most ``MAX_INPUTS``)."""
    if not (underlyings or instruments):
        return []
    return fetch(store, f"""
        SELECT event_time_ms, record, account, underlying, instrument, price, index_price, iv,
               kafka_topic, kafka_partition, kafka_offset
        FROM {store.table('inputs')} FINAL
        WHERE account = '' AND {where}
          AND ((record IN ('IndexPrice', 'OraclePrice') AND underlying IN %(underlyings)s)
               OR (record IN ('MarkPrice', 'VolatilityUpdate') AND instrument IN %(instruments)s))
        {ORDER}
        LIMIT {MAX_INPUTS}""", {**params, "underlyings": _in(underlyings), "instruments": _in(instruments)})


def _venue_state_rows(store: Store, where: str, params: dict[str, Any],
                      underlyings: set[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The circuit actions of ``underlyings`` (a halt, reduce-only or resume action names its
    underlying in ``account``) and their execution reports, whose ``instrument`` becomes that underlying."""
    if not underlyings:
        return [], []
    states = fetch(store, f"""
        SELECT {ACTION_COLUMNS} FROM {store.table('actions')} FINAL
        WHERE account IN %(underlyings)s AND action_type IN %(types)s AND {where} {ORDER}""",
                   {**params, "underlyings": _in(underlyings), "types": VENUE_STATE_ACTIONS})
    if not states:
        return [], []
    reports = fetch(store, f"""
        SELECT {EXECUTION_COLUMNS} FROM {store.table('executions')} FINAL
        WHERE account IN %(underlyings)s AND action_id IN %(ids)s AND {where} {ORDER}""",
                    {**params, "underlyings": _in(underlyings), "ids": _in({r["action_id"] for r in states})})
    return states, [{**r, "account": "", "instrument": r["account"]} for r in reports]


def _delisting_rows(store: Store, where: str, params: dict[str, Any], underlyings: set[str],
                    instruments: set[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The ``mark_manipulation`` breaches and ``delist_settle`` actions of ``instruments`` (both
    name the underlying in ``account``, the instrument in ``instrument``)."""
    if not instruments:
        return [], []
    subject = "account IN %(underlyings)s AND instrument IN %(instruments)s"
    scope = {**params, "underlyings": _in(underlyings), "instruments": _in(instruments)}
    breaches = fetch(store, f"""
        SELECT {BREACH_COLUMNS} FROM {store.table('breaches')} FINAL
        WHERE {subject} AND kind = %(kind)s AND {where} {ORDER}""", {**scope, "kind": DELISTING[0]})
    actions = fetch(store, f"""
        SELECT {ACTION_COLUMNS} FROM {store.table('actions')} FINAL
        WHERE {subject} AND action_type = %(type)s AND {where} {ORDER}""", {**scope, "type": DELISTING[1]})
    return breaches, actions


def _input_entry(r: dict[str, Any]) -> Entry:
    if r["record"] == "PositionUpdate":
        detail = f"position {r['quantity']:g} @ {r['price']:g} (seq {r['sequence']})"
    elif r["record"] == "CollateralUpdate":
        detail = f"collateral {r['underlying']} {r['quantity']:g} (seq {r['sequence']})"
    else:
        detail = r["record"]
    return Entry(r["event_time_ms"], "input", r["record"], r["account"], r["instrument"], price=r["price"],
                 quantity=r["quantity"], detail=detail, coordinates=_coords(r), id=_coords(r))


def _market_entry(r: dict[str, Any]) -> Entry:
    subject = r["instrument"] or r["underlying"]
    if r["record"] == "VolatilityUpdate":
        detail = f"{subject} iv {r['iv']}"
    elif r["record"] == "MarkPrice":
        detail = f"{subject} mark {r['price']:g}" + (f" iv {r['iv']:g}" if r["iv"] is not None else "")
    else:
        detail = f"{subject} {r['record'].replace('Price', '').lower()} {r['price']:g}"
    return Entry(r["event_time_ms"], "input", r["record"], "", subject, price=r["price"], detail=detail,
                 coordinates=_coords(r), id=_coords(r), fields={"iv": r["iv"]} if r["iv"] is not None else {})


def _breach_entry(r: dict[str, Any]) -> Entry:
    triggers = [eid or f"{topic}/{part}@{off}" for topic, part, off, eid in
                zip(r["trigger_topics"], r["trigger_partitions"], r["trigger_offsets"], r["trigger_event_ids"])]
    return Entry(r["event_time_ms"], "breach", r["kind"], r["account"], r["instrument"],
                 margin_ratio=r["margin_ratio"],
                 detail=f"{r['severity']}: observed {_num(r['observed'])} vs threshold {_num(r['threshold'])}",
                 id=r["breach_id"], causes=triggers, coordinates=_coords(r),
                 fields={"observed": r["observed"], "threshold": r["threshold"], "severity": r["severity"]})


def _action_entry(r: dict[str, Any]) -> Entry:
    params_of = dict(zip(r["param_keys"], r["param_values"]))
    params_text = ", ".join(f"{k}={v}" for k, v in params_of.items())
    order = f"{r['side']} {r['quantity']:g}" if r["side"] else ""
    if r["limit_price"] is not None:
        order += f" limit {r['limit_price']:g}"
    return Entry(r["event_time_ms"], "action", r["action_type"], r["account"], r["instrument"],
                 price=r["limit_price"], quantity=r["quantity"], margin_ratio=_ratio(params_of),
                 detail=" ".join(x for x in (order, params_text) if x), id=r["action_id"],
                 causes=list(r["breach_ids"]), coordinates=_coords(r))


def _venue_state_entry(r: dict[str, Any]) -> Entry:
    """A circuit action: the venue state of its underlying from then on, as ``fields["venue_state"]``."""
    params_of = dict(zip(r["param_keys"], r["param_values"]))
    state = params_of.get("state", "")
    level = params_of.get("level", "")
    return Entry(r["event_time_ms"], "action", r["action_type"], "", r["account"],
                 detail=f"venue state {r['account']}: {state}" + (f" (level {level})" if level else ""),
                 id=r["action_id"], causes=list(r["breach_ids"]), coordinates=_coords(r),
                 fields={"venue_state": state})


def _execution_entry(r: dict[str, Any]) -> Entry:
    parts = [f"{r['venue']}"]
    if r["filled_quantity"]:
        price = f" @ {r['avg_price']:g}" if r["avg_price"] is not None else ""
        parts.append(f"{r['side']} {r['filled_quantity']:g}{price}")
    if r["fee"]:
        parts.append(f"fee {r['fee']:g} {r['fee_currency']}".rstrip())
    if r["slippage_bps"] is not None:
        parts.append(f"slippage {r['slippage_bps']:g}bps")
    if r["counterparty"]:
        parts.append(f"cpty {r['counterparty']}")
    if r["reason"]:
        parts.append(f"reason: {r['reason']}")
    return Entry(r["event_time_ms"], "execution", r["status"], r["account"], r["instrument"],
                 price=r["avg_price"], quantity=r["filled_quantity"], detail=" ".join(parts),
                 id=r["execution_id"], causes=[r["action_id"]], coordinates=_coords(r),
                 fields={"side": r["side"], "fee": r["fee"], "fee_currency": r["fee_currency"],
                         "slippage_bps": r["slippage_bps"], "venue": r["venue"]})


def is_market_tick(entry: Entry) -> bool:
    return entry.kind == "input" and entry.what in MARKET_RECORDS


def condense(entries: list[Entry]) -> list[Entry]:
    """``entries`` with the market ticks of each series (record type, instrument or underlying) replaced
    by one entry at the series' first tick: its count, time range, first/low/high/last value (price, or
    iv for volatility updates). Every other entry is kept, in order."""
    series: dict[tuple[str, str], list[Entry]] = {}
    for e in entries:
        if is_market_tick(e):
            series.setdefault((e.what, e.instrument), []).append(e)
    summaries = [_series_summary(ticks) for ticks in series.values()]
    kept = [e for e in entries if not is_market_tick(e)] + summaries
    return sorted(kept, key=lambda e: (e.time_ms, KIND_ORDER[e.kind], e.coordinates))


def _series_summary(ticks: list[Entry]) -> Entry:
    first, last = ticks[0], ticks[-1]
    detail = f"{len(ticks)} ticks to {iso_ms(last.time_ms)}"
    valued = [(e, v) for e in ticks if (v := _tick_value(e)) is not None]
    if valued:
        (low_at, low), (high_at, high) = min(valued, key=lambda p: p[1]), max(valued, key=lambda p: p[1])
        detail += (f": first {valued[0][1]:g}, low {low:g} at {iso_ms(low_at.time_ms)}, "
                   f"high {high:g} at {iso_ms(high_at.time_ms)}, last {valued[-1][1]:g}")
    return Entry(first.time_ms, "input", f"{first.what} x{len(ticks)}", "", first.instrument, price=first.price,
                 detail=detail, coordinates=first.coordinates)


def _tick_value(entry: Entry) -> float | None:
    return entry.fields.get("iv") if entry.what == "VolatilityUpdate" else entry.price


COLUMNS = ("time", "kind", "what", "instrument", "price", "margin", "detail", "id", "causes")


def rows(entries: list[Entry]) -> list[tuple]:
    return [(iso_ms(e.time_ms), e.kind, e.what, e.instrument, e.price, e.margin_ratio, e.detail,
             e.id if e.kind != "input" else "", ",".join(e.causes)) for e in entries]


def _ratio(params: dict[str, str]) -> float | None:
    """The margin ratio an action was decided at (its ``margin_ratio`` parameter), when it carries one."""
    try:
        return float(params["margin_ratio"])
    except (KeyError, ValueError):
        return None


def _num(value: float | None) -> str:
    """A stored double for display: non-finite values (a margin ratio is +inf once equity is gone)
    come back from the store as None and read "inf"."""
    return "inf" if value is None else f"{value:g}"
