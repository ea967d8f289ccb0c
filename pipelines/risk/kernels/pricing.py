"""Compiled per-instrument pricing: ``market.inputs``, ``valuation.unit_greeks`` (Black-76
Greeks), ``valuation.units_per_contract``, ``valuation.usd_marks`` and ``margin.scenario_matrix``
(shocked vols, Black-76 prices of every (instrument, scenario)) in a few calls per tick.

Contract: every output equals the numpy reference bit for bit. The arithmetic (+ - * / and
sqrt, exactly rounded in both) runs here in the reference's operation order; the transcendental
functions stay numpy's and scipy's, whose SIMD loops round differently from numba's libm: each is
called once per tick on a packed 1-D operand array holding every value that needs it at that
stage (an elementwise function gives the same value for the same operand wherever it sits):

1. ``market_inputs``: per-instrument index, vol, rate, time; the operands of exp (the forward
   growth ``r max(T, 0)`` and the discount ``-r T``) and of power (the vol-shock scale);
2. numpy ``exp`` and ``power``;
3. ``option_operands``: shocked vols, forwards, ``sd`` and ``log``'s operand ``F / K`` of every
   option (its Greeks) and every (option, scenario) (its price);
4. numpy ``log``;
5. ``normal_operands``: ``d1`` and ``ndtr``'s operands ``±d1``, ``±d2``; ``exp``'s ``-d1²/2``;
6. scipy ``ndtr`` and numpy ``exp``;
7. ``finish_instruments``: marks, Greeks, inverse conversions, units, USD marks and the scenario
   PnL matrix with its padding.

The per-table constants (:class:`PricingLayout`) are built once per (table, margin config) and
the packed work arrays live in it between ticks, one layout per thread (numpy releases the GIL in
its loops). ``tests/risk/test_kernels_pricing.py`` holds every stage to the reference on random
tables and markets.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections import OrderedDict

import numpy as np
from numba import njit
from scipy.special import ndtr

from pipelines.risk.adaptive import HeldConditions, MarketConditions
from pipelines.risk.black76 import INV_SQRT_2PI, YEAR_DAYS
from pipelines.risk.instruments import KIND_CODE, InstrumentTable, Kind
from pipelines.risk.kernels.scalar import maximum
from pipelines.risk.margin import VOL_DOWN, VOL_UP, InstrumentShocks, MarginConfig, grid_and_params, scenario_layout
from pipelines.risk.market import YEAR_MS, MarketState, UnderlyingMarket

_kernel = njit(cache=True, error_model="numpy")
OPTION = KIND_CODE[Kind.OPTION]
FUTURE = KIND_CODE[Kind.FUTURE]

# rows of the per-table integer constants (fields x instruments)
KIND, UNDERLYING, EXPIRY = range(3)
# rows of the per-table float constants: strike, Black-76's sign w, contract size, inverse (0/1),
# then InstrumentShocks' fields in their order
STRIKE, SIGN, SIZE, INVERSE = range(4)
(MIN_DTE, SWITCH_DTE, SHORT_POWER, LONG_POWER, REFERENCE_DTE, MIN_VOL_UP, VOL_UP_SHOCK, VOL_DOWN_SHOCK,
 MIN_SHOCKED_VOL) = range(4, 13)
N_FLOAT_FIELDS = 13
# planes of the per-table scenario constants (planes x instruments x scenarios)
GROWTH, VOL_KIND, PAD = range(3)
# rows of the per-table margin charges (fields x underlyings: ``UnderlyingParams``' arrays), read
# by ``kernels.revalue.revalue_accounts``
C_NET, C_HEDGED, C_SHORT, C_MM_TO_IM = range(4)
# columns of the per-tick market (underlyings x fields)
M_INDEX, M_VOL, M_RATE, M_REALISED, M_DEPTH = range(5)
N_MARKET_FIELDS = 5
# rows of the per-instrument outputs (fields x instruments)
I_INDEX, I_VOL, I_RATE, I_T, PRICE, DELTA, GAMMA, VEGA, THETA, UNITS, MARKS = range(11)
N_INSTRUMENT_FIELDS = 11
# rows of the per-underlying outputs (fields x underlyings)
U_INDEX, U_VOL, U_REALISED, U_DEPTH = range(4)
N_UNDERLYING_FIELDS = 4
# rows of the option work array (fields x option columns: option j's Greeks at column j, its
# price under scenario s at n_options + j * n_scenarios + s); the two ndtr rows are adjacent
W_SPOT, W_FORWARD, W_SD, W_LOG_IN, W_LOG_OUT, W_ND_IN, W_ND_IN2, W_ND_OUT, W_ND_OUT2, W_PDF_IN, W_PDF_OUT = range(11)
N_WORK_ROWS = 11


class PricingLayout:
    """A table's constants under a margin config, and the packed work arrays of its ticks."""

    def __init__(self, table: InstrumentTable, config: MarginConfig) -> None:
        n, scenarios = len(table), scenario_layout(table, config)
        self.table, self.config = table, config
        self.grid, self.params = grid_and_params(table.underlyings, config)
        self.where = table.index()
        self.ints = np.array((table.kind, table.underlying_idx, table.expiry_ms), dtype=np.int64).reshape(3, n)
        shocks = InstrumentShocks.build(table, config)
        self.floats = np.array((table.strike, np.where(table.is_call, 1.0, -1.0), table.contract_size,
                                table.inverse, *(getattr(shocks, f.name) for f in dataclasses.fields(shocks))),
                               dtype=np.float64).reshape(N_FLOAT_FIELDS, n)
        width = scenarios.growth.shape[1] if n else self.grid.move.shape[1]
        self.scenarios = np.array((scenarios.growth, scenarios.vol_kind, scenarios.pad),
                                  dtype=np.float64).reshape(3, n, width)
        # what ``revalue_accounts`` reads of the grid and the parameters, as private writable arrays
        # (a read-only argument costs a compiled call more to dispatch; nothing writes them)
        p, n_und = self.params, len(table.underlyings)
        self.charges = np.array((p.delta_charge_net, p.delta_charge_hedged, p.short_option_charge, p.mm_to_im),
                                dtype=np.float64).reshape(4, n_und)
        self.weight = np.array(self.grid.weight, dtype=np.float64)
        self.market_rows = np.zeros((n_und, N_MARKET_FIELDS))
        self._market_of: tuple[HeldConditions, list[UnderlyingMarket]] | None = None  # what it holds, if kept
        self.options = np.flatnonzero(table.kind == OPTION).astype(np.int64)
        self.no_overrides = np.full(n, np.nan)
        self.exp_in, self.exp_out = np.zeros((2, n)), np.zeros((2, n))
        self.power_in, self.power_out = np.ones((2, n)), np.zeros(n)
        self.power_base, self.power_exponent = self.power_in
        self.work = np.zeros((N_WORK_ROWS, len(self.options) * (1 + width)))
        self.log_in, self.log_out = self.work[W_LOG_IN], self.work[W_LOG_OUT]
        self.nd_in, self.nd_out = self.work[W_ND_IN:W_ND_IN2 + 1], self.work[W_ND_OUT:W_ND_OUT2 + 1]
        self.pdf_in, self.pdf_out = (self.work[W_PDF_IN, : len(self.options)],
                                     self.work[W_PDF_OUT, : len(self.options)])

    def market(self, market: MarketState, conditions: MarketConditions) -> np.ndarray:
        """The tick's per-underlying (index, vol, rate, realised vol, depth), ``MarketState.inputs``'
        and ``MarketConditions.arrays``' values, written into the layout's ``market_rows`` (valid
        until its next tick); MarketError for an underlying without data. Not written again while
        the underlyings' (frozen) markets and the (held, never written) conditions are the objects
        they were last written from."""
        underlyings, rows = self.table.underlyings, self.market_rows
        markets = market.underlying_markets(underlyings)
        last = self._market_of
        if last is not None and last[0] is conditions and all(a is b for a, b in zip(last[1], markets)):
            return rows
        self._market_of = (conditions, markets) if isinstance(conditions, HeldConditions) else None
        rv, depth = conditions.realised_vol, conditions.depth_usd
        for k, (u, m) in enumerate(zip(underlyings, markets)):
            rows[k] = (m.index, m.vol, m.rate, rv.get(u, math.nan), depth.get(u, math.inf))
        return rows

    def overrides(self, market: MarketState) -> np.ndarray:
        """Each instrument's implied-vol override, NaN where none (overrides are positive)."""
        if not market.instrument_vols:
            return self.no_overrides
        out = self.no_overrides.copy()
        for name, vol in market.instrument_vols.items():
            k = self.where.get(name)
            if k is not None:
                out[k] = vol
        return out


_LAYOUTS: OrderedDict[tuple[int, int, int], PricingLayout] = OrderedDict()  # least recently used first
MAX_LAYOUTS = 16
_LAYOUTS_LOCK = threading.Lock()


def layout(table: InstrumentTable, config: MarginConfig) -> PricingLayout:
    """The layout of ``table`` under ``config`` for this thread, built once. The entry holds the
    table and config, so their ids are not reused. At most ``MAX_LAYOUTS`` are kept, the least
    recently used dropped first: a layout's work arrays grow with instruments x scenarios
    (megabytes at venue scale), and an engine prices one table at a time."""
    key = (id(table), id(config), threading.get_ident())
    with _LAYOUTS_LOCK:
        hit = _LAYOUTS.get(key)
        if hit is None or hit.table is not table or hit.config is not config:
            hit = _LAYOUTS[key] = PricingLayout(table, config)
            while len(_LAYOUTS) > MAX_LAYOUTS:
                _LAYOUTS.popitem(last=False)
        _LAYOUTS.move_to_end(key)
        return hit


Outputs = tuple[np.ndarray, np.ndarray, np.ndarray]  # ``price``'s: instruments, underlying, pnl


def outputs(lay: PricingLayout) -> Outputs:
    """Fresh arrays for ``price``'s outputs under ``lay``: (per-instrument outputs (``I_*``,
    ``PRICE`` ... ``MARKS``) x instruments, per-underlying outputs (``U_*``) x underlyings, the
    scenario PnL matrix instruments x scenarios)."""
    table = lay.table
    return (np.empty((N_INSTRUMENT_FIELDS, len(table))), np.empty((N_UNDERLYING_FIELDS, len(table.underlyings))),
            np.empty(lay.scenarios.shape[1:]))


def price(lay: PricingLayout, market: MarketState, conditions: MarketConditions, out: Outputs | None = None) -> Outputs:
    """The seven stages of one tick, into ``out`` (``outputs``' arrays, every element written;
    None: fresh ones), returned."""
    instruments, underlying, pnl = outputs(lay) if out is None else out
    rows = lay.market(market, conditions)
    market_inputs(lay.ints, lay.floats, rows, lay.overrides(market), market.time_ms, instruments, underlying,
                  lay.exp_in, lay.power_in)
    np.exp(lay.exp_in, out=lay.exp_out)
    np.power(lay.power_base, lay.power_exponent, out=lay.power_out)
    option_operands(lay.floats, lay.scenarios, lay.options, instruments, lay.exp_out, lay.power_out, lay.work)
    np.log(lay.log_in, out=lay.log_out)
    normal_operands(lay.floats, lay.options, lay.work)
    ndtr(lay.nd_in, out=lay.nd_out)
    np.exp(lay.pdf_in, out=lay.pdf_out)
    finish_instruments(lay.ints, lay.floats, lay.scenarios, lay.options, instruments, lay.exp_out, lay.work, pnl)
    return instruments, underlying, pnl


@_kernel
def market_inputs(ints: np.ndarray, floats: np.ndarray, market: np.ndarray, override: np.ndarray, time_ms: int,
                  instruments: np.ndarray, underlying: np.ndarray, exp_in: np.ndarray, power_in: np.ndarray) -> None:
    """Stage 1: ``MarketState.inputs`` into ``instruments`` (I_INDEX..I_T) and ``underlying`` (with
    the conditions' realised vol and depth); the
    exp operands ``r max(T, 0)`` and ``-r T+`` (T+ = T if T > 0 else 1, Black-76's) into
    ``exp_in``; ``shocked_vols``' power operands (30 / DTE, the power) into ``power_in``."""
    for u in range(market.shape[0]):
        underlying[U_INDEX, u] = market[u, M_INDEX]
        underlying[U_VOL, u] = market[u, M_VOL]
        underlying[U_REALISED, u] = market[u, M_REALISED]
        underlying[U_DEPTH, u] = market[u, M_DEPTH]
    for i in range(ints.shape[1]):
        u = ints[UNDERLYING, i]
        vol = override[i] if not math.isnan(override[i]) else market[u, M_VOL]
        rate = market[u, M_RATE]
        t = (ints[EXPIRY, i] - time_ms) / YEAR_MS if ints[EXPIRY, i] >= 0 else 0.0
        instruments[I_INDEX, i] = market[u, M_INDEX]
        instruments[I_VOL, i] = vol
        instruments[I_RATE, i] = rate
        instruments[I_T, i] = t
        exp_in[0, i] = rate * maximum(t, 0.0)
        exp_in[1, i] = -rate * (t if t > 0.0 else 1.0)
        dte = maximum(maximum(t, 0.0) * 365.0, floats[MIN_DTE, i])
        power_in[0, i] = floats[REFERENCE_DTE, i] / dte
        power_in[1, i] = floats[SHORT_POWER, i] if dte < floats[SWITCH_DTE, i] else floats[LONG_POWER, i]


@_kernel
def _shocked_vol(vol: float, kind: float, scale: float, floats: np.ndarray, i: int) -> float:
    """``margin.shocked_vols`` of one (instrument, scenario), its scale given."""
    if kind == VOL_UP:
        return vol + maximum(vol, floats[MIN_VOL_UP, i]) * floats[VOL_UP_SHOCK, i] * scale
    if kind == VOL_DOWN:
        return maximum(vol * (1.0 - floats[VOL_DOWN_SHOCK, i] * scale), floats[MIN_SHOCKED_VOL, i])
    return vol


@_kernel
def _forward_column(work: np.ndarray, c: int, spot: float, discount: float, sd: float, strike: float) -> None:
    """Black-76's forward, sd and log operand of one work column."""
    forward = spot / discount
    work[W_SPOT, c] = spot
    work[W_FORWARD, c] = forward
    work[W_SD, c] = sd
    work[W_LOG_IN, c] = forward / strike


@_kernel
def option_operands(floats: np.ndarray, scenarios: np.ndarray, options: np.ndarray, instruments: np.ndarray,
                    exp_out: np.ndarray, power_out: np.ndarray, work: np.ndarray) -> None:
    """Stage 3: every option's Black-76 operands for its Greeks (column j) and for its price under
    each scenario (shocked index ``S (1 + move)``, shocked vol)."""
    n_options, width = len(options), scenarios.shape[2]
    for j in range(n_options):
        i = options[j]
        t = instruments[I_T, i]
        sqrt_t = math.sqrt(t if t > 0.0 else 1.0)
        discount, strike, spot, vol = exp_out[1, i], floats[STRIKE, i], instruments[I_INDEX, i], instruments[I_VOL, i]
        _forward_column(work, j, spot, discount, vol * sqrt_t, strike)
        for s in range(width):
            shocked = _shocked_vol(vol, scenarios[VOL_KIND, i, s], power_out[i], floats, i)
            _forward_column(work, n_options + j * width + s, spot * scenarios[GROWTH, i, s], discount,
                            shocked * sqrt_t, strike)


@_kernel
def normal_operands(floats: np.ndarray, options: np.ndarray, work: np.ndarray) -> None:
    """Stage 5: ``d1 = log(F / K) / sd + sd / 2`` of every column; ndtr's operands ``w d1`` and
    ``w (d1 - sd)``; exp's ``-d1²/2`` for the Greeks' columns."""
    n_options = len(options)
    width = (work.shape[1] // n_options - 1) if n_options else 0
    for c in range(work.shape[1]):
        j = c if c < n_options else (c - n_options) // width
        w = floats[SIGN, options[j]]
        sd = work[W_SD, c]
        d1 = work[W_LOG_OUT, c] / sd + 0.5 * sd
        work[W_ND_IN, c] = w * d1
        work[W_ND_IN2, c] = w * (d1 - sd)
        if c < n_options:
            work[W_PDF_IN, c] = -0.5 * d1 * d1


@_kernel
def _option_greeks(instruments: np.ndarray, floats: np.ndarray, work: np.ndarray, i: int, j: int,
                   discount: float) -> None:
    """``black76.black76_greeks`` of option ``i`` (work column ``j``) into ``instruments``."""
    spot, strike, t, rate, sigma = (instruments[I_INDEX, i], floats[STRIKE, i], instruments[I_T, i],
                                    instruments[I_RATE, i], instruments[I_VOL, i])
    w = floats[SIGN, i]
    if not t > 0.0:
        intrinsic = maximum(w * (spot - strike), 0.0)
        instruments[PRICE, i] = intrinsic
        instruments[DELTA, i] = w if intrinsic > 0.0 else 0.0
        instruments[GAMMA, i] = instruments[VEGA, i] = instruments[THETA, i] = 0.0
        return
    sqrt_t = math.sqrt(t)
    forward, sd = work[W_FORWARD, j], work[W_SD, j]
    n1, n2 = work[W_ND_OUT, j], work[W_ND_OUT2, j]
    pdf1 = INV_SQRT_2PI * work[W_PDF_OUT, j]
    instruments[PRICE, i] = w * discount * (forward * n1 - strike * n2)
    instruments[DELTA, i] = w * n1
    s_sd = spot * sd
    instruments[GAMMA, i] = pdf1 / s_sd if s_sd > 0.0 else 0.0
    vega_unit = spot * pdf1 * sqrt_t
    dv_dt = w * rate * strike * discount * n2 + vega_unit * sigma / (2.0 * t)
    instruments[THETA, i] = -dv_dt / YEAR_DAYS
    instruments[VEGA, i] = vega_unit * 0.01


@_kernel
def _option_price(work: np.ndarray, c: int, w: float, strike: float, discount: float, live: bool) -> float:
    """``black76.black76_price`` of one work column."""
    if not live:
        return maximum(w * (work[W_SPOT, c] - strike), 0.0)
    return w * discount * (work[W_FORWARD, c] * work[W_ND_OUT, c] - strike * work[W_ND_OUT2, c])


@_kernel
def _unit_greeks(ints: np.ndarray, floats: np.ndarray, instruments: np.ndarray, exp_out: np.ndarray,
                 work: np.ndarray, i: int, j: int) -> None:
    """``valuation.unit_greeks``, ``units_per_contract`` and ``usd_marks`` of instrument ``i``
    (option ``j`` when it is one) into ``instruments``."""
    kind, inverse, size = ints[KIND, i], floats[INVERSE, i] != 0.0, floats[SIZE, i]
    spot, rate, t, growth = instruments[I_INDEX, i], instruments[I_RATE, i], instruments[I_T, i], exp_out[0, i]
    instruments[GAMMA, i] = instruments[VEGA, i] = instruments[THETA, i] = 0.0
    instruments[PRICE, i], instruments[DELTA, i] = spot, 1.0  # a perpetual
    if kind == OPTION:
        _option_greeks(instruments, floats, work, i, j, exp_out[1, i])
    elif kind == FUTURE:
        price = spot * growth
        instruments[PRICE, i], instruments[DELTA, i] = price, growth
        instruments[THETA, i] = (-rate * price / YEAR_DAYS if t > 0 else 0.0) + 0.0
    if inverse and kind == OPTION:
        coin_delta = instruments[DELTA, i] - instruments[PRICE, i] / spot
        instruments[GAMMA, i] = instruments[GAMMA, i] - 2.0 * coin_delta / spot
        instruments[DELTA, i] = coin_delta
    elif inverse:
        instruments[PRICE, i] = -1.0 / growth
        instruments[DELTA, i] = 1.0 / (spot * growth)
        instruments[GAMMA, i] = -2.0 / (spot * spot * growth)
        instruments[VEGA, i] = 0.0
        instruments[THETA, i] = (-rate / (growth * YEAR_DAYS) if t > 0 else 0.0) + 0.0
    for field in (PRICE, DELTA, GAMMA, VEGA, THETA):
        instruments[field, i] = instruments[field, i] * size
    linear_face = inverse and kind != OPTION
    instruments[UNITS, i] = size / (spot * growth) if linear_face else size
    instruments[MARKS, i] = instruments[UNITS, i] * spot if linear_face else instruments[PRICE, i]


@_kernel
def _scenario_row(ints: np.ndarray, floats: np.ndarray, scenarios: np.ndarray, instruments: np.ndarray,
                  exp_out: np.ndarray, work: np.ndarray, i: int, column: int, pnl: np.ndarray) -> None:
    """``margin.scenario_matrix``'s row of instrument ``i`` (``valuation.scenario_values`` less its
    mark, padding 0); an option's prices from work columns ``column + s``."""
    kind, inverse, size = ints[KIND, i], floats[INVERSE, i] != 0.0, floats[SIZE, i]
    spot, growth, mark = instruments[I_INDEX, i], exp_out[0, i], instruments[PRICE, i]
    live = instruments[I_T, i] > 0.0
    for s in range(scenarios.shape[2]):
        shocked = spot * scenarios[GROWTH, i, s]
        if kind == OPTION:
            value = _option_price(work, column + s, floats[SIGN, i], floats[STRIKE, i], exp_out[1, i], live)
        elif kind == FUTURE:
            value = shocked * growth
        else:
            value = shocked
        if inverse:
            move = shocked / spot
            value = value / move if kind == OPTION else -1.0 / (growth * move)
        pnl[i, s] = 0.0 if scenarios[PAD, i, s] != 0.0 else value * size - mark


@_kernel
def finish_instruments(ints: np.ndarray, floats: np.ndarray, scenarios: np.ndarray, options: np.ndarray,
                       instruments: np.ndarray, exp_out: np.ndarray, work: np.ndarray, pnl: np.ndarray) -> None:
    """Stage 7: every instrument's mark, Greeks, units and USD mark (``instruments``) and its
    scenario PnL row (``pnl``, instruments x scenarios)."""
    n_options, width = len(options), scenarios.shape[2]
    j = 0  # options are listed in table order
    for i in range(ints.shape[1]):
        _unit_greeks(ints, floats, instruments, exp_out, work, i, j)
        _scenario_row(ints, floats, scenarios, instruments, exp_out, work, i, n_options + j * width, pnl)
        if ints[KIND, i] == OPTION:
            j += 1
