"""Batch revaluation of many accounts: the API the stream workers call.

A :class:`Book` is flat arrays of positions (account index, instrument index, quantity,
average price) plus collateral per account. :func:`revalue_book` turns a book and a market
state into :class:`BookRisk`: arrays of equity, maintenance and initial margin, margin ratio
and per-underlying Greeks for every account at once.

Why this shape: the expensive part, pricing options under ~35 scenarios, depends only on the
instrument. It is done once per unique instrument (``margin.scenario_matrix``); every
account's scenario PnL is then one sparse (rows x instruments) @ (instruments x scenarios)
product, rows being (account, underlying) pairs. 10,000 accounts x 20 positions is a 200,000
non-zero sparse product, not 200,000 option revaluations per scenario. That per-account half
runs by default in a numba kernel (``kernels.revalue``: one pass over each account's positions,
only for the accounts asked for); the numpy code is its reference, with the same results.

:func:`account_risk` (one account, dict results) is a thin wrapper over the batch path, so
there is one way margin is computed.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import threading
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from pipelines.errors import UserError
from pipelines.risk.adaptive import AdaptiveAddon, AdaptiveParams, MarketConditions, adaptive_addon
from pipelines.risk.black76 import Greeks
from pipelines.risk.exposure import Exposure, compute_exposure
from pipelines.risk.instruments import InstrumentTable, parse_instrument
from pipelines.risk.kernels import pricing
from pipelines.risk.kernels import revalue as kernel
from pipelines.risk.margin import (
    MarginConfig,
    RowMargin,
    ScenarioGrid,
    UnderlyingParams,
    grid_and_params,
    row_margin,
    scenario_matrix,
)
from pipelines.risk.market import InstrumentInputs, MarketState
from pipelines.risk.valuation import quote_value, settlement_fx, unit_greeks, units_per_contract, usd_marks


@dataclasses.dataclass(frozen=True)
class Position:
    instrument: str
    qty: float
    avg_price: float | None = None  # None: at mark (no unrealised PnL)


@dataclasses.dataclass(frozen=True)
class Portfolio:
    account: str
    collateral_usd: float
    positions: tuple[Position, ...]


@dataclasses.dataclass(frozen=True, eq=False)
class Book:
    """Positions of many accounts as flat arrays, netted per (account, instrument).

    ``cost_qty`` / ``cost`` carry the average prices: unrealised PnL of a netted position is
    ``cost_qty * mark - cost`` (positions given without an average price are at mark and add
    nothing to either). ``cost`` is in each instrument's settlement currency (coin for inverse
    ones: ``valuation.quote_value`` of the average price); ``revalue_book`` converts it at the
    index. Positions are sorted by (account, instrument). ``rows`` is
    ``account * n_underlyings + underlying``; ``matrix`` the sparse (rows x instruments) net
    quantity matrix (the numpy reference's layout, built on first use; the compiled kernel walks
    each account's positions from ``position_start`` instead).
    """

    accounts: tuple[str, ...]
    collateral: np.ndarray
    instruments: InstrumentTable
    account_idx: np.ndarray
    instrument_idx: np.ndarray
    qty: np.ndarray
    cost_qty: np.ndarray
    cost: np.ndarray
    rows: np.ndarray
    position_start: np.ndarray  # (n_acc + 1,): account a's positions are [start[a], start[a + 1])

    @property
    def n_underlyings(self) -> int:
        return len(self.instruments.underlyings)

    @functools.cached_property
    def matrix(self) -> sp.csr_matrix:
        """The sparse (rows x instruments) net quantity matrix, built on first use and kept (only
        the numpy reference reads it; a book made by ``dataclasses.replace`` builds its own)."""
        shape = (len(self.accounts) * self.n_underlyings, len(self.instruments))
        return sp.csr_matrix((self.qty, (self.rows, self.instrument_idx)), shape=shape)

    @functools.cached_property
    def derived(self) -> dict[str, object]:
        """Callers' caches of what they derive from the positions and the instrument table alone
        (never the collateral), kept with the book and shared by the books ``with_collateral``
        makes from it (``kernels.planner.resident``)."""
        return {}

    def with_collateral(self, collateral: np.ndarray) -> Book:
        """The same positions with ``collateral`` (USD per account): what was derived from the
        positions (``matrix``, ``position_values``, ``derived``) is carried over, not made again
        each time a collateral asset's price moves."""
        book = dataclasses.replace(self, collateral=collateral)
        carried = {name: value for name, value in vars(self).items() if name in _POSITIONS_DERIVED}
        vars(book).update(carried)  # the cached properties' own store (the dataclass is frozen)
        return book

    @functools.cached_property
    def position_values(self) -> np.ndarray:
        """``qty``, ``cost_qty`` and ``cost`` as the rows of one (3, n_positions) float array, made
        on first use and kept (the compiled revaluation's form: one argument instead of three)."""
        return np.array((self.qty, self.cost_qty, self.cost), dtype=np.float64).reshape(3, len(self.qty))

    @classmethod
    def from_arrays(
        cls,
        accounts: Sequence[str],
        collateral: np.ndarray,
        instruments: InstrumentTable,
        account_idx: np.ndarray,
        instrument_idx: np.ndarray,
        qty: np.ndarray,
        avg_price: np.ndarray | None = None,
    ) -> Book:
        """Build from raw positions; duplicates of (account, instrument) are netted.
        ``avg_price`` NaN (or None for all) means the position is at mark."""
        collateral = np.asarray(collateral, dtype=np.float64)
        account_idx = np.asarray(account_idx, dtype=np.int64)
        instrument_idx = np.asarray(instrument_idx, dtype=np.int64)
        qty = np.asarray(qty, dtype=np.float64)
        avg = np.full(len(qty), np.nan) if avg_price is None else np.asarray(avg_price, dtype=np.float64)
        n_acc, n_instr = len(accounts), len(instruments)
        if collateral.shape != (n_acc,) or not np.isfinite(collateral).all():
            raise UserError("collateral_usd: expected one finite number per account")
        if not (account_idx.shape == instrument_idx.shape == qty.shape == avg.shape):
            raise UserError("positions: account, instrument, qty and avg_price arrays differ in length")
        if len(qty) and (account_idx.min() < 0 or account_idx.max() >= n_acc
                         or instrument_idx.min() < 0 or instrument_idx.max() >= n_instr):
            raise UserError("positions: account or instrument index out of range")
        if not np.isfinite(qty).all():
            raise UserError("positions.qty: expected finite numbers")
        if np.isinf(avg).any():
            raise UserError("positions.avg_price: expected finite numbers")
        has_cost = ~np.isnan(avg)
        key = account_idx * n_instr + instrument_idx
        uniq, inverse = np.unique(key, return_inverse=True)
        m = len(uniq)
        net_qty = _sums(inverse, qty, m)
        # Netting round-off (1 + 0.99999 - 1 - 0.99999) must not leave a phantom position.
        gross_qty = _sums(inverse, np.abs(qty), m)
        net_qty[np.abs(net_qty) <= 1e-12 * gross_qty] = 0.0
        cost_qty = _sums(inverse, np.where(has_cost, qty, 0.0), m)
        cost = _sums(inverse, np.where(has_cost, qty * quote_value(instruments, instrument_idx,
                                                                   np.where(has_cost, avg, 1.0)), 0.0), m)
        acc = uniq // max(n_instr, 1)
        ins = uniq % max(n_instr, 1)
        n_und = len(instruments.underlyings)
        rows = acc * n_und + instruments.underlying_idx[ins]
        start = np.searchsorted(acc, np.arange(n_acc + 1)).astype(np.int64)
        return cls(tuple(accounts), collateral, instruments, acc, ins, net_qty, cost_qty, cost, rows, start)

    @classmethod
    def from_portfolios(cls, portfolios: Sequence[Portfolio], instruments: InstrumentTable | None = None) -> Book:
        """Parse instrument names (unless a table is given) and build the book."""
        if instruments is None:
            names = sorted({p.instrument for pf in portfolios for p in pf.positions})
            instruments = InstrumentTable.of(parse_instrument(n) for n in names)
        where = instruments.index()
        acc, ins, qty, avg = [], [], [], []
        for a, pf in enumerate(portfolios):
            for k, p in enumerate(pf.positions):
                if p.instrument not in where:
                    raise UserError(f"positions[{k}].instrument: {p.instrument!r} is not in the instrument table")
                acc.append(a)
                ins.append(where[p.instrument])
                qty.append(p.qty)
                avg.append(math.nan if p.avg_price is None else p.avg_price)
        return cls.from_arrays([pf.account for pf in portfolios], np.array([pf.collateral_usd for pf in portfolios]),
                               instruments, np.array(acc, dtype=np.int64), np.array(ins, dtype=np.int64),
                               np.array(qty, dtype=np.float64), np.array(avg, dtype=np.float64))


def _sums(groups: np.ndarray, weights: np.ndarray, n: int) -> np.ndarray:
    """``weights`` summed per group, float64 even with no weights at all (where ``np.bincount``
    answers int64: the kernel would need another compiled specialisation for it)."""
    return np.bincount(groups, weights=weights, minlength=n).astype(np.float64, copy=False)


# Book's cached properties made from its positions and table alone (``Book.with_collateral`` carries them)
_POSITIONS_DERIVED = frozenset({"matrix", "position_values", "derived"})


@dataclasses.dataclass(frozen=True, eq=False)
class BookRisk:
    """Risk of every account in a book. Per-account arrays have shape (n_acc,); per-underlying
    arrays (n_acc, n_und), columns in ``underlyings`` order. ``maintenance`` includes the
    adaptive add-on when one was asked for (``base_maintenance`` never does)."""

    accounts: tuple[str, ...]
    underlyings: tuple[str, ...]
    equity: np.ndarray
    unrealised_pnl: np.ndarray
    base_maintenance: np.ndarray
    maintenance: np.ndarray
    initial: np.ndarray
    margin_ratio: np.ndarray  # maintenance / equity; inf when equity <= 0 and there is a requirement
    delta: np.ndarray
    gamma: np.ndarray
    vega: np.ndarray
    theta: np.ndarray
    gross_notional: np.ndarray
    net_notional: np.ndarray
    scenario_loss: np.ndarray
    worst_scenario: np.ndarray  # column into grid (per underlying)
    worst_pnl: np.ndarray  # unweighted PnL of the worst weighted scenario
    delta_charge: np.ndarray
    short_option_charge: np.ndarray
    adaptive_addon: np.ndarray
    # Per-instrument results, reused by liquidation ordering and position reports.
    unit: Greeks
    units: np.ndarray  # underlying units per contract (valuation.units_per_contract)
    marks: np.ndarray  # USD per contract as an order's notional (valuation.usd_marks)
    inputs: InstrumentInputs
    scenario_pnl: np.ndarray  # (n_instr, S) per-contract PnL
    grid: ScenarioGrid
    params: UnderlyingParams

    @property
    def liquidatable(self) -> np.ndarray:
        return self.margin_ratio >= 1.0

    @classmethod
    def of_fields(cls, **fields: object) -> BookRisk:
        """The risk of exactly ``fields`` (every field, by name), built without the frozen
        dataclass' per-field ``__setattr__``: the compiled revaluation builds one a tick."""
        if fields.keys() != _RISK_FIELDS:
            raise TypeError(f"BookRisk fields missing or unknown: {sorted(_RISK_FIELDS.symmetric_difference(fields))}")
        risk = object.__new__(cls)
        vars(risk).update(fields)
        return risk


_RISK_FIELDS = frozenset(f.name for f in dataclasses.fields(BookRisk))


def margin_ratio(maintenance: np.ndarray, equity: np.ndarray) -> np.ndarray:
    """MM / equity; at or above 1 the account is liquidatable. Equity <= 0 with any requirement
    is infinitely over; no requirement and no equity is 0 (nothing to liquidate).

    Fails closed: an account whose margin or equity is NaN is infinitely over too. Every
    comparison with NaN is false, so a NaN ratio would pass every threshold and the account
    would drop out of the ladder's sight; finite inputs can still overflow (a position of 1e300
    contracts at a valid price; an index of 1e200, which validation refuses, makes a short
    perpetual's equity -1e200 and its scenario margin inf - inf)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = maintenance / equity
    ratio = np.where(equity > 0, ratio, np.where(maintenance > 0, np.inf, 0.0))
    return np.where(np.isnan(maintenance) | np.isnan(equity) | np.isnan(ratio), np.inf, ratio)


DEFAULT_CONFIG = MarginConfig()  # one object: the layouts and grids cached per config are made once for it


def revalue_book(
    book: Book,
    market: MarketState,
    config: MarginConfig | None = None,
    adaptive: AdaptiveParams | None = None,
    conditions: MarketConditions | None = None,
    *,
    compiled: bool = True,
    accounts: np.ndarray | None = None,
    resident: ResidentRisk | None = None,
) -> BookRisk:
    """Equity, margin and Greeks of every account (or of ``accounts``, indices into
    ``book.accounts``: the others' entries are then NaN, their ``worst_scenario`` -1). Adaptive
    add-on only when ``adaptive`` is set. ``compiled``: the pricing and the per-account work in the
    numba kernels (``kernels.pricing``, ``kernels.revalue``: a few calls per tick) or in their numpy
    reference (``valuation``, ``margin``, ``exposure``); the results are the same, bit for bit.
    ``resident`` (compiled only): the risk is ``resident``'s, rewritten by its next call (see
    ``ResidentRisk``); None: the caller's own."""
    config = config or DEFAULT_CONFIG
    if compiled:
        return _revalue_compiled(book, market, config, adaptive, conditions or MarketConditions(), accounts,
                                 resident)
    table = book.instruments
    inp = market.inputs(table)
    unit = unit_greeks(table, inp)
    units = units_per_contract(table, inp)
    pnl_matrix, grid = scenario_matrix(table, inp, config, unit.price)
    params = grid_and_params(table.underlyings, config)[1]
    priced = _Pricing(inp, unit, units, _cost_usd(book, inp), pnl_matrix, grid, params, adaptive,
                      *(conditions or MarketConditions()).arrays(table.underlyings))
    rows = _account_rows_numpy(book, priced, accounts)
    return BookRisk(accounts=book.accounts, underlyings=table.underlyings,
                    **{f.name: getattr(rows, f.name) for f in dataclasses.fields(rows)},
                    unit=unit, units=units, marks=usd_marks(table, inp, unit, units), inputs=inp,
                    scenario_pnl=pnl_matrix, grid=grid, params=params)


def _cost_usd(book: Book, inp: InstrumentInputs) -> np.ndarray:
    """Each netted position's cost in USD: an inverse instrument's coin cost at the index (so its
    unrealised PnL is its coin PnL converted at the index), a linear one's as it is."""
    if not book.instruments.inverse.any():
        return book.cost
    return book.cost * settlement_fx(book.instruments, inp)[book.instrument_idx]


@dataclasses.dataclass(frozen=True, eq=False)
class _Pricing:
    """What an account's risk is computed from besides its positions: the per-instrument prices
    and scenario PnL, the grid and parameters per underlying, the adaptive inputs."""

    inputs: InstrumentInputs
    unit: Greeks
    units: np.ndarray  # underlying units per contract
    cost: np.ndarray  # per netted position, USD
    scenario_pnl: np.ndarray
    grid: ScenarioGrid
    params: UnderlyingParams
    adaptive: AdaptiveParams | None
    realised_vol: np.ndarray
    depth: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class _AccountRows:
    """The per-account fields of ``BookRisk``."""

    equity: np.ndarray
    unrealised_pnl: np.ndarray
    base_maintenance: np.ndarray
    maintenance: np.ndarray
    initial: np.ndarray
    margin_ratio: np.ndarray
    delta: np.ndarray
    gamma: np.ndarray
    vega: np.ndarray
    theta: np.ndarray
    gross_notional: np.ndarray
    net_notional: np.ndarray
    scenario_loss: np.ndarray
    worst_scenario: np.ndarray
    worst_pnl: np.ndarray
    delta_charge: np.ndarray
    short_option_charge: np.ndarray
    adaptive_addon: np.ndarray


def _account_rows_numpy(book: Book, priced: _Pricing, accounts: np.ndarray | None) -> _AccountRows:
    """The reference: every account through sparse products and row-wise numpy, then the
    accounts not asked for blanked."""
    table, inp, unit, params = book.instruments, priced.inputs, priced.unit, priced.params
    n_acc, n_und = len(book.accounts), book.n_underlyings
    exp = compute_exposure(book.matrix, book.rows, book.account_idx, book.instrument_idx, book.qty,
                           book.cost_qty, priced.cost, book.collateral, unit, inp, table.is_option,
                           priced.units)
    row_pnl = book.matrix @ priced.scenario_pnl  # (n_acc * n_und, S)
    und = np.tile(np.arange(n_und), n_acc)
    index_rows = inp.underlying_index[und]
    rm: RowMargin = row_margin(row_pnl, priced.grid.weight[und], exp.delta, exp.long_delta, exp.short_delta,
                               exp.short_option_units, index_rows, params, und)
    addon = np.zeros(n_acc * n_und)
    if priced.adaptive is not None:
        rv, depth = priced.realised_vol, priced.depth
        add: AdaptiveAddon = adaptive_addon(exp.gamma, exp.vega, exp.delta, exp.gross_notional, index_rows,
                                            inp.underlying_vol[und], rv[und], depth[und], rm.maintenance,
                                            priced.adaptive)
        addon = add.total
    worst_pnl = np.take_along_axis(row_pnl, rm.worst_scenario[:, None], axis=1)[:, 0] if row_pnl.shape[1] \
        else np.zeros(n_acc * n_und)

    def per_row(a: np.ndarray) -> np.ndarray:
        return a.reshape(n_acc, n_und)

    base_mm = per_row(rm.maintenance).sum(axis=1)
    mm = base_mm + per_row(addon).sum(axis=1)
    im = per_row(rm.initial + addon / params.mm_to_im[und]).sum(axis=1)
    rows = _AccountRows(
        equity=exp.equity, unrealised_pnl=exp.unrealised_pnl, base_maintenance=base_mm, maintenance=mm, initial=im,
        margin_ratio=margin_ratio(mm, exp.equity), delta=per_row(exp.delta), gamma=per_row(exp.gamma),
        vega=per_row(exp.vega), theta=per_row(exp.theta), gross_notional=per_row(exp.gross_notional),
        net_notional=per_row(exp.net_notional), scenario_loss=per_row(rm.scenario_loss),
        worst_scenario=per_row(rm.worst_scenario), worst_pnl=per_row(worst_pnl), delta_charge=per_row(rm.delta_charge),
        short_option_charge=per_row(rm.short_option_charge), adaptive_addon=per_row(addon),
    )
    # np.bincount over no positions is int64 even with weights: an empty book's fields are float too
    rows = _AccountRows(**{f.name: getattr(rows, f.name) if f.name == "worst_scenario"
                           else np.asarray(getattr(rows, f.name), dtype=np.float64) for f in dataclasses.fields(rows)})
    if accounts is None:
        return rows
    others = np.ones(n_acc, dtype=bool)
    others[accounts] = False
    for f in dataclasses.fields(rows):
        getattr(rows, f.name)[others] = -1 if f.name == "worst_scenario" else np.nan
    return rows


class _CompiledOutputs:
    """The arrays the compiled revaluation of one book's accounts under one pricing layout writes
    (``pricing.price``'s and ``revalue_accounts``'), and the ``BookRisk`` of views of them."""

    def __init__(self, accounts: tuple[str, ...], lay: pricing.PricingLayout) -> None:
        table, n_acc = lay.table, len(accounts)
        n_und = len(table.underlyings)
        self.accounts, self.layout = accounts, lay
        self.priced = pricing.outputs(lay)
        instruments, underlying, pnl = self.priced
        self.accounts_out = accounts_out = np.empty((kernel.N_ACCOUNT_FIELDS, n_acc))
        self.rows_out = rows_out = np.empty((kernel.N_ROW_FIELDS, n_acc, n_und))
        self.worst = np.empty((n_acc, n_und), dtype=np.int64)
        index, underlying_index = instruments[pricing.I_INDEX], underlying[pricing.U_INDEX]
        unit = Greeks(instruments[pricing.PRICE], instruments[pricing.DELTA], instruments[pricing.GAMMA],
                      instruments[pricing.VEGA], instruments[pricing.THETA])
        inputs = InstrumentInputs(index, instruments[pricing.I_VOL], instruments[pricing.I_RATE],
                                  instruments[pricing.I_T], underlying_index, underlying[pricing.U_VOL])
        self.risk = BookRisk.of_fields(
            accounts=accounts, underlyings=table.underlyings,
            equity=accounts_out[kernel.EQUITY], unrealised_pnl=accounts_out[kernel.UPNL],
            base_maintenance=accounts_out[kernel.BASE_MM], maintenance=accounts_out[kernel.MM],
            initial=accounts_out[kernel.IM], margin_ratio=accounts_out[kernel.RATIO], delta=rows_out[kernel.DELTA],
            gamma=rows_out[kernel.GAMMA], vega=rows_out[kernel.VEGA], theta=rows_out[kernel.THETA],
            gross_notional=rows_out[kernel.GROSS], net_notional=rows_out[kernel.NET],
            scenario_loss=rows_out[kernel.LOSS], worst_scenario=self.worst, worst_pnl=rows_out[kernel.WORST_PNL],
            delta_charge=rows_out[kernel.DELTA_CHARGE], short_option_charge=rows_out[kernel.SHORT_CHARGE],
            adaptive_addon=rows_out[kernel.ADDON], unit=unit, units=instruments[pricing.UNITS],
            marks=instruments[pricing.MARKS], inputs=inputs, scenario_pnl=pnl, grid=lay.grid, params=lay.params)


class ResidentRisk:
    """A caller's compiled revaluation outputs, kept between its ``revalue_book`` calls: the arrays
    and the ``BookRisk`` of the last (accounts, pricing layout) revalued, made again only when
    those change (the same accounts tuple object: a book revalued tick after tick). Each call
    rewrites every element, so the risk it returns is valid until the caller's next call: one
    revaluation at a time, by its one owner (an engine's tick)."""

    def __init__(self) -> None:
        self._outputs: _CompiledOutputs | None = None
        self._thread: int | None = None  # the thread ``layout`` asked ``pricing.layout`` from last

    def outputs(self, accounts: tuple[str, ...], lay: pricing.PricingLayout) -> _CompiledOutputs:
        made = self._outputs
        if made is None or made.accounts is not accounts or made.layout is not lay:
            made = self._outputs = _CompiledOutputs(accounts, lay)
        return made

    def layout(self, table: InstrumentTable, config: MarginConfig) -> pricing.PricingLayout:
        """``pricing.layout(table, config)``: the last outputs' layout while it is of the same
        table and config objects (a layout is made from them alone) and this is the thread that
        asked for it (layouts are per thread), without the shared cache's lock and key."""
        made, thread = self._outputs, threading.get_ident()
        if made is not None and made.layout.table is table and made.layout.config is config \
                and self._thread == thread:
            return made.layout
        self._thread = thread
        return pricing.layout(table, config)


def _revalue_compiled(book: Book, market: MarketState, config: MarginConfig, adaptive: AdaptiveParams | None,
                      conditions: MarketConditions, accounts: np.ndarray | None,
                      resident: ResidentRisk | None) -> BookRisk:
    """``revalue_book`` through the kernels: ``kernels.pricing``'s stages, then
    ``kernels.revalue.revalue_accounts`` on the accounts asked for (all by default)."""
    if resident is None:
        lay = pricing.layout(book.instruments, config)
        out = _CompiledOutputs(book.accounts, lay)
    else:
        lay = resident.layout(book.instruments, config)
        out = resident.outputs(book.accounts, lay)
    instruments, underlying, pnl = pricing.price(lay, market, conditions, out.priced)
    kernel.revalue_accounts(
        np.arange(len(book.accounts)) if accounts is None else np.asarray(accounts, dtype=np.int64),
        book.position_start, book.instrument_idx, book.position_values, np.asarray(book.collateral, dtype=np.float64),
        lay.ints, lay.floats, instruments, underlying, pnl, lay.weight, lay.charges, _adaptive_array(adaptive),
        out.accounts_out, out.rows_out, out.worst)
    return out.risk


_LAST_ADAPTIVE: tuple[AdaptiveParams | None, np.ndarray] | None = None  # the last asked for and its array


def _adaptive_array(adaptive: AdaptiveParams | None) -> np.ndarray:
    """The kernel's form of the adaptive parameters (empty: no add-on), read-only, as it is
    shared: the one made last while the same parameters object is asked for (an engine passes
    its own tick after tick), else made again from equal-or-new parameters."""
    global _LAST_ADAPTIVE
    last = _LAST_ADAPTIVE
    if last is not None and last[0] is adaptive:
        return last[1]
    values = [] if adaptive is None else [getattr(adaptive, name) for name in kernel.ADAPTIVE_FIELDS]
    array = np.array(values, dtype=np.float64)
    array.flags.writeable = False
    _LAST_ADAPTIVE = (adaptive, array)
    return array


def account_risk(
    portfolio: Portfolio,
    market: MarketState,
    config: MarginConfig | None = None,
    adaptive: AdaptiveParams | None = None,
    conditions: MarketConditions | None = None,
) -> tuple[Book, BookRisk]:
    """One account through the batch path (a one-row book)."""
    book = Book.from_portfolios([portfolio])
    return book, revalue_book(book, market, config, adaptive, conditions)


__all__ = ["Book", "BookRisk", "Exposure", "Portfolio", "Position", "ResidentRisk", "account_risk", "margin_ratio",
           "revalue_book"]
