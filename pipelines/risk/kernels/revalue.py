"""Compiled revaluation: the per-account half of ``book.revalue_book`` and the engine's per-tick
screens over the revalued accounts, as numba kernels.

What is compiled is everything that is arithmetic on positions and rows: for each account
asked for, its positions' contributions to equity, Greeks, notionals and the scenario PnL of
its (account, underlying) rows, the row margin (worst weighted scenario, delta and
short-option charges, the adaptive add-on) and the account's sums and margin ratio; then time
to breach and the exposure throttle. The per-instrument pricing it reads (marks,
Greeks, scenario PnL) is ``kernels.pricing``'s: compiled arithmetic around numpy's exp, log and
power and scipy's ndtr, each called once per tick on a packed array (numba's libm rounds
differently from numpy's SIMD loops in about one call in twenty).

Contract: for every account revalued, every output equals the numpy reference bit for bit (the
same operations on the same operands in the same order: sums start at 0 and add positions in
book order, as the sparse product and ``bincount`` do; row sums over underlyings follow numpy's
pairwise summation; ``maximum``/``minimum`` return the second operand on ties and propagate NaN
as numpy's do). ``tests/risk/test_kernels_revalue.py`` holds the two to that on random books.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from pipelines.risk.kernels import pricing
from pipelines.risk.kernels.scalar import maximum, minimum

# numpy's float semantics: x / 0 is inf or NaN, never a ZeroDivisionError
_kernel = njit(cache=True, error_model="numpy")
_PAIRWISE_BLOCK = 128  # numpy's PW_BLOCKSIZE

# per-account fields (first axis of ``accounts_out``)
UPNL, EQUITY, BASE_MM, MM, IM, RATIO = range(6)
N_ACCOUNT_FIELDS = 6
# per-(account, underlying) rows (first axis of ``rows_out``)
(DELTA, GAMMA, VEGA, THETA, GROSS, NET, LOSS, WORST_PNL, DELTA_CHARGE, SHORT_CHARGE, ADDON) = range(11)
N_ROW_FIELDS = 11
# rows of ``revalue_accounts``' packed positions (``book.Book.position_values``)
P_QTY, P_COST_QTY, P_COST = range(3)
# adaptive parameters, in this order, for ``revalue_accounts``
ADAPTIVE_FIELDS = ("z", "base_horizon_days", "step_seconds", "participation", "vol_of_vol", "impact",
                   "max_multiplier")
YEAR_DAYS = 365.0


@_kernel
def _block_sum(values: np.ndarray, start: int, n: int) -> float:
    """numpy's pairwise sum of at most 128 terms: sequential from 0 under 8 terms, else eight
    interleaved partial sums combined as a tree, then the remainder."""
    if n < 8:
        total = 0.0
        for i in range(start, start + n):
            total += values[i]
        return total
    r0, r1, r2, r3 = values[start], values[start + 1], values[start + 2], values[start + 3]
    r4, r5, r6, r7 = values[start + 4], values[start + 5], values[start + 6], values[start + 7]
    i = 8
    while i < n - n % 8:
        j = start + i
        r0 += values[j]
        r1 += values[j + 1]
        r2 += values[j + 2]
        r3 += values[j + 3]
        r4 += values[j + 4]
        r5 += values[j + 5]
        r6 += values[j + 6]
        r7 += values[j + 7]
        i += 8
    total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        total += values[start + i]
        i += 1
    return total


@_kernel
def _pairwise_sum(values: np.ndarray, start: int, n: int) -> float:
    """numpy's ``add.reduce`` over ``values[start:start + n]``: blocks of at most 128 terms
    (``_block_sum``), larger ranges split in two at a multiple of 8 and the halves added.
    numpy recurses; this walks the same tree with a stack (numba cannot cache recursion)."""
    if n <= _PAIRWISE_BLOCK:
        return _block_sum(values, start, n)
    lo, count, phase = np.empty(64, np.int64), np.empty(64, np.int64), np.zeros(64, np.int64)
    left = np.empty(64)
    lo[0], count[0], top, result = start, n, 0, 0.0
    while top >= 0:
        half = count[top] // 2
        half -= half % 8
        if phase[top] == 0 and count[top] <= _PAIRWISE_BLOCK:
            result = _block_sum(values, lo[top], count[top])
            top -= 1
        elif phase[top] == 0:  # descend into the left half
            phase[top] = 1
            top += 1
            lo[top], count[top], phase[top] = lo[top - 1], half, 0
        elif phase[top] == 1:  # the left half is done: descend into the right half
            left[top], phase[top] = result, 2
            top += 1
            lo[top], count[top], phase[top] = lo[top - 1] + half, count[top - 1] - half, 0
        else:
            result = left[top] + result
            top -= 1
    return result


@_kernel
def _first_argmin(pnl: np.ndarray, weight: np.ndarray, n: int) -> tuple[int, float]:
    """``np.argmin`` of ``pnl * weight`` and the value there: the first NaN if there is one,
    else the first minimum; (0, 0.0) when there are no scenarios."""
    if n == 0:
        return 0, 0.0
    worst, lowest = 0, pnl[0] * weight[0]
    if math.isnan(lowest):
        return worst, lowest
    for s in range(1, n):  # one pass: the first NaN ends it (a NaN anywhere is the argmin)
        value = pnl[s] * weight[s]
        if value < lowest:  # false whenever either is NaN
            worst, lowest = s, value
        elif math.isnan(value):
            return s, value
    return worst, lowest


@_kernel
def margin_ratio_of(maintenance: float, equity: float) -> float:
    """``book.margin_ratio`` of one account: MM / equity, inf when equity <= 0 with a
    requirement, 0 with neither, inf when anything is NaN (fails closed)."""
    if equity > 0:
        ratio = maintenance / equity
    elif maintenance > 0:
        ratio = math.inf
    else:
        ratio = 0.0
    if math.isnan(maintenance) or math.isnan(equity) or math.isnan(ratio):
        return math.inf
    return ratio


@_kernel
def _adaptive_addon(gamma: float, vega: float, net_delta: float, gross: float, index: float, implied_vol: float,
                    realised_vol: float, depth: float, base_mm: float, p: np.ndarray) -> float:
    """``adaptive.adaptive_addon(...).total`` of one row; ``p`` in ``ADAPTIVE_FIELDS`` order."""
    z, base_horizon, step_seconds, participation, vol_of_vol, impact, max_multiplier = (p[0], p[1], p[2], p[3],
                                                                                        p[4], p[5], p[6])
    rv = realised_vol if math.isfinite(realised_vol) and realised_vol > 0 else 0.0
    sigma = maximum(rv, implied_vol)
    deep = not math.isfinite(depth) or depth <= 0
    safe_depth = 1.0 if deep else depth
    ratio = 0.0
    if participation > 0 and not deep:
        ratio = gross / (participation * safe_depth)
    horizon = base_horizon + step_seconds / 86_400.0 * ratio
    root = math.sqrt(horizon / YEAR_DAYS)
    move = z * sigma * root
    vol_move = z * vol_of_vol * sigma * root
    shock = index * move
    gamma_addon = 0.5 * maximum(-gamma, 0.0) * (shock * shock)
    vega_addon = maximum(-vega, 0.0) * 100.0 * vol_move
    delta_notional = abs(net_delta) * index
    slippage = 0.0 if deep else impact * delta_notional * math.sqrt(delta_notional / safe_depth)
    raw = gamma_addon + vega_addon + slippage
    return minimum(raw, (max_multiplier - 1.0) * base_mm)


@_kernel
def revalue_accounts(
    accounts: np.ndarray,  # (k,) int64: the accounts to revalue
    position_start: np.ndarray,  # (n_acc + 1,) int64: account a's positions are start[a]:start[a + 1]
    instrument_idx: np.ndarray,  # per position
    positions: np.ndarray,  # (3, n_positions): qty, cost_qty, cost (``Book.position_values``)
    collateral: np.ndarray,  # (n_acc,)
    ints: np.ndarray,  # (3, n_instr) ``pricing.PricingLayout.ints``: kind, underlying, expiry
    floats: np.ndarray,  # (N_FLOAT_FIELDS, n_instr) ``PricingLayout.floats``: its INVERSE row is read
    instruments: np.ndarray,  # (N_INSTRUMENT_FIELDS, n_instr) ``pricing.price``'s: index, unit Greeks, units
    underlying: np.ndarray,  # (N_UNDERLYING_FIELDS, n_und) ``pricing.price``'s: index, vol, realised vol, depth
    scenario_pnl: np.ndarray,  # (n_instr, S)
    weight: np.ndarray,  # (n_und, S) ``PricingLayout.weight``
    charges: np.ndarray,  # (4, n_und) ``PricingLayout.charges``: pricing.C_* rows
    adaptive: np.ndarray,  # ADAPTIVE_FIELDS, or empty for no add-on
    accounts_out: np.ndarray,  # (N_ACCOUNT_FIELDS, n_acc): NaN but at ``accounts``
    rows_out: np.ndarray,  # (N_ROW_FIELDS, n_acc, n_und): NaN but at ``accounts``
    worst_out: np.ndarray,  # (n_acc, n_und) int64: -1 but at ``accounts``
) -> None:
    """Equity, Greeks, notionals, scenario margin, add-on, MM, IM and margin ratio of each
    account in ``accounts``: what ``book._account_rows_numpy`` computes for every account, from
    the per-instrument pricing of ``kernels.pricing`` (cost in each instrument's settlement
    currency, converted at the index for an inverse one: ``book._cost_usd``). The arguments are
    packed arrays: a compiled call pays its dispatch per argument.

    Longer than 80 lines on purpose: one compiled loop over accounts whose scratch rows are
    allocated once per call and whose sums run in ``book``'s order, so results match it bit for
    bit (``tests/risk/test_kernels_revalue.py``); its three steps are numbered in comments."""
    accounts_out[:] = np.nan
    rows_out[:] = np.nan
    worst_out[:] = -1
    n_und, n_scen = weight.shape
    row_pnl = np.empty((n_und, n_scen))
    acc = np.empty((9, n_und))  # delta, gamma, vega, theta, net, long, short, short units, gross
    mm_rows = np.empty(n_und)
    im_rows = np.empty(n_und)
    addon_rows = np.empty(n_und)
    for a in accounts:
        row_pnl[:] = 0.0
        acc[:] = 0.0
        upnl = 0.0
        # 1. positions: P&L, Greeks, notionals and scenario P&L netted per underlying
        for p in range(position_start[a], position_start[a + 1]):
            i = instrument_idx[p]
            u = ints[pricing.UNDERLYING, i]
            q = positions[P_QTY, p]
            index, units, delta = (instruments[pricing.I_INDEX, i], instruments[pricing.UNITS, i],
                                   instruments[pricing.DELTA, i])
            fx = index if floats[pricing.INVERSE, i] != 0.0 else 1.0
            upnl += positions[P_COST_QTY, p] * instruments[pricing.PRICE, i] - positions[P_COST, p] * fx
            notional = index * units
            acc[0, u] += q * delta
            acc[1, u] += q * instruments[pricing.GAMMA, i]
            acc[2, u] += q * instruments[pricing.VEGA, i]
            acc[3, u] += q * instruments[pricing.THETA, i]
            acc[4, u] += q * notional
            position_delta = q * delta
            acc[5, u] += maximum(position_delta, 0.0)
            acc[6, u] += maximum(-position_delta, 0.0)
            acc[7, u] += (maximum(-q, 0.0) if ints[pricing.KIND, i] == pricing.OPTION else 0.0) * units
            acc[8, u] += abs(q) * notional
            for s in range(n_scen):
                row_pnl[u, s] += q * scenario_pnl[i, s]
        equity = collateral[a] + upnl
        # 2. per underlying: the worst weighted scenario, delta and short-option charges, add-on
        for u in range(n_und):
            worst, lowest = _first_argmin(row_pnl[u], weight[u], n_scen)
            loss = maximum(-lowest, 0.0)
            s_index = underlying[pricing.U_INDEX, u]
            hedged = minimum(acc[5, u], acc[6, u])
            charge = (charges[pricing.C_NET, u] * abs(acc[0, u]) + charges[pricing.C_HEDGED, u] * hedged) * s_index
            short_charge = charges[pricing.C_SHORT, u] * acc[7, u] * s_index
            mm = loss + charge + short_charge
            addon = 0.0
            if adaptive.size:
                addon = _adaptive_addon(acc[1, u], acc[2, u], acc[0, u], acc[8, u], s_index,
                                        underlying[pricing.U_VOL, u], underlying[pricing.U_REALISED, u],
                                        underlying[pricing.U_DEPTH, u], mm, adaptive)
            mm_rows[u] = mm
            addon_rows[u] = addon
            im_rows[u] = mm / charges[pricing.C_MM_TO_IM, u] + addon / charges[pricing.C_MM_TO_IM, u]
            rows_out[DELTA, a, u] = acc[0, u]
            rows_out[GAMMA, a, u] = acc[1, u]
            rows_out[VEGA, a, u] = acc[2, u]
            rows_out[THETA, a, u] = acc[3, u]
            rows_out[NET, a, u] = acc[4, u]
            rows_out[GROSS, a, u] = acc[8, u]
            rows_out[LOSS, a, u] = loss
            rows_out[WORST_PNL, a, u] = row_pnl[u, worst] if n_scen else 0.0
            rows_out[DELTA_CHARGE, a, u] = charge
            rows_out[SHORT_CHARGE, a, u] = short_charge
            rows_out[ADDON, a, u] = addon
            worst_out[a, u] = worst
        # 3. the account: margins summed in numpy's pairwise order, and the margin ratio
        base_mm = _pairwise_sum(mm_rows, 0, n_und)
        maintenance = base_mm + _pairwise_sum(addon_rows, 0, n_und)
        accounts_out[UPNL, a] = upnl
        accounts_out[EQUITY, a] = equity
        accounts_out[BASE_MM, a] = base_mm
        accounts_out[MM, a] = maintenance
        accounts_out[IM, a] = _pairwise_sum(im_rows, 0, n_und)
        accounts_out[RATIO, a] = margin_ratio_of(maintenance, equity)


@_kernel
def time_to_breach(slack: float, a: float, b: float) -> float:
    """``ladder.times_to_breach_ms`` of one account: the smallest positive root of
    slack + b t + a t^2 = 0; 0 when already breached, inf when not losing."""
    if slack <= 0:
        return 0.0
    if abs(a) < 1e-18:
        return slack / -b if b < 0 else math.inf
    disc = b * b - 4 * a * slack
    if not disc >= 0:
        return math.inf
    q = -0.5 * (b + math.copysign(math.sqrt(disc), b))
    r1, r2 = q / a, slack / q
    if r1 > 0:
        return min(r1, r2) if r2 > 0 else r1
    return r2 if r2 > 0 else math.inf


@_kernel
def time_to_breach_row(equity: np.ndarray, maintenance: np.ndarray, delta: np.ndarray, gamma: np.ndarray,
                       velocity: np.ndarray, r: int) -> float:
    """Time to breach (ms) of account ``r`` if each underlying's index keeps its ``velocity``
    (USD/ms): ``time_to_breach`` with a = sum gamma v^2 / 2, b = sum delta v, summed in the
    underlyings' order as ``Engine._times_to_breach`` does."""
    a = 0.0
    b = 0.0
    for k in range(len(velocity)):
        v = velocity[k]
        a = a + 0.5 * gamma[r, k] * v * v
        b = b + delta[r, k] * v
    return time_to_breach(equity[r] - maintenance[r], a, b)


@_kernel
def exposures_picked(rows: np.ndarray, slow: np.ndarray, ratio: np.ndarray, equity: np.ndarray,
                     maintenance: np.ndarray, initial: np.ndarray, codes: np.ndarray, state: int,
                     last_time: np.ndarray, last_ratio: np.ndarray, time_ms: float, interval_ms: float,
                     ratio_step: float) -> tuple[np.ndarray, np.ndarray]:
    """Which of ``rows`` get an exposure snapshot: looked at (``slow``), or their last snapshot is
    ``interval_ms`` old, or their ratio moved ``ratio_step`` since it (NaN counts as moved). Those
    rows in order, and per row its equity, maintenance, initial margin, ratio and ``codes[r,
    state]``; their ``last_time`` and ``last_ratio`` are then set to ``time_ms`` and the ratio."""
    picked = np.empty(len(rows), dtype=np.int64)
    k = 0
    for j, r in enumerate(rows):
        if slow[j] or time_ms - last_time[r] >= interval_ms or not abs(ratio[r] - last_ratio[r]) < ratio_step:
            picked[k] = r
            k += 1
    values = np.empty((k, 5))
    for j in range(k):
        r = picked[j]
        values[j, 0], values[j, 1], values[j, 2] = equity[r], maintenance[r], initial[r]
        values[j, 3], values[j, 4] = ratio[r], codes[r, state]
        last_time[r], last_ratio[r] = time_ms, ratio[r]
    return picked[:k], values


def warm() -> None:
    """Compile (or load from the on-disk cache) every kernel of this module with the argument
    types its callers pass (read-only grid arrays included), by revaluing a one-account book
    through ``book.revalue_book`` and throttling its exposures and raising its margin ratio as
    the engine does."""
    from pipelines.risk.adaptive import AdaptiveParams
    from pipelines.risk.book import Portfolio, Position, account_risk
    from pipelines.risk.market import MarketState, UnderlyingMarket

    portfolio = Portfolio("warm", 1_000.0, (Position("BTC-PERPETUAL", 1.0), Position("BTC-1JAN30-50000-C", -1.0)))
    market = MarketState(0, {"BTC": UnderlyingMarket(50_000.0, 0.5)})
    for adaptive in (None, AdaptiveParams()):
        _, risk = account_risk(portfolio, market, adaptive=adaptive)
    rows = np.zeros(1, dtype=np.int64)
    exposures_picked(rows, np.zeros(1, dtype=np.bool_), risk.margin_ratio, risk.equity, risk.maintenance, risk.initial,
                     np.zeros((1, 2)), 1, np.zeros(1), np.zeros(1), 0.0, 1.0, 1.0)
    margin_ratio_of(risk.maintenance[0], risk.equity[0])  # the engine's penalty add-ons call it alone
