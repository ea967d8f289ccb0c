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
    params = params or LiquidationParams()
    if not np.isfinite(target_ratio) or target_ratio <= 0:
        raise UserError("target_ratio: expected a positive number")
    slip_unit = expected_slippage_per_unit(book, risk, params) if slippage_per_unit is None \
        else np.asarray(slippage_per_unit, dtype=np.float64)
    n_und = book.n_underlyings
    legs = np.flatnonzero((book.account_idx == account) & (book.qty != 0))
    ins = book.instrument_idx[legs]
    und = book.instruments.underlying_idx[ins]
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
        """Per-underlying row aggregates of this account for leg quantities q."""
        def agg(values: np.ndarray) -> np.ndarray:
            return np.bincount(und, weights=values, minlength=n_und)
        pnl = np.zeros((n_und, M.shape[1]))
        np.add.at(pnl, und, q[:, None] * M)
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
        rows = np.arange(n_und)
        return mm_of(state["pnl"], state["delta"], state["long"], state["short"], state["short_opt"],
                     state["gamma"], state["vega"], state["gross"], rows)

    equity = float(risk.equity[account])
    state = rows_state(qty)
    current_rows = row_mm(state)
    mm = mm_before = float(current_rows.sum())  # equals risk.maintenance when called with the same adaptive
    equity_before = equity
    orders: list[CloseOrder] = []

    def ratio(m: float, e: float) -> float:
        return m / e if e > 0 else (float("inf") if m > 0 else 0.0)

    for _ in range(params.max_steps):
        if ratio(mm, equity) <= target_ratio:
            break
        open_ = np.abs(qty) > 1e-12
        if not open_.any():
            break
        step = np.where(open_, np.minimum(chunk, np.abs(qty)), 0.0)
        dq = -np.sign(qty) * step  # (legs,)
        new_q = qty + dq
        # Each candidate changes only its own underlying's row.
        pnl = state["pnl"][und] + dq[:, None] * M
        delta = state["delta"][und] + dq * d
        long_ = state["long"][und] + np.maximum(new_q * d, 0) - np.maximum(qty * d, 0)
        short = state["short"][und] + np.maximum(-new_q * d, 0) - np.maximum(-qty * d, 0)
        short_opt = state["short_opt"][und] + np.where(opt, (np.maximum(-new_q, 0) - np.maximum(-qty, 0)) * cs, 0.0)
        gamma = state["gamma"][und] + dq * g
        vega = state["vega"][und] + dq * v
        gross = state["gross"][und] + (np.abs(new_q) - np.abs(qty)) * notional_unit
        new_rows = mm_of(pnl, delta, np.maximum(long_, 0), np.maximum(short, 0), np.maximum(short_opt, 0),
                         gamma, vega, np.maximum(gross, 0), und)
        removed = current_rows[und] - new_rows
        cost = step * slip_unit[ins]
        score = np.where(open_, removed / np.maximum(cost, 1e-12), -np.inf)
        best = int(np.argmax(score))
        if not score[best] > 0:
            break
        qty[best] = new_q[best] if abs(new_q[best]) > 1e-12 else 0.0
        state = rows_state(qty)
        current_rows = row_mm(state)
        mm = float(current_rows.sum())
        equity -= float(cost[best])
        name = book.instruments.instruments[ins[best]].name
        if orders and orders[-1].instrument == name:
            prev = orders.pop()
            orders.append(CloseOrder(name, prev.qty + float(dq[best]), prev.slippage_usd + float(cost[best]),
                                     mm, equity, ratio(mm, equity)))
        else:
            orders.append(CloseOrder(name, float(dq[best]), float(cost[best]), mm, equity, ratio(mm, equity)))
    return LiquidationPlan(book.accounts[account], target_ratio, tuple(orders), ratio(mm, equity) <= target_ratio,
                           mm_before, equity_before, mm, equity)
