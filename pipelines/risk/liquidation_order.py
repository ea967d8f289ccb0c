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
from collections.abc import Sequence

import numpy as np

from pipelines.errors import UserError
from pipelines.risk.adaptive import AdaptiveParams, MarketConditions, adaptive_addon
from pipelines.risk.book import Book, BookRisk
from pipelines.risk.margin import row_margin


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


@dataclasses.dataclass(frozen=True)
class CloseOrder:
    """Trade ``qty`` (opposite sign to the position) of ``instrument``."""

    instrument: str
    qty: float
    slippage_usd: float
    maintenance_after: float
    equity_after: float
    margin_ratio_after: float


@dataclasses.dataclass(frozen=True)
class LiquidationPlan:
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
    index = risk.inputs.index * table.contract_size
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
) -> LiquidationPlan:
    """Orders that bring account ``account`` (index into ``book.accounts``) to ``target_ratio``."""
    return plan_liquidations(book, risk, [account], [target_ratio], params, slippage_per_unit, adaptive,
                             conditions)[0]


def plan_liquidations(
    book: Book,
    risk: BookRisk,
    accounts: Sequence[int],
    target_ratios: Sequence[float],
    params: LiquidationParams | None = None,
    slippage_per_unit: np.ndarray | None = None,
    adaptive: AdaptiveParams | None = None,
    conditions: MarketConditions | None = None,
) -> list[LiquidationPlan]:
    """``plan_liquidation`` for many accounts at once, each to its own target ratio.

    Why batched: in a crash hundreds of accounts need a plan in the same revaluation, and the
    greedy search is dozens of small numpy calls per step; run one account at a time it was
    most of the engine's time in a crash (BENCHMARKS.md). Here every step advances all unfinished
    accounts together: each account's state lives in its own (account, underlying) rows, each
    candidate chunk changes only its own row, and each account takes its own best chunk. An
    account's plan is the same, to the bit, whether it is planned alone or with others: the
    same sums in the same order.
    """
    params = params or LiquidationParams()
    targets = np.asarray(target_ratios, dtype=np.float64)
    picked = np.asarray(accounts, dtype=np.int64)
    if not (np.isfinite(targets).all() and (targets > 0).all()):
        raise UserError("target_ratio: expected a positive number")
    if len(np.unique(picked)) != len(picked) or len(picked) != len(targets):
        raise UserError("plan_liquidations: one target per account, each account once")
    slip_unit = expected_slippage_per_unit(book, risk, params) if slippage_per_unit is None \
        else np.asarray(slippage_per_unit, dtype=np.float64)
    n_acc, n_und = len(picked), book.n_underlyings
    slot = np.full(len(book.accounts), -1, dtype=np.int64)
    slot[picked] = np.arange(n_acc)
    legs = np.flatnonzero((slot[book.account_idx] >= 0) & (book.qty != 0))
    legs = legs[np.argsort(slot[book.account_idx[legs]], kind="stable")]  # grouped by account, book order within
    owner = slot[book.account_idx[legs]]  # batch position of each leg's account
    ins = book.instrument_idx[legs]
    und = book.instruments.underlying_idx[ins]
    row = owner * n_und + und  # the leg's (account, underlying) state row
    n_rows = n_acc * n_und
    row_und = np.tile(np.arange(n_und), n_acc)
    qty = book.qty[legs].copy()
    chunk = params.chunk_fraction * np.abs(qty)
    unit, inp = risk.unit, risk.inputs
    M = risk.scenario_pnl[ins]  # (legs, S)
    d, g, v = unit.delta[ins], unit.gamma[ins], unit.vega[ins]
    opt = book.instruments.is_option[ins]
    cs = book.instruments.contract_size[ins]
    notional_unit = inp.index[ins] * cs
    rv, depth = (conditions or MarketConditions()).arrays(book.instruments.underlyings)
    weights = risk.grid.weight
    u_index = inp.underlying_index

    def rows_state(q: np.ndarray) -> dict[str, np.ndarray]:
        """Per-(account, underlying) row aggregates for leg quantities q."""
        def agg(values: np.ndarray) -> np.ndarray:
            return np.bincount(row, weights=values, minlength=n_rows)
        pnl = np.zeros((n_rows, M.shape[1]))
        np.add.at(pnl, row, q[:, None] * M)
        pos_d = q * d
        return {"pnl": pnl, "delta": agg(pos_d), "long": agg(np.maximum(pos_d, 0)), "short": agg(np.maximum(-pos_d, 0)),
                "short_opt": agg(np.where(opt, np.maximum(-q, 0) * cs, 0.0)), "gamma": agg(q * g),
                "vega": agg(q * v), "gross": agg(np.abs(q) * notional_unit)}

    def mm_of(pnl, delta, long_, short, short_opt, gamma, vega, gross, rows) -> np.ndarray:
        rm = row_margin(pnl, weights[rows], delta, long_, short, short_opt, u_index[rows], risk.params, rows)
        mm = rm.maintenance
        if adaptive is not None:
            mm = mm + adaptive_addon(gamma, vega, delta, gross, u_index[rows], inp.underlying_vol[rows], rv[rows],
                                     depth[rows], rm.maintenance, adaptive).total
        return mm

    def row_mm(state: dict[str, np.ndarray]) -> np.ndarray:
        return mm_of(state["pnl"], state["delta"], state["long"], state["short"], state["short_opt"],
                     state["gamma"], state["vega"], state["gross"], row_und)

    equity = risk.equity[picked].astype(np.float64)
    state = rows_state(qty)
    current_rows = row_mm(state)
    mm = current_rows.reshape(n_acc, n_und).sum(axis=1)  # equals risk.maintenance when called with the same adaptive
    mm_before, equity_before = mm.copy(), equity.copy()
    orders: list[list[CloseOrder]] = [[] for _ in range(n_acc)]
    done = np.zeros(n_acc, dtype=bool)

    for _ in range(params.max_steps):
        active = ~done & ~(_ratios(mm, equity) <= targets)
        open_ = np.abs(qty) > 1e-12
        has_open = np.bincount(owner, weights=open_, minlength=n_acc) > 0
        done |= active & ~has_open
        active &= has_open
        if not active.any():
            break
        ls = np.flatnonzero(active[owner])  # the legs of the accounts still stepping
        q, op, rr = qty[ls], open_[ls], row[ls]
        step = np.where(op, np.minimum(chunk[ls], np.abs(q)), 0.0)
        dq = -np.sign(q) * step
        new_q = q + dq
        # Each candidate changes only its own (account, underlying) row.
        pnl = state["pnl"][rr] + dq[:, None] * M[ls]
        delta = state["delta"][rr] + dq * d[ls]
        long_ = state["long"][rr] + np.maximum(new_q * d[ls], 0) - np.maximum(q * d[ls], 0)
        short = state["short"][rr] + np.maximum(-new_q * d[ls], 0) - np.maximum(-q * d[ls], 0)
        short_opt = state["short_opt"][rr] + np.where(opt[ls], (np.maximum(-new_q, 0) - np.maximum(-q, 0)) * cs[ls], 0.0)
        gamma = state["gamma"][rr] + dq * g[ls]
        vega = state["vega"][rr] + dq * v[ls]
        gross = state["gross"][rr] + (np.abs(new_q) - np.abs(q)) * notional_unit[ls]
        new_rows = mm_of(pnl, delta, np.maximum(long_, 0), np.maximum(short, 0), np.maximum(short_opt, 0),
                         gamma, vega, np.maximum(gross, 0), und[ls])
        removed = current_rows[rr] - new_rows
        cost = step * slip_unit[ins[ls]]
        score = np.where(op, removed / np.maximum(cost, 1e-12), -np.inf)
        best = _first_argmax_per_group(score, owner[ls], n_acc)  # per stepping account: index into ls, or -1
        stepping = np.flatnonzero(active)
        chosen = best[stepping]
        moves = chosen >= 0
        done[stepping[~moves]] = True  # no chunk lowers its margin any more
        stepping, chosen = stepping[moves], chosen[moves]
        if not len(stepping):
            break
        j = ls[chosen]
        qty[j] = np.where(np.abs(new_q[chosen]) > 1e-12, new_q[chosen], 0.0)
        equity[stepping] -= cost[chosen]
        state = rows_state(qty)
        current_rows = row_mm(state)
        mm = current_rows.reshape(n_acc, n_und).sum(axis=1)
        names = book.instruments.instruments
        for a, k in zip(stepping.tolist(), chosen.tolist()):
            name, m, e = names[ins[ls[k]]].name, float(mm[a]), float(equity[a])
            own = orders[a]
            if own and own[-1].instrument == name:
                prev = own.pop()
                own.append(CloseOrder(name, prev.qty + float(dq[k]), prev.slippage_usd + float(cost[k]), m, e,
                                      _ratio(m, e)))
            else:
                own.append(CloseOrder(name, float(dq[k]), float(cost[k]), m, e, _ratio(m, e)))
    return [LiquidationPlan(book.accounts[a], float(targets[b]), tuple(orders[b]),
                            bool(_ratio(float(mm[b]), float(equity[b])) <= targets[b]), float(mm_before[b]),
                            float(equity_before[b]), float(mm[b]), float(equity[b]))
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
