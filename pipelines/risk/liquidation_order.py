"""Greek-aware liquidation ordering: which legs to close first, and how much.

Policy (docs/risk-model.md): close the account in chunks (``chunk_fraction`` of each leg's
starting size, Hyperliquid's 20 % per step by default). At each step, for every leg, price
the chunk exactly as the margin engine would: the maintenance margin the account would have
after closing it (scenario loss, delta and short-option charges and, when asked for, the
adaptive add-on), divided by the chunk's expected slippage. Close the chunk with the largest
margin removed per USD of slippage; repeat until ``MM / equity <= target_ratio`` (equity net
of the slippage spent) or no chunk lowers the margin any more.

Why not pro rata: in a short-gamma book most of the scenario loss sits in a few legs (the
short near-dated options); closing everything pro rata pays the spread on the hedges too, and
closing a hedge *raises* the margin. Scoring each chunk by its own margin effect closes the
worst gamma/vega legs first and leaves hedges for last (a hedge scores negative while the
option it hedges is still on).

Slippage model (per contract): options half a spread quoted in vol, ``half_spread_vol_points x
vega``, at least ``option_min_slippage_frac x index`` (Deribit's option tick, 0.0001 of the
underlying); futures and perpetuals ``linear_half_spread x index``. Callers with better
estimates (from the live book) pass ``slippage_per_unit``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from pipelines.errors import UserError
from pipelines.risk.adaptive import AdaptiveParams, MarketConditions, adaptive_addon
from pipelines.risk.book import Book, BookRisk
from pipelines.risk.kernels import planner
from pipelines.risk.margin import UnderlyingParams, row_margin


@dataclasses.dataclass(frozen=True)
class LiquidationParams:
    chunk_fraction: float = 0.20  # Hyperliquid: 20 % of a large position per step
    option_half_spread_vol_points: float = 0.5  # ours: a 1-vol-point wide option market
    option_min_slippage_frac: float = 0.0001  # Deribit option tick: 0.0001 of the underlying
    linear_half_spread: float = 0.0005  # ours: 5 bp half-spread on futures and perpetuals
    max_steps: int = 10_000

    def __post_init__(self) -> None:
        if not 0 < self.chunk_fraction <= 1:
            raise UserError("liquidation parameter chunk_fraction: must be in (0, 1]")


DEFAULT_PARAMS = LiquidationParams()  # the planner's parameters when none are given (frozen: one instance serves)


class CloseOrder(NamedTuple):
    """Trade ``qty`` (opposite sign to the position) of ``instrument``. A named tuple: every
    plan the engine makes in a crash makes a few."""

    instrument: str
    qty: float
    slippage_usd: float
    maintenance_after: float
    equity_after: float
    margin_ratio_after: float


class LiquidationPlan(NamedTuple):
    """Account ``account``'s close orders towards ``target_ratio`` and its margin and equity before
    and after them. A named tuple: the engine makes one per account in distress a tick."""

    account: str
    target_ratio: float
    orders: tuple[CloseOrder, ...]
    reached: bool
    maintenance_before: float
    equity_before: float
    maintenance_after: float
    equity_after: float

    @property
    def margin_ratio_after(self) -> float:
        return self.maintenance_after / self.equity_after if self.equity_after > 0 else float("inf")


def expected_slippage_per_unit(book: Book, risk: BookRisk, params: LiquidationParams) -> np.ndarray:
    """USD cost of closing one contract of each instrument (see the module docstring)."""
    table = book.instruments
    index = risk.inputs.index * risk.units
    option = np.maximum(params.option_half_spread_vol_points * risk.unit.vega, params.option_min_slippage_frac * index)
    return np.where(table.is_option, option, params.linear_half_spread * index)


def plan_liquidation(
    book: Book,
    risk: BookRisk,
    account: int,
    target_ratio: float,
    params: LiquidationParams | None = None,
    slippage_per_unit: np.ndarray | None = None,
    adaptive: AdaptiveParams | None = None,
    conditions: MarketConditions | None = None,
    compiled: bool = True,
) -> LiquidationPlan:
    """Orders that bring account ``account`` (index into ``book.accounts``) to ``target_ratio``."""
    return plan_liquidations(book, risk, [account], [target_ratio], params, slippage_per_unit, adaptive,
                             conditions, compiled)[0]


def plan_liquidations(
    book: Book,
    risk: BookRisk,
    accounts: Sequence[int],
    target_ratios: Sequence[float],
    params: LiquidationParams | None = None,
    slippage_per_unit: np.ndarray | None = None,
    adaptive: AdaptiveParams | None = None,
    conditions: MarketConditions | None = None,
    compiled: bool = True,
) -> list[LiquidationPlan]:
    """``plan_liquidation`` for many accounts at once, each to its own target ratio.

    Every account's search reads and changes only its own (account, underlying) rows, so an
    account's plan is the same, to the bit, whether it is planned alone or with others.
    ``compiled`` runs the search in the numba kernel (``kernels.planner``), otherwise in the numpy
    reference (``_greedy_search``); the two make the same plans, to the bit.
    """
    params = params or DEFAULT_PARAMS
    slip_unit = None if slippage_per_unit is None else _slippage_per_unit(book, slippage_per_unit)
    if compiled:
        packed, kept = _compiled_batch(book, risk, accounts, target_ratios, params, slip_unit, adaptive, conditions)
        return _unpacked(packed, kept.names, book.accounts)
    realised_vol, depth = (conditions or MarketConditions()).arrays(book.instruments.underlyings)
    picked, targets = _checked_batch(accounts, target_ratios, len(book.accounts))
    if slip_unit is None:
        slip_unit = expected_slippage_per_unit(book, risk, params)
    legs = _legs_of(book, picked, params.chunk_fraction)
    pricing = _Pricing.of(risk, book, legs, slip_unit, realised_vol, depth, adaptive)
    equity = risk.equity[picked].astype(np.float64)
    search = _greedy_search(legs, pricing, equity, targets, params.max_steps)
    return _plans_of(book, picked, targets, equity, search)


_BATCH_ERRORS = {planner.BAD_TARGET: "target_ratio: expected a positive number",
                 planner.ACCOUNT_OUT_OF_RANGE: "plan_liquidations: account index out of range",
                 planner.ACCOUNT_REPEATED: "plan_liquidations: one target per account, each account once"}


def _checked_batch(accounts: Sequence[int], target_ratios: Sequence[float],
                   n_accounts: int) -> tuple[np.ndarray, np.ndarray]:
    """(account indices, target ratios) as arrays; a UserError unless every target is a positive
    number and every account an index into the book's ``n_accounts``, once, with one target (the
    errors ``kernels.planner`` reports, in its order)."""
    picked, targets = np.asarray(accounts, dtype=np.int64), np.asarray(target_ratios, dtype=np.float64)
    if len(picked) != len(targets):
        raise UserError(_BATCH_ERRORS[planner.ACCOUNT_REPEATED])
    if not all(math.isfinite(t) and t > 0 for t in targets.tolist()):
        raise UserError(_BATCH_ERRORS[planner.BAD_TARGET])
    if not all(0 <= a < n_accounts for a in picked.tolist()):
        raise UserError(_BATCH_ERRORS[planner.ACCOUNT_OUT_OF_RANGE])
    if len(set(picked.tolist())) != len(picked):
        raise UserError(_BATCH_ERRORS[planner.ACCOUNT_REPEATED])
    return picked, targets


def _slippage_per_unit(book: Book, slippage_per_unit: np.ndarray) -> np.ndarray:
    """The caller's USD slippage per contract as float64, one per instrument, or a UserError."""
    slip = np.asarray(slippage_per_unit, dtype=np.float64)
    if slip.shape != (len(book.instruments),):
        raise UserError("slippage_per_unit: expected one value per instrument")
    return slip


def _compiled_batch(book: Book, risk: BookRisk, accounts: Sequence[int], target_ratios: Sequence[float],
                    params: LiquidationParams, slip_unit: np.ndarray | None, adaptive: AdaptiveParams | None,
                    conditions: MarketConditions | None,
                    check: planner.RoundCheck | None = None) -> tuple[np.ndarray, planner.Resident]:
    """``planner.plan_batch`` of the batch under ``params`` and ``conditions`` (none: no add-on
    inputs), its rounds checked where ``check`` asks."""
    realised_vol, depth = (conditions or MarketConditions()).arrays(book.instruments.underlyings)
    slippage = (params.option_half_spread_vol_points, params.option_min_slippage_frac, params.linear_half_spread)
    return planner.plan_batch(book, risk, accounts, target_ratios, params.chunk_fraction, slippage, slip_unit,
                              realised_vol, depth, adaptive, params.max_steps, check)


def plan_rounds(book: Book, risk: BookRisk, accounts: Sequence[int], target_ratios: Sequence[float],
                check: planner.RoundCheck, adaptive: AdaptiveParams | None = None,
                conditions: MarketConditions | None = None) -> tuple[list[LiquidationPlan | None], list[bool]]:
    """``plan_liquidations`` (compiled, default parameters) with the rounds ``check`` asks for
    checked in the kernel: per account its plan, None where its round was checked and sends
    nothing (that plan is never unpacked), and whether its round sends anything (False where
    not checked): ``Ladder.round_orders`` non-empty on the plan's orders, at ``check``'s in-flight
    quantities, marks, unreliable instruments and time."""
    packed, kept = _compiled_batch(book, risk, accounts, target_ratios, DEFAULT_PARAMS, None, adaptive, conditions,
                                   check)
    plans, orders = _fields(packed)
    sends = [row[planner.PLAN_SENDS] > 0 for row in plans]
    return ([_plan(row, orders, kept.names, book.accounts) if send or not asked else None
             for row, send, asked in zip(plans, sends, check.checked)], sends)


def _unpacked(packed: np.ndarray, names: tuple[str, ...], accounts: tuple[str, ...]) -> list[LiquidationPlan]:
    """``planner.plan_batch``'s flat result as plans (its error code as a UserError)."""
    plans, orders = _fields(packed)
    return [_plan(row, orders, names, accounts) for row in plans]


def _fields(packed: np.ndarray) -> tuple[list[list[float]], np.ndarray]:
    """``planner.plan_batch``'s flat result as its plans' ``PLAN_*`` rows and its orders (``ORDER_*``
    by order), or its error code as a UserError."""
    n_plans = int(packed[planner.STATUS])
    if n_plans < 0:
        raise UserError(_BATCH_ERRORS[n_plans])
    first_order = planner.PLANS_START + planner.PLAN_FIELDS * n_plans
    plans = packed[planner.PLANS_START:first_order].reshape(n_plans, planner.PLAN_FIELDS).tolist()
    return plans, packed[first_order:].reshape(-1, planner.ORDER_FIELDS)


def _plan(row: list[float], orders: np.ndarray, names: tuple[str, ...], accounts: tuple[str, ...]) -> LiquidationPlan:
    """The plan of one ``PLAN_*`` row with its orders: the fields are in ``LiquidationPlan``'s and
    ``CloseOrder``'s order, so the tuples are made from the rows as they are (``tuple.__new__``,
    as a named tuple's ``_make``)."""
    account, target, first, last, reached, mm_before, equity_before, mm_after, equity_after, _ = row
    new = tuple.__new__
    made = tuple(new(CloseOrder, (names[int(k)], qty, cost, mm, equity, ratio))
                 for k, qty, cost, mm, equity, ratio in orders[int(first):int(last)].tolist())
    return new(LiquidationPlan, (accounts[int(account)], target, made, reached > 0, mm_before, equity_before,
                                 mm_after, equity_after))


@dataclasses.dataclass(frozen=True, eq=False)
class _Legs:
    """The non-zero positions of the accounts being planned, grouped by the account's position in
    the batch (``owner``, ascending), in book order within an account."""

    owner: np.ndarray  # batch position of the leg's account
    start: np.ndarray  # (n_accounts + 1,): the legs of batch account b are start[b]:start[b + 1]
    instrument: np.ndarray  # index into the instrument table
    underlying: np.ndarray
    row: np.ndarray  # owner * n_underlyings + underlying: the leg's (account, underlying) state row
    qty: np.ndarray  # the starting position
    chunk: np.ndarray  # the most one step closes: chunk_fraction x |starting position|
    n_accounts: int
    n_underlyings: int


def _legs_of(book: Book, picked: np.ndarray, chunk_fraction: float) -> _Legs:
    n_acc, n_und = len(picked), book.n_underlyings
    slot = np.full(len(book.accounts), -1, dtype=np.int64)
    slot[picked] = np.arange(n_acc)
    position_owner = slot[book.account_idx]
    legs = np.flatnonzero((position_owner >= 0) & (book.qty != 0))
    legs = legs[np.argsort(position_owner[legs], kind="stable")]
    owner = position_owner[legs]
    instrument = book.instrument_idx[legs]
    underlying = book.instruments.underlying_idx[instrument]
    qty = book.qty[legs]
    return _Legs(owner, np.searchsorted(owner, np.arange(n_acc + 1)), instrument, underlying,
                 owner * n_und + underlying, qty, chunk_fraction * np.abs(qty), n_acc, n_und)


@dataclasses.dataclass(frozen=True, eq=False)
class _Pricing:
    """What the margin of an (account, underlying) row and a chunk's cost depend on: per leg,
    its instrument's per-contract terms; per underlying, the market and the margin parameters."""

    scenario_pnl: np.ndarray  # (legs, S) per-contract PnL under each scenario
    delta: np.ndarray
    gamma: np.ndarray
    vega: np.ndarray
    is_option: np.ndarray
    contract_size: np.ndarray  # underlying units per contract (BookRisk.units)
    notional: np.ndarray  # index x units
    slippage: np.ndarray  # USD per contract closed
    weight: np.ndarray  # (n_und, S) scenario weights
    index: np.ndarray  # (n_und,)
    implied_vol: np.ndarray
    realised_vol: np.ndarray
    depth: np.ndarray
    charges: UnderlyingParams
    adaptive: AdaptiveParams | None

    @classmethod
    def of(cls, risk: BookRisk, book: Book, legs: _Legs, slip_unit: np.ndarray, realised_vol: np.ndarray,
           depth: np.ndarray, adaptive: AdaptiveParams | None) -> _Pricing:
        ins, unit, table = legs.instrument, risk.unit, book.instruments
        return cls(risk.scenario_pnl[ins], unit.delta[ins], unit.gamma[ins], unit.vega[ins], table.is_option[ins],
                   risk.units[ins], risk.inputs.index[ins] * risk.units[ins], slip_unit[ins],
                   risk.grid.weight, risk.inputs.underlying_index, risk.inputs.underlying_vol, realised_vol, depth,
                   risk.params, adaptive)


@dataclasses.dataclass(frozen=True, eq=False)
class _RowState:
    """Sums over the legs of (account, underlying) rows, the inputs of the row's margin."""

    pnl: np.ndarray  # (rows, S)
    delta: np.ndarray
    long: np.ndarray  # sum of positive position deltas
    short: np.ndarray  # sum of |negative position deltas|
    short_option: np.ndarray  # short option contracts x contract size
    gamma: np.ndarray
    vega: np.ndarray
    gross: np.ndarray  # gross notional

    def at(self, rows: np.ndarray) -> _RowState:
        return _RowState(*(getattr(self, f.name)[rows] for f in dataclasses.fields(self)))


def _row_sums(legs: _Legs, pricing: _Pricing, qty: np.ndarray) -> _RowState:
    """Every row's sums for leg positions ``qty``, each a sum over the row's legs in leg order."""
    n_rows = legs.n_accounts * legs.n_underlyings

    def by_row(values: np.ndarray) -> np.ndarray:
        return np.bincount(legs.row, weights=values, minlength=n_rows)

    pnl = np.zeros((n_rows, pricing.scenario_pnl.shape[1]))
    np.add.at(pnl, legs.row, qty[:, None] * pricing.scenario_pnl)
    position_delta = qty * pricing.delta
    short_option = np.where(pricing.is_option, np.maximum(-qty, 0) * pricing.contract_size, 0.0)
    return _RowState(pnl, by_row(position_delta), by_row(np.maximum(position_delta, 0)),
                     by_row(np.maximum(-position_delta, 0)), by_row(short_option), by_row(qty * pricing.gamma),
                     by_row(qty * pricing.vega), by_row(np.abs(qty) * pricing.notional))


def _rows_maintenance(state: _RowState, underlying: np.ndarray, pricing: _Pricing) -> np.ndarray:
    """Maintenance margin of each row (``underlying``: the row's underlying), the adaptive add-on
    included when the pricing has one: as ``revalue_book`` prices it."""
    index = pricing.index[underlying]
    base = row_margin(state.pnl, pricing.weight[underlying], state.delta, state.long, state.short,
                      state.short_option, index, pricing.charges, underlying).maintenance
    if pricing.adaptive is None:
        return base
    return base + adaptive_addon(state.gamma, state.vega, state.delta, state.gross, index,
                                 pricing.implied_vol[underlying], pricing.realised_vol[underlying],
                                 pricing.depth[underlying], base, pricing.adaptive).total


def _account_totals(rows_mm: np.ndarray, n_accounts: int, n_underlyings: int) -> np.ndarray:
    """Each account's sum of its rows, added in underlying order (the compiled kernel's order)."""
    per_account = rows_mm.reshape(n_accounts, n_underlyings)
    total = np.zeros(n_accounts)
    for u in range(n_underlyings):
        total = total + per_account[:, u]
    return total


@dataclasses.dataclass(frozen=True, eq=False)
class GreedySearch:
    """The steps a search took, grouped by account (ascending) and in order within an account, and
    each batch account's margin and equity around them."""

    step_account: np.ndarray  # batch position of the account that took the step
    step_instrument: np.ndarray
    step_qty: np.ndarray  # the chunk traded (opposite sign to the position)
    step_cost: np.ndarray  # its slippage, USD
    step_maintenance: np.ndarray  # the account's maintenance margin after the step
    step_equity: np.ndarray  # the account's equity after the step
    maintenance_before: np.ndarray
    maintenance_after: np.ndarray
    equity_after: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class _Candidates:
    """One chunk per leg of the accounts taking a step, scored by margin removed per USD of slippage."""

    legs: np.ndarray  # index into the legs
    qty: np.ndarray  # the chunk traded
    qty_after: np.ndarray  # the leg's position after it
    cost: np.ndarray
    score: np.ndarray  # -inf for a leg already closed


def _greedy_search(legs: _Legs, pricing: _Pricing, equity: np.ndarray, targets: np.ndarray,
                   max_steps: int) -> GreedySearch:
    """The numpy reference of the search: every step advances all unfinished accounts together,
    each taking its own best chunk."""
    qty, equity = legs.qty.copy(), equity.copy()
    all_underlyings = np.tile(np.arange(legs.n_underlyings), legs.n_accounts)
    state = _row_sums(legs, pricing, qty)
    rows_mm = _rows_maintenance(state, all_underlyings, pricing)
    mm = _account_totals(rows_mm, legs.n_accounts, legs.n_underlyings)
    mm_before = mm.copy()
    done = np.zeros(legs.n_accounts, dtype=bool)
    steps: list[tuple[np.ndarray, ...]] = []
    for _ in range(max_steps):
        stepping = _accounts_to_step(legs, qty, mm, equity, targets, done)
        if not len(stepping):
            break
        candidates = _candidate_chunks(legs, pricing, qty, state, rows_mm, stepping)
        best = _first_argmax_per_group(candidates.score, legs.owner[candidates.legs], legs.n_accounts)[stepping]
        done[stepping[best < 0]] = True  # no chunk lowers its margin any more
        stepping, best = stepping[best >= 0], best[best >= 0]
        if not len(stepping):
            break
        chosen = candidates.legs[best]
        qty[chosen] = np.where(np.abs(candidates.qty_after[best]) > 1e-12, candidates.qty_after[best], 0.0)
        equity[stepping] -= candidates.cost[best]
        state = _row_sums(legs, pricing, qty)
        rows_mm = _rows_maintenance(state, all_underlyings, pricing)
        mm = _account_totals(rows_mm, legs.n_accounts, legs.n_underlyings)
        steps.append((stepping, legs.instrument[chosen], candidates.qty[best], candidates.cost[best], mm[stepping],
                      equity[stepping]))
    if not steps:
        return GreedySearch(*(np.zeros(0, dtype=np.int64),) * 2, *(np.zeros(0),) * 4, mm_before, mm, equity)
    columns = [np.concatenate(column) for column in zip(*steps)]
    by_account = np.argsort(columns[0], kind="stable")
    account, instrument, qty, cost, maintenance, equity_after_step = (column[by_account] for column in columns)
    return GreedySearch(account, instrument, qty, cost, maintenance, equity_after_step, mm_before, mm, equity)


def _accounts_to_step(legs: _Legs, qty: np.ndarray, mm: np.ndarray, equity: np.ndarray, targets: np.ndarray,
                      done: np.ndarray) -> np.ndarray:
    """Batch positions of the accounts that take a step now: not done, above their target and
    with a leg still open. An account above its target with nothing open is marked done."""
    above = ~done & ~(_ratios(mm, equity) <= targets)
    has_open = np.bincount(legs.owner, weights=np.abs(qty) > 1e-12, minlength=legs.n_accounts) > 0
    done |= above & ~has_open
    return np.flatnonzero(above & has_open)


def _candidate_chunks(legs: _Legs, pricing: _Pricing, qty: np.ndarray, state: _RowState, rows_mm: np.ndarray,
                      stepping: np.ndarray) -> _Candidates:
    """Close one chunk of each leg of the ``stepping`` accounts, each on its own: the row's margin
    after it, and its score. A chunk changes only its own (account, underlying) row."""
    stepping_mask = np.zeros(legs.n_accounts, dtype=bool)
    stepping_mask[stepping] = True
    cand = np.flatnonzero(stepping_mask[legs.owner])
    q, rows = qty[cand], legs.row[cand]
    is_open = np.abs(q) > 1e-12
    size = np.where(is_open, np.minimum(legs.chunk[cand], np.abs(q)), 0.0)
    dq = -np.sign(q) * size
    after = q + dq
    delta = pricing.delta[cand]
    before_rows = state.at(rows)
    is_option = pricing.is_option[cand]
    short_option_change = np.where(is_option, (np.maximum(-after, 0) - np.maximum(-q, 0)) * pricing.contract_size[cand],
                                   0.0)
    after_rows = _RowState(
        before_rows.pnl + dq[:, None] * pricing.scenario_pnl[cand],
        before_rows.delta + dq * delta,
        np.maximum(before_rows.long + np.maximum(after * delta, 0) - np.maximum(q * delta, 0), 0),
        np.maximum(before_rows.short + np.maximum(-after * delta, 0) - np.maximum(-q * delta, 0), 0),
        np.maximum(before_rows.short_option + short_option_change, 0),
        before_rows.gamma + dq * pricing.gamma[cand],
        before_rows.vega + dq * pricing.vega[cand],
        np.maximum(before_rows.gross + (np.abs(after) - np.abs(q)) * pricing.notional[cand], 0))
    removed = rows_mm[rows] - _rows_maintenance(after_rows, legs.underlying[cand], pricing)
    cost = size * pricing.slippage[cand]
    score = np.where(is_open, removed / np.maximum(cost, 1e-12), -np.inf)
    return _Candidates(cand, dq, after, cost, score)


def _plans_of(book: Book, picked: np.ndarray, targets: np.ndarray, equity_before: np.ndarray,
              search: GreedySearch) -> list[LiquidationPlan]:
    """The search's steps as close orders: an account's consecutive steps on one instrument make
    one order, their quantities and costs added in step order, with the margin and equity after
    the last of them."""
    names = book.instruments.instruments
    orders: list[list[CloseOrder]] = [[] for _ in range(len(picked))]

    def place(b: int, k: int, qty: float, cost: float, m: float, e: float) -> None:
        orders[b].append(CloseOrder(names[k].name, qty, cost, m, e, _ratio(m, e)))

    merging: tuple | None = None  # (account, instrument, qty, cost, margin, equity) of the order being merged
    for step in zip(search.step_account.tolist(), search.step_instrument.tolist(), search.step_qty.tolist(),
                    search.step_cost.tolist(), search.step_maintenance.tolist(), search.step_equity.tolist()):
        if merging is not None and merging[:2] == step[:2]:
            merging = (*step[:2], merging[2] + step[2], merging[3] + step[3], *step[4:])
        else:
            if merging is not None:
                place(*merging)
            merging = step
    if merging is not None:
        place(*merging)
    mm_after, equity_after = search.maintenance_after.tolist(), search.equity_after.tolist()
    return [LiquidationPlan(book.accounts[a], float(targets[b]), tuple(orders[b]),
                            bool(_ratio(mm_after[b], equity_after[b]) <= targets[b]),
                            float(search.maintenance_before[b]), float(equity_before[b]), mm_after[b], equity_after[b])
            for b, a in enumerate(picked.tolist())]


def _ratio(m: float, e: float) -> float:
    return m / e if e > 0 else (float("inf") if m > 0 else 0.0)


def _ratios(mm: np.ndarray, equity: np.ndarray) -> np.ndarray:
    """``_ratio`` elementwise."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(equity > 0, mm / np.where(equity > 0, equity, 1.0), np.where(mm > 0, np.inf, 0.0))


def _first_argmax_per_group(score: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """For each group id (``group`` sorted ascending), the index of its first maximal score if
    that score is > 0, else -1 — ``np.argmax`` per group then the greedy's ``score > 0`` test
    (a NaN maximum, which ``np.argmax`` would pick, fails that test too)."""
    out = np.full(n_groups, -1, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    top = np.maximum.reduceat(score, starts)  # NaN if the group has a NaN
    good = top > 0
    hit = np.flatnonzero(score == np.repeat(top, np.diff(np.r_[starts, len(score)])))
    first = hit[np.r_[True, group[hit][1:] != group[hit][:-1]]] if len(hit) else hit
    out[group[first]] = first
    out[group[starts[~good]]] = -1
    return out
