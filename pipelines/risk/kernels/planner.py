"""The greedy liquidation search compiled: the numba twin of ``liquidation_order._greedy_search``.

Contract: for the same inputs it takes the same steps and returns the same floats, to the bit,
as the numpy reference. To that end every sum is taken in the reference's order: a row's sums
leg by leg in leg order from 0.0 (as ``np.bincount`` and ``np.add.at`` add), an account's margin
row by row in underlying order (``liquidation_order._account_totals``); ``_maximum`` and
``_minimum`` propagate NaN as ``np.maximum`` and ``np.minimum`` do; and ``error_model="numpy"``
makes a division by zero inf or NaN, never an exception. The search runs account by account
where the reference advances every account in lockstep: the same steps, because an account's
search reads and changes only its own (account, underlying) rows.

One kernel call plans a batch (``plan_batch``): it checks the batch, gathers the accounts' legs
from the book's positions, packs the instrument and underlying tables it reads through named
indices (``INSTRUMENT_*``, ``UNDERLYING_*``, ``ADAPTIVE_*``), searches, and merges each
account's steps into orders as ``liquidation_order._plans_of`` does (same sums, same order),
returning one flat float64 array (``PLAN_*``, ``ORDER_*``). The caller passes the book's arrays
kept resident per book and the revaluation's arrays as they are (no copies when they already
have the kernel's types); ``warm()`` compiles the kernel for exactly those types, so the first
liquidation does not compile it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from numba import njit

from pipelines.errors import UserError
from pipelines.risk.adaptive import YEAR_DAYS, AdaptiveParams
from pipelines.risk.book import Book, BookRisk
from pipelines.risk.kernels.scalar import maximum, minimum
from pipelines.risk.margin import ScenarioGrid, UnderlyingParams

# Rows of the per-instrument table (fields x instruments).
INSTRUMENT_DELTA, INSTRUMENT_GAMMA, INSTRUMENT_VEGA, INSTRUMENT_IS_OPTION = 0, 1, 2, 3
INSTRUMENT_CONTRACT_SIZE, INSTRUMENT_NOTIONAL, INSTRUMENT_SLIPPAGE = 4, 5, 6
INSTRUMENT_FIELDS = 7
# Rows of the per-underlying table (fields x underlyings).
UNDERLYING_INDEX, UNDERLYING_IMPLIED_VOL, UNDERLYING_REALISED_VOL, UNDERLYING_DEPTH = 0, 1, 2, 3
UNDERLYING_DELTA_CHARGE_NET, UNDERLYING_DELTA_CHARGE_HEDGED, UNDERLYING_SHORT_OPTION_CHARGE = 4, 5, 6
# The adaptive parameters, in this order.
ADAPTIVE_FIELDS = ("z", "base_horizon_days", "step_seconds", "participation", "vol_of_vol", "impact", "max_multiplier")
ADAPTIVE_Z, ADAPTIVE_BASE_HORIZON_DAYS, ADAPTIVE_STEP_SECONDS, ADAPTIVE_PARTICIPATION = 0, 1, 2, 3
ADAPTIVE_VOL_OF_VOL, ADAPTIVE_IMPACT, ADAPTIVE_MAX_MULTIPLIER = 4, 5, 6
# Columns of a row's sums (its scenario PnL is kept apart).
ROW_DELTA, ROW_LONG, ROW_SHORT, ROW_SHORT_OPTION, ROW_GAMMA, ROW_VEGA, ROW_GROSS = 0, 1, 2, 3, 4, 5, 6
ROW_FIELDS = 7
# The kernel's flat result: a status (the number of plans, or an error code < 0 and nothing after it), then
# per batch account PLAN_FIELDS values, then every account's orders (ORDER_FIELDS values each), account after
# account: an account's are orders first:last of them. The fields are in the order of
# liquidation_order.LiquidationPlan's and CloseOrder's (PLAN_FIRST_ORDER and PLAN_LAST_ORDER for its orders).
STATUS, PLANS_START = 0, 1
BAD_TARGET, ACCOUNT_OUT_OF_RANGE, ACCOUNT_REPEATED = -1, -2, -3
PLAN_ACCOUNT, PLAN_TARGET, PLAN_FIRST_ORDER, PLAN_LAST_ORDER, PLAN_REACHED = 0, 1, 2, 3, 4
PLAN_MAINTENANCE_BEFORE, PLAN_EQUITY_BEFORE, PLAN_MAINTENANCE_AFTER, PLAN_EQUITY_AFTER = 5, 6, 7, 8
PLAN_SENDS = 9  # 1.0 where the account's round was checked (``RoundCheck``) and sends something, else 0.0
PLAN_FIELDS = 10
ORDER_INSTRUMENT, ORDER_QTY, ORDER_COST, ORDER_MAINTENANCE, ORDER_EQUITY, ORDER_RATIO = 0, 1, 2, 3, 4, 5
ORDER_FIELDS = 6
FLOAT64 = np.dtype(np.float64)
_RESIDENT = "planner.resident"  # its key in Book.derived
NO_SLIPPAGE = np.zeros(0)  # slippage_per_unit not given: the kernel prices it
OPEN_ABOVE = 1e-12  # a leg is open while |position| > this (the reference's test)
MIN_COST = 1e-12  # a chunk's cost is floored at this in its score (the reference's floor)

# (leg instrument, leg underlying, leg chunk); (scenario PnL, scenario weight, instrument table, underlying
# table, adaptive table, use the add-on); (row scenario PnL, row sums, row margins, one row's scratch PnL).
Legs = tuple[np.ndarray, np.ndarray, np.ndarray]
Market = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]
Rows = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
# A book's (position start, instrument index, qty) by position and (underlying index, is option) by instrument;
# per instrument (delta, gamma, vega, units, index); per underlying the UNDERLYING_* columns in order.
Positions = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]
InstrumentColumns = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]
UnderlyingColumns = tuple[np.ndarray, ...]
# A round check's arrays (``RoundCheck``: checked, distress_since_ms, in_flight, waits, marks) and its limits
# (time_ms, initial_share, ramp_ms, round_notional_usd, min_notional_usd).
Rounds = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]
RoundLimits = tuple[float, float, float, float, float]

_kernel = njit(cache=True, error_model="numpy")


@_kernel
def _ratio(mm: float, equity: float) -> float:
    """``liquidation_order._ratio``: MM / equity; without equity inf if there is margin, else 0."""
    if equity > 0:
        return mm / equity
    return np.inf if mm > 0 else 0.0


@_kernel
def _adaptive_addon(gamma: float, vega: float, net_delta: float, gross: float, underlying: np.ndarray, u: int,
                    adaptive: np.ndarray, base: float) -> float:
    """``adaptive.adaptive_addon(...).total`` of one row on underlying ``u``, the same operations in the
    same order."""
    realised, depth = underlying[UNDERLYING_REALISED_VOL, u], underlying[UNDERLYING_DEPTH, u]
    sigma = maximum(realised if np.isfinite(realised) and realised > 0 else 0.0, underlying[UNDERLYING_IMPLIED_VOL, u])
    deep = not np.isfinite(depth) or depth <= 0
    safe_depth = 1.0 if deep else depth
    participation = adaptive[ADAPTIVE_PARTICIPATION]
    ratio = gross / (participation * safe_depth) if participation > 0 and not deep else 0.0
    horizon = adaptive[ADAPTIVE_BASE_HORIZON_DAYS] + adaptive[ADAPTIVE_STEP_SECONDS] / 86_400.0 * ratio
    root = np.sqrt(horizon / YEAR_DAYS)
    move = adaptive[ADAPTIVE_Z] * sigma * root
    vol_move = adaptive[ADAPTIVE_Z] * adaptive[ADAPTIVE_VOL_OF_VOL] * sigma * root
    index = underlying[UNDERLYING_INDEX, u]
    index_move = index * move
    gamma_addon = 0.5 * maximum(-gamma, 0.0) * (index_move * index_move)
    vega_addon = maximum(-vega, 0.0) * 100.0 * vol_move
    delta_notional = abs(net_delta) * index
    slippage = 0.0 if deep else adaptive[ADAPTIVE_IMPACT] * delta_notional * np.sqrt(delta_notional / safe_depth)
    raw = gamma_addon + vega_addon + slippage
    return minimum(raw, (adaptive[ADAPTIVE_MAX_MULTIPLIER] - 1.0) * base)


@_kernel
def _row_maintenance(pnl: np.ndarray, weight: np.ndarray, delta: float, long_delta: float, short_delta: float,
                     short_option: float, gamma: float, vega: float, gross: float, underlying: np.ndarray, u: int,
                     adaptive: np.ndarray, use_adaptive: bool) -> float:
    """``margin.row_margin(...).maintenance`` of one row on underlying ``u``, plus the adaptive add-on
    when asked."""
    loss = 0.0
    if len(pnl):
        worst = pnl[0] * weight[0]
        for s in range(1, len(pnl)):
            worst = minimum(worst, pnl[s] * weight[s])
        loss = maximum(-worst, 0.0)
    index = underlying[UNDERLYING_INDEX, u]
    hedged = minimum(long_delta, short_delta)
    delta_charge = (underlying[UNDERLYING_DELTA_CHARGE_NET, u] * abs(delta)
                    + underlying[UNDERLYING_DELTA_CHARGE_HEDGED, u] * hedged) * index
    short_charge = underlying[UNDERLYING_SHORT_OPTION_CHARGE, u] * short_option * index
    base = loss + delta_charge + short_charge
    if not use_adaptive:
        return base
    return base + _adaptive_addon(gamma, vega, delta, gross, underlying, u, adaptive, base)


@_kernel
def _sum_row(u: int, first: int, last: int, qty: np.ndarray, legs: Legs, market: Market, rows: Rows) -> None:
    """Recompute row ``u`` (underlying u of the account whose legs are first:last) from its legs."""
    leg_instrument, leg_underlying, _ = legs
    scenario_pnl, _, instrument, _, _, _ = market
    pnl, sums, _, _ = rows
    pnl[u, :] = 0.0
    sums[u, :] = 0.0
    for leg in range(first, last):
        if leg_underlying[leg] != u:
            continue
        k, q = leg_instrument[leg], qty[leg]
        for s in range(pnl.shape[1]):
            pnl[u, s] += q * scenario_pnl[k, s]
        position_delta = q * instrument[INSTRUMENT_DELTA, k]
        sums[u, ROW_DELTA] += position_delta
        sums[u, ROW_LONG] += maximum(position_delta, 0.0)
        sums[u, ROW_SHORT] += maximum(-position_delta, 0.0)
        is_option = instrument[INSTRUMENT_IS_OPTION, k] != 0.0
        sums[u, ROW_SHORT_OPTION] += maximum(-q, 0.0) * instrument[INSTRUMENT_CONTRACT_SIZE, k] if is_option else 0.0
        sums[u, ROW_GAMMA] += q * instrument[INSTRUMENT_GAMMA, k]
        sums[u, ROW_VEGA] += q * instrument[INSTRUMENT_VEGA, k]
        sums[u, ROW_GROSS] += abs(q) * instrument[INSTRUMENT_NOTIONAL, k]


@_kernel
def _price_row(u: int, market: Market, rows: Rows) -> float:
    """The maintenance margin of row ``u`` from its sums."""
    _, weight, _, underlying, adaptive, use_adaptive = market
    pnl, sums, _, _ = rows
    return _row_maintenance(pnl[u], weight[u], sums[u, ROW_DELTA], sums[u, ROW_LONG], sums[u, ROW_SHORT],
                            sums[u, ROW_SHORT_OPTION], sums[u, ROW_GAMMA], sums[u, ROW_VEGA], sums[u, ROW_GROSS],
                            underlying, u, adaptive, use_adaptive)


@_kernel
def _account_total(rows_mm: np.ndarray) -> float:
    """The account's maintenance margin: its rows added in underlying order."""
    total = 0.0
    for u in range(len(rows_mm)):
        total += rows_mm[u]
    return total


@_kernel
def _chunk(leg: int, qty: np.ndarray, legs: Legs, market: Market, rows: Rows) -> tuple[float, float, float, float]:
    """Close one chunk of open leg ``leg`` on its own: (score, qty traded, position after, cost).
    The score is the margin removed from the leg's row per USD of slippage."""
    leg_instrument, leg_underlying, chunk = legs
    scenario_pnl, weight, instrument, underlying, adaptive, use_adaptive = market
    pnl, sums, rows_mm, scratch = rows
    k, u, q = leg_instrument[leg], leg_underlying[leg], qty[leg]
    size = minimum(chunk[leg], abs(q))
    dq = -np.sign(q) * size
    after = q + dq
    d = instrument[INSTRUMENT_DELTA, k]
    for s in range(len(scratch)):
        scratch[s] = pnl[u, s] + dq * scenario_pnl[k, s]
    long_delta = sums[u, ROW_LONG] + maximum(after * d, 0.0) - maximum(q * d, 0.0)
    short_delta = sums[u, ROW_SHORT] + maximum(-after * d, 0.0) - maximum(-q * d, 0.0)
    is_option = instrument[INSTRUMENT_IS_OPTION, k] != 0.0
    short_option_change = ((maximum(-after, 0.0) - maximum(-q, 0.0)) * instrument[INSTRUMENT_CONTRACT_SIZE, k]
                           if is_option else 0.0)
    gross = sums[u, ROW_GROSS] + (abs(after) - abs(q)) * instrument[INSTRUMENT_NOTIONAL, k]
    mm_after = _row_maintenance(scratch, weight[u], sums[u, ROW_DELTA] + dq * d, maximum(long_delta, 0.0),
                                maximum(short_delta, 0.0),
                                maximum(sums[u, ROW_SHORT_OPTION] + short_option_change, 0.0),
                                sums[u, ROW_GAMMA] + dq * instrument[INSTRUMENT_GAMMA, k],
                                sums[u, ROW_VEGA] + dq * instrument[INSTRUMENT_VEGA, k], maximum(gross, 0.0),
                                underlying, u, adaptive, use_adaptive)
    cost = size * instrument[INSTRUMENT_SLIPPAGE, k]
    return (rows_mm[u] - mm_after) / maximum(cost, MIN_COST), dq, after, cost


@_kernel
def _best_chunk(first: int, last: int, qty: np.ndarray, legs: Legs, market: Market,
                rows: Rows) -> tuple[int, float, float, float]:
    """The first open leg whose chunk scores highest, with that chunk, if the score is > 0; leg
    -1 when no chunk scores > 0 or any scores NaN (the reference's ``_first_argmax_per_group``)."""
    best, top, best_dq, best_after, best_cost = -1, -np.inf, 0.0, 0.0, 0.0
    for leg in range(first, last):
        if not abs(qty[leg]) > OPEN_ABOVE:
            continue
        score, dq, after, cost = _chunk(leg, qty, legs, market, rows)
        if score != score:
            return -1, 0.0, 0.0, 0.0
        if score > top:
            best, top, best_dq, best_after, best_cost = leg, score, dq, after, cost
    if not top > 0:
        return -1, 0.0, 0.0, 0.0
    return best, best_dq, best_after, best_cost


@_kernel
def _has_open_leg(first: int, last: int, qty: np.ndarray) -> bool:
    for leg in range(first, last):
        if abs(qty[leg]) > OPEN_ABOVE:
            return True
    return False


@_kernel
def _ordered(orders: np.ndarray, n: int, opened: int, instrument: int, dq: float, cost: float, mm: float,
             equity: float) -> tuple[np.ndarray, int]:
    """``orders`` (n rows taken) with a step added for the account whose orders start at row
    ``opened``: merged into its last order when that is on the same instrument (quantity and cost
    added in step order, margin, equity and ratio those after this step), else a new order (the
    table doubled when full). As ``liquidation_order._plans_of`` merges a search's steps."""
    if n > opened and orders[n - 1, ORDER_INSTRUMENT] == instrument:
        last = n - 1
        orders[last, ORDER_QTY] += dq
        orders[last, ORDER_COST] += cost
    else:
        if n == len(orders):
            grown = np.empty((2 * len(orders), ORDER_FIELDS))
            grown[:n] = orders
            orders = grown
        last, n = n, n + 1
        orders[last, ORDER_INSTRUMENT], orders[last, ORDER_QTY], orders[last, ORDER_COST] = instrument, dq, cost
    orders[last, ORDER_MAINTENANCE], orders[last, ORDER_EQUITY] = mm, equity
    orders[last, ORDER_RATIO] = _ratio(mm, equity)
    return orders, n


@_kernel
def _search_account(first: int, last: int, qty: np.ndarray, legs: Legs, market: Market, rows: Rows, mm: float,
                    equity: float, target: float, max_steps: int, orders: np.ndarray,
                    n: int) -> tuple[np.ndarray, int, float, float]:
    """One account's greedy search from margin ``mm`` and ``equity``: close the best chunk until
    the ratio is at most ``target``, nothing is open, no chunk lowers the margin, or ``max_steps``
    steps; its steps go to ``orders`` from row ``n``, merged (``_ordered``). Returns (orders,
    rows taken, margin after, equity after)."""
    leg_instrument, leg_underlying, _ = legs
    rows_mm = rows[2]
    opened = n
    for _ in range(max_steps):
        if _ratio(mm, equity) <= target or not _has_open_leg(first, last, qty):
            break
        leg, dq, after, cost = _best_chunk(first, last, qty, legs, market, rows)
        if leg < 0:
            break
        qty[leg] = after if abs(after) > OPEN_ABOVE else 0.0
        equity -= cost
        u = leg_underlying[leg]
        _sum_row(u, first, last, qty, legs, market, rows)
        rows_mm[u] = _price_row(u, market, rows)
        mm = _account_total(rows_mm)
        orders, n = _ordered(orders, n, opened, leg_instrument[leg], dq, cost, mm, equity)
    return orders, n, mm, equity


@_kernel
def _round_share(distress_since_ms: float, limits: RoundLimits) -> float:
    """``ladder._round_orders``' share at ``limits``' time: ``initial_share`` plus the time in
    distress (none when NaN) over ``ramp_ms``, at most 1 (the same operations: the times are
    whole milliseconds, exact in float64)."""
    time_ms, initial_share, ramp_ms, _, _ = limits
    elapsed = 0.0 if np.isnan(distress_since_ms) else time_ms - distress_since_ms
    share = initial_share + elapsed / ramp_ms
    return share if share < 1.0 else 1.0


@_kernel
def _round_sends(orders: np.ndarray, first: int, last: int, account: int, positions: Positions, rounds: Rounds,
                 limits: RoundLimits) -> bool:
    """Whether ``ladder._round_orders`` gives anything for ``account``'s plan, orders first:last:
    before its first order the budget is the whole ``round_notional_usd`` and nothing is placed,
    so it does iff some order, in plan order, neither waits nor falls under ``min_notional_usd``
    (its quantity within the share less the account's in flight on the instrument, its notional
    at the mark capped at the budget; the same comparisons, NaN included). A plan closes only
    the account's own positions (``_search_account``), so its in flight is read from them alone."""
    position_start, instrument_idx, _, _, _ = positions
    _, distress_since_ms, in_flight, waits, marks = rounds
    _, _, _, budget, min_notional = limits
    share = _round_share(distress_since_ms[account], limits)
    for o in range(first, last):
        k = int(orders[o, ORDER_INSTRUMENT])
        if waits[k]:
            continue
        sent = 0.0
        for p in range(position_start[account], position_start[account + 1]):
            if instrument_idx[p] == k:
                sent = in_flight[p]
                break
        planned = orders[o, ORDER_QTY]
        qty = planned * share - sent if planned * (planned * share - sent) > 0 else 0.0
        notional = abs(qty) * marks[k]
        if notional > budget:
            notional = budget
        if not notional < min_notional:
            return True
    return False


@_kernel
def _batch_error(picked: np.ndarray, targets: np.ndarray, n_accounts: int) -> int:
    """0 when there is one target per account, every target is a positive number and every account
    an index into the book's ``n_accounts``, once; else (checked in this order) ``ACCOUNT_REPEATED``,
    ``BAD_TARGET``, ``ACCOUNT_OUT_OF_RANGE`` or ``ACCOUNT_REPEATED``."""
    if len(picked) != len(targets):
        return ACCOUNT_REPEATED
    for t in targets:
        if not (np.isfinite(t) and t > 0):
            return BAD_TARGET
    for a in picked:
        if a < 0 or a >= n_accounts:
            return ACCOUNT_OUT_OF_RANGE
    seen = np.zeros(n_accounts, dtype=np.bool_)
    for a in picked:
        if seen[a]:
            return ACCOUNT_REPEATED
        seen[a] = True
    return 0


@_kernel
def _legs(picked: np.ndarray, position_start: np.ndarray, instrument_idx: np.ndarray, underlying_idx: np.ndarray,
          qty: np.ndarray, chunk_fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(start, instrument, underlying, qty, chunk): the batch accounts' non-zero positions,
    account by account in batch order, in book order within one (``liquidation_order._legs_of``);
    batch account b's are start[b]:start[b + 1]."""
    total = 0
    for a in picked:
        total += position_start[a + 1] - position_start[a]
    start = np.empty(len(picked) + 1, dtype=np.int64)
    instrument, underlying = np.empty(total, dtype=np.int64), np.empty(total, dtype=np.int64)
    leg_qty, chunk = np.empty(total), np.empty(total)
    n = 0
    for b in range(len(picked)):
        start[b] = n
        for p in range(position_start[picked[b]], position_start[picked[b] + 1]):
            if qty[p] != 0:
                instrument[n], leg_qty[n] = instrument_idx[p], qty[p]
                underlying[n], chunk[n] = underlying_idx[instrument_idx[p]], chunk_fraction * abs(qty[p])
                n += 1
    start[len(picked)] = n
    return start, instrument[:n], underlying[:n], leg_qty[:n], chunk[:n]


@_kernel
def _instrument_rows(delta: np.ndarray, gamma: np.ndarray, vega: np.ndarray, is_option: np.ndarray,
                     units: np.ndarray, index: np.ndarray, half_spread_vol_points: float,
                     option_min_slippage_frac: float, linear_half_spread: float) -> np.ndarray:
    """The per-instrument table: ``INSTRUMENT_*`` rows by instrument, with the expected slippage
    per contract as ``liquidation_order.expected_slippage_per_unit`` prices it (products and a
    NaN-propagating maximum: the same floats)."""
    out = np.empty((INSTRUMENT_FIELDS, len(delta)))
    for k in range(len(delta)):
        notional = index[k] * units[k]
        out[INSTRUMENT_DELTA, k], out[INSTRUMENT_GAMMA, k], out[INSTRUMENT_VEGA, k] = delta[k], gamma[k], vega[k]
        out[INSTRUMENT_IS_OPTION, k] = 1.0 if is_option[k] else 0.0
        out[INSTRUMENT_CONTRACT_SIZE, k], out[INSTRUMENT_NOTIONAL, k] = units[k], notional
        out[INSTRUMENT_SLIPPAGE, k] = (maximum(half_spread_vol_points * vega[k], option_min_slippage_frac * notional)
                                       if is_option[k] else linear_half_spread * notional)
    return out


@_kernel
def _underlying_rows(columns: UnderlyingColumns) -> np.ndarray:
    """The per-underlying table: ``UNDERLYING_*`` rows (``columns`` in that order) by underlying."""
    out = np.empty((len(columns), len(columns[0])))
    for field in range(len(columns)):
        out[field] = columns[field]
    return out


@_kernel
def _packed(planned: np.ndarray, plans_start: int, orders: np.ndarray, n_orders: int) -> np.ndarray:
    """``planned`` (PLAN_FIELDS per account) then the first ``n_orders`` orders, flat, after the
    status: the number of plans (the kernel's result)."""
    out = np.empty(plans_start + planned.size + n_orders * ORDER_FIELDS)
    out[STATUS] = len(planned)
    out[plans_start:plans_start + planned.size] = planned.ravel()
    out[plans_start + planned.size:] = orders[:n_orders].ravel()
    return out


@_kernel
def _plan_batch(picked: np.ndarray, targets: np.ndarray, positions: Positions, chunk_fraction: float,
                greeks: InstrumentColumns, slippage: tuple[float, float, float], slippage_per_unit: np.ndarray,
                scenario_pnl: np.ndarray, weight: np.ndarray, underlyings: UnderlyingColumns, adaptive: np.ndarray,
                use_adaptive: bool, equity: np.ndarray, max_steps: int, rounds: Rounds,
                round_limits: RoundLimits) -> np.ndarray:
    """Every batch account's plan, flat: a status (``STATUS``: the number of plans, or an error
    code < 0 and nothing else when ``_batch_error`` refuses the batch), then per account
    ``PLAN_*`` fields, then every account's orders (``ORDER_*`` fields), account after account.
    ``PLAN_SENDS``: ``_round_sends`` of the accounts ``rounds`` checks (none when its first array is
    empty)."""
    position_start, instrument_idx, position_qty, underlying_idx, is_option = positions
    error = _batch_error(picked, targets, len(position_start) - 1)
    if error:
        return np.full(1, float(error))
    leg_start, leg_instrument, leg_underlying, qty, leg_chunk = _legs(picked, position_start, instrument_idx,
                                                                      underlying_idx, position_qty, chunk_fraction)
    delta, gamma, vega, units, index = greeks
    half_spread_vol_points, option_min_slippage_frac, linear_half_spread = slippage
    instrument = _instrument_rows(delta, gamma, vega, is_option, units, index, half_spread_vol_points,
                                  option_min_slippage_frac, linear_half_spread)
    if len(slippage_per_unit):
        instrument[INSTRUMENT_SLIPPAGE] = slippage_per_unit
    legs = (leg_instrument, leg_underlying, leg_chunk)
    market = (scenario_pnl, weight, instrument, _underlying_rows(underlyings), adaptive, use_adaptive)
    n_underlyings, n_scenarios = weight.shape
    rows_mm = np.empty(n_underlyings)
    rows = (np.empty((n_underlyings, n_scenarios)), np.empty((n_underlyings, ROW_FIELDS)), rows_mm,
            np.empty(n_scenarios))
    planned, orders, n = np.empty((len(picked), PLAN_FIELDS)), np.empty((max(16, 4 * len(qty)), ORDER_FIELDS)), 0
    for b in range(len(picked)):
        first, last = leg_start[b], leg_start[b + 1]
        for u in range(n_underlyings):
            _sum_row(u, first, last, qty, legs, market, rows)
            rows_mm[u] = _price_row(u, market, rows)
        mm_before, equity_before, opened = _account_total(rows_mm), equity[picked[b]], n
        orders, n, mm, equity_after = _search_account(first, last, qty, legs, market, rows, mm_before,
                                                      equity_before, targets[b], max_steps, orders, n)
        plan = planned[b]
        plan[PLAN_ACCOUNT], plan[PLAN_TARGET] = picked[b], targets[b]
        plan[PLAN_FIRST_ORDER], plan[PLAN_LAST_ORDER] = opened, n
        plan[PLAN_MAINTENANCE_BEFORE], plan[PLAN_EQUITY_BEFORE] = mm_before, equity_before
        plan[PLAN_MAINTENANCE_AFTER], plan[PLAN_EQUITY_AFTER] = mm, equity_after
        plan[PLAN_REACHED] = 1.0 if _ratio(mm, equity_after) <= targets[b] else 0.0
        checked = len(rounds[0]) > 0 and rounds[0][b]
        sends = checked and _round_sends(orders, opened, n, picked[b], positions, rounds, round_limits)
        plan[PLAN_SENDS] = 1.0 if sends else 0.0
    return _packed(planned, PLANS_START, orders, n)


def _floats(a: Sequence[float] | np.ndarray) -> np.ndarray:
    """``a`` as a writable, aligned, C-contiguous float64 array (copied only when it is not one):
    the array type ``warm`` compiles the kernel for."""
    if type(a) is np.ndarray and a.flags.carray and a.dtype == FLOAT64:
        return a
    a = np.ascontiguousarray(a, dtype=np.float64)
    return a if a.flags.writeable else a.copy()


def _ints(a: Sequence[int] | np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.int64)
    return a if a.flags.writeable else a.copy()


def _bools(a: Sequence[bool] | np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.bool_)
    return a if a.flags.writeable else a.copy()


class RoundCheck(NamedTuple):
    """What ``_plan_batch`` reads to tell whether a batch account's liquidation round at
    ``time_ms`` sends anything for the plan it makes (``ladder._round_orders``, ``PLAN_SENDS``):
    which batch accounts to check, per book row the ladder's distress start (NaN: none), per
    position of the book the account's quantity in flight on its instrument (0.0: none), per
    instrument whether its liquidations wait (its underlying or itself unreliable) and its mark,
    and the ladder's pacing parameters."""

    checked: Sequence[bool] | np.ndarray  # per batch account
    distress_since_ms: np.ndarray  # float64, per book row
    in_flight: np.ndarray  # float64, per position
    waits: np.ndarray  # bool, per instrument
    marks: np.ndarray  # float64, per instrument
    time_ms: float
    initial_share: float
    ramp_ms: float
    round_notional_usd: float
    min_notional_usd: float


_NO_ROUNDS: Rounds = (np.zeros(0, dtype=np.bool_), np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.bool_), np.zeros(0))
_NO_ROUND_LIMITS: RoundLimits = (0.0, 0.0, 1.0, 0.0, 0.0)


def _rounds(check: RoundCheck | None, n_picked: int, positions: Positions) -> tuple[Rounds, RoundLimits]:
    """``check`` as ``_plan_batch`` reads it (no account checked when None), for a batch of
    ``n_picked`` accounts on the book of ``positions``; a UserError unless it has one ``checked``
    per batch account, one distress start per book row, one quantity in flight per position and
    one wait flag and mark per instrument (the kernel indexes them unchecked)."""
    if check is None:
        return _NO_ROUNDS, _NO_ROUND_LIMITS
    position_start, instrument_idx, _, underlying_idx, _ = positions
    sizes = ((check.checked, n_picked), (check.distress_since_ms, len(position_start) - 1),
             (check.in_flight, len(instrument_idx)), (check.waits, len(underlying_idx)),
             (check.marks, len(underlying_idx)))
    if any(len(a) != n for a, n in sizes):
        raise UserError("round check: expected one entry per batch account, book row, position and instrument")
    return ((_bools(check.checked), _floats(check.distress_since_ms), _floats(check.in_flight), _bools(check.waits),
             _floats(check.marks)),
            (float(check.time_ms), float(check.initial_share), float(check.ramp_ms), float(check.round_notional_usd),
             float(check.min_notional_usd)))


class Resident(NamedTuple):
    """What the kernel reads of a book and its margin parameters that stays while they do, in the
    kernel's array types: the book's positions and instrument table (``Positions``), the scenario
    weights, the per-underlying charges (the last three ``UNDERLYING_*`` columns); the
    instruments' names; and ``_risk_arrays``' last result with the objects it was made of
    (None until it keeps one)."""

    positions: Positions
    weight: np.ndarray
    charges: tuple[np.ndarray, np.ndarray, np.ndarray]
    names: tuple[str, ...]
    last_risk: list[tuple[BookRisk, AdaptiveParams | None, RiskArrays] | None]  # one slot: None until one is kept


def resident(book: Book, grid: ScenarioGrid, charges: UnderlyingParams) -> Resident:
    """The ``Resident`` of ``book`` under ``grid`` and ``charges`` (a revaluation's ``grid`` and
    ``params``), made once and kept in ``book.derived`` while the last ``grid`` and ``charges``
    asked for are the same objects: its arrays come from the positions and the table alone and
    are never written after they are made, so the books ``Book.with_collateral`` makes (one each
    time a collateral asset's price moves) share it."""
    kept = book.derived.get(_RESIDENT)
    if isinstance(kept, tuple) and kept[0] is grid and kept[1] is charges:
        return kept[2]
    table = book.instruments
    positions = (_ints(book.position_start), _ints(book.instrument_idx), _floats(book.qty),
                 _ints(table.underlying_idx), _bools(table.is_option))
    made = Resident(positions, _floats(grid.weight), (_floats(charges.delta_charge_net),
                    _floats(charges.delta_charge_hedged), _floats(charges.short_option_charge)), table.names, [None])
    book.derived[_RESIDENT] = (grid, charges, made)
    return made


def plan_batch(book: Book, risk: BookRisk, picked: Sequence[int], targets: Sequence[float], chunk_fraction: float,
               slippage: tuple[float, float, float], slippage_per_unit: np.ndarray | None,
               realised_vol: np.ndarray, depth: np.ndarray, adaptive: AdaptiveParams | None,
               max_steps: int, check: RoundCheck | None = None) -> tuple[np.ndarray, Resident]:
    """``_plan_batch`` of the accounts ``picked`` (book indices) to ``targets``: the flat result
    ``liquidation_order`` unpacks into plans, and the ``Resident`` it read (its names). ``slippage``:
    the ``LiquidationParams`` the expected slippage per contract is priced from (option half spread
    in vol points, option minimum as a fraction of the index, linear half spread), unless
    ``slippage_per_unit`` gives it (one value per instrument). ``check``: the rounds to check
    (``PLAN_SENDS``; none when None)."""
    kept = resident(book, risk.grid, risk.params)
    return _plan_batch(*batch_inputs(kept, risk, picked, targets, chunk_fraction, slippage, slippage_per_unit,
                                     realised_vol, depth, adaptive, max_steps, check)), kept


def batch_inputs(kept: Resident, risk: BookRisk, picked: Sequence[int], targets: Sequence[float],
                 chunk_fraction: float, slippage: tuple[float, float, float], slippage_per_unit: np.ndarray | None,
                 realised_vol: np.ndarray, depth: np.ndarray, adaptive: AdaptiveParams | None,
                 max_steps: int, check: RoundCheck | None = None) -> tuple:
    """``_plan_batch``'s arguments (``plan_batch``'s): the resident arrays and the revaluation's, not
    copied when they already have the kernel's types."""
    greeks, (index, implied_vol), scenario_pnl, equity, table = _risk_arrays(kept, risk, adaptive)
    underlyings = (index, implied_vol, _floats(realised_vol), _floats(depth), *kept.charges)
    return (_ints(picked), _floats(targets), kept.positions, float(chunk_fraction), greeks, slippage,
            NO_SLIPPAGE if slippage_per_unit is None else _floats(slippage_per_unit), scenario_pnl,
            kept.weight, underlyings, table, adaptive is not None, equity, int(max_steps),
            *_rounds(check, len(picked), kept.positions))


# (Greeks and units, underlying index and implied vol, scenario PnL, equity, adaptive table)
RiskArrays = tuple[tuple[np.ndarray, ...], tuple[np.ndarray, np.ndarray], np.ndarray, np.ndarray, np.ndarray]


def _risk_arrays(kept: Resident, risk: BookRisk, adaptive: AdaptiveParams | None) -> RiskArrays:
    """``_plan_batch``'s arrays of ``risk`` (per instrument Greeks and units, the underlyings'
    index and implied vol, scenario PnL, equity) and ``adaptive_table(adaptive)``; the last ones
    (``kept.last_risk``, held per book) again while ``risk`` and ``adaptive`` are the same
    objects, if they were the risk's own arrays (not copies): a resident risk is rewritten in
    place tick after tick, so its arrays hold the tick's values."""
    last = kept.last_risk[0]
    if last is not None and last[0] is risk and last[1] is adaptive:
        return last[2]
    unit, inputs = risk.unit, risk.inputs
    sources = (unit.delta, unit.gamma, unit.vega, risk.units, inputs.index, inputs.underlying_index,
               inputs.underlying_vol, risk.scenario_pnl, risk.equity)
    made = [_floats(a) for a in sources]
    arrays = (tuple(made[:5]), (made[5], made[6]), made[7], made[8], adaptive_table(adaptive))
    if all(a is b for a, b in zip(made, sources)):
        kept.last_risk[0] = (risk, adaptive, arrays)  # one slot, read and written whole
    return arrays


@functools.cache
def adaptive_table(adaptive: AdaptiveParams | None) -> np.ndarray:
    """The adaptive parameters in ``ADAPTIVE_FIELDS`` order (zeros when there is no add-on); one
    array per parameters, shared: the kernels only read it."""
    if adaptive is None:
        return np.zeros(len(ADAPTIVE_FIELDS))
    return np.array([getattr(adaptive, name) for name in ADAPTIVE_FIELDS], dtype=np.float64)


def warm() -> None:
    """Compile the kernel (or load it from the cache) for the array types ``plan_batch`` passes,
    on a one-account book with an option and a future on one underlying."""
    one, two = np.ones(1), np.ones(2)
    positions = (_ints(np.array([0, 2])), _ints(np.array([0, 1])), _floats(np.array([-1.0, 1.0])), _ints(np.zeros(2)),
                 _bools(np.array([True, False])))
    _plan_batch(_ints(np.zeros(1)), _floats(0.5 * one), positions, 0.2,
                (_floats(np.array([0.5, 1.0])), _floats(np.array([0.01, 0.0])), _floats(two), _floats(two),
                 _floats(two)), (0.5, 0.0001, 0.0005), NO_SLIPPAGE, _floats(np.array([[-1.0, 0.5], [-0.1, 0.1]])),
                _floats(np.ones((1, 2))), tuple(_floats(np.array([v])) for v in (1.0, 0.5, 0.5, 1e6, 0.02, 0.01, 0.01)),
                adaptive_table(AdaptiveParams()), True, _floats(one), 10,
                *_rounds(RoundCheck(np.ones(1, dtype=np.bool_), np.zeros(1), np.zeros(2), np.zeros(2, dtype=np.bool_),
                                    two, 0, 0.2, 60_000, 1e5, 1e3), 1, positions))
