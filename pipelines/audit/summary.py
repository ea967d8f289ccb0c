"""``backstop incident summary``: what fired, how fast it was carried out, and what it cost.

Sections (each a list of dict rows; the text form prints them as tables):

* ``breaches`` -- per kind and severity: reports of a condition starting (``fired``, what
  ``backstop demo`` counts as breaches) and ending (``cleared``), accounts, first and last;
* ``actions`` -- per action type: count, accounts, quantity;
* ``executions`` -- per venue and status: reports, filled quantity, notional, fees, mean slippage;
* ``latency_ms`` -- percentiles of trigger -> action (decision), action -> first fill and
  trigger -> first fill, where the trigger is the earliest breach an action answers and the fill
  the first execution report with a filled quantity;
* ``losses`` -- slippage cost (filled quantity x average price x slippage bps / 10^4) and fees,
  per fee currency;
* ``liquidity`` -- LP transfers (venue ``lp``), insurance-fund draws (venue ``insurance_fund``)
  and auto-deleveraging (venue ``adl`` or action ``auto_deleverage``): events, accounts,
  counterparties, quantity and notional;
* ``dead_letters`` -- per reason.

Aggregations run in ClickHouse (``FINAL`` reads); the causal join for latencies (action ->
breaches -> executions) runs here over the ids, which keeps the SQL portable to 18.16.
"""

from __future__ import annotations

import math
from typing import Any

from pipelines.audit.store import Store
from pipelines.audit.timeline import time_filter

PERCENTILES = (50, 90, 99)
#: a breach row that reports the end of its condition (the core's ``Breach.cleared``, detail ``cleared``)
CLEARED = "detail_values[indexOf(detail_keys, 'cleared')] = 'true'"
LIQUIDITY_VENUES = {"lp": "lp_transfer", "insurance_fund": "insurance_fund", "adl": "adl"}


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (an observed value, never an interpolation)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _stats(values: list[float]) -> dict[str, Any]:
    out: dict[str, Any] = {"count": len(values)}
    for q in PERCENTILES:
        out[f"p{q}"] = percentile(values, q)
    out["max"] = max(values) if values else None
    return out


def summary(store: Store, start_ms: int | None, end_ms: int | None) -> dict[str, Any]:
    where, params = time_filter(start_ms, end_ms)
    t = store.table
    q = lambda sql, extra=None: store.query(sql, {**params, **(extra or {})}).dicts()  # noqa: E731

    breaches = q(f"""
        SELECT kind, severity, countIf(NOT ({CLEARED})) AS fired, countIf({CLEARED}) AS cleared,
               uniqExact(account) AS accounts, min(event_time_ms) AS first_ms, max(event_time_ms) AS last_ms
        FROM {t('breaches')} FINAL WHERE {where}
        GROUP BY kind, severity ORDER BY fired DESC, kind, severity""")
    actions = q(f"""
        SELECT action_type, count() AS count, uniqExact(account) AS accounts, sum(quantity) AS total_quantity
        FROM {t('actions')} FINAL WHERE {where}
        GROUP BY action_type ORDER BY count DESC, action_type""")
    executions = q(f"""
        SELECT venue, status, count() AS reports, sum(filled_quantity) AS filled,
               sum(if(isFinite(avg_price), filled_quantity * avg_price, 0)) AS notional,
               sum(fee) AS fees,
               sum(if(isFinite(slippage_bps), slippage_bps, 0)) / greatest(countIf(isFinite(slippage_bps)), 1)
                   AS mean_slippage_bps
        FROM {t('executions')} FINAL WHERE {where}
        GROUP BY venue, status ORDER BY reports DESC, venue, status""")
    losses = q(f"""
        SELECT fee_currency AS currency, count() AS fills, sum(fee) AS fees,
               sum(if(isFinite(avg_price) AND isFinite(slippage_bps),
                      filled_quantity * avg_price * slippage_bps / 10000, 0)) AS slippage_cost
        FROM {t('executions')} FINAL WHERE {where} AND filled_quantity > 0
        GROUP BY fee_currency ORDER BY fee_currency""")
    liquidity = q(f"""
        SELECT venue, count() AS events, uniqExact(account) AS accounts, uniqExact(counterparty) AS counterparties,
               sum(filled_quantity) AS total_quantity,
               sum(if(isFinite(avg_price), filled_quantity * avg_price, 0)) AS notional
        FROM {t('executions')} FINAL WHERE {where} AND venue IN ('lp', 'insurance_fund', 'adl')
        GROUP BY venue ORDER BY venue""")
    adl_actions = q(f"""
        SELECT count() AS count, uniqExact(account) AS accounts
        FROM {t('actions')} FINAL WHERE {where} AND action_type = 'auto_deleverage'""")
    dead_letters = q(f"""
        SELECT reason, source_topic, count() AS count
        FROM {t('dead_letters')} FINAL WHERE {where}
        GROUP BY reason, source_topic ORDER BY count DESC, reason, source_topic""")
    for row in liquidity:
        row["use"] = LIQUIDITY_VENUES.get(row["venue"], row["venue"])

    return {
        "from_ms": start_ms,
        "to_ms": end_ms,
        "breaches": breaches,
        "actions": actions,
        "executions": executions,
        "latency_ms": latencies(store, where, params),
        "losses": losses,
        "liquidity": liquidity,
        "adl_actions": adl_actions[0] if adl_actions else {"count": 0, "accounts": 0},
        "dead_letters": dead_letters,
    }


def latencies(store: Store, where: str, params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    t = store.table
    actions = store.query(f"""
        SELECT action_id, event_time_ms, breach_ids FROM {t('actions')} FINAL WHERE {where}""", params).rows
    breach_ids = sorted({b for _, _, ids in actions for b in ids})
    action_ids = sorted({a for a, _, _ in actions})
    breach_time: dict[str, int] = {}
    for chunk in _chunks(breach_ids):
        for breach_id, ms in store.query(f"""
                SELECT breach_id, min(event_time_ms) FROM {t('breaches')} FINAL
                WHERE breach_id IN %(ids)s GROUP BY breach_id""", {"ids": tuple(chunk)}).rows:
            breach_time[breach_id] = int(ms)
    first_fill: dict[str, int] = {}
    for chunk in _chunks(action_ids):
        for action_id, ms in store.query(f"""
                SELECT action_id, min(event_time_ms) FROM {t('executions')} FINAL
                WHERE action_id IN %(ids)s AND filled_quantity > 0 GROUP BY action_id""", {"ids": tuple(chunk)}).rows:
            first_fill[action_id] = int(ms)
    decision, execution, end_to_end = [], [], []
    for action_id, action_ms, ids in actions:
        triggers = [breach_time[b] for b in ids if b in breach_time]
        trigger = min(triggers) if triggers else None
        fill = first_fill.get(action_id)
        if trigger is not None:
            decision.append(action_ms - trigger)
        if fill is not None:
            execution.append(fill - action_ms)
            if trigger is not None:
                end_to_end.append(fill - trigger)
    return {"trigger_to_action": _stats(decision), "action_to_fill": _stats(execution),
            "trigger_to_fill": _stats(end_to_end)}


def _chunks(values: list[str], size: int = 1000) -> list[list[str]]:
    return [values[i:i + size] for i in range(0, len(values), size)]


SECTIONS = ("breaches", "actions", "executions", "losses", "liquidity", "dead_letters")


def latency_rows(latency: dict[str, dict[str, Any]]) -> tuple[list[str], list[tuple]]:
    columns = ["span", "count", *(f"p{q}" for q in PERCENTILES), "max"]
    return columns, [(span, s["count"], *(s[f"p{q}"] for q in PERCENTILES), s["max"]) for span, s in latency.items()]
