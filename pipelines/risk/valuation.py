"""Marks and unit Greeks for every instrument kind in one vectorised call.

Linear (USD-settled) instruments:

- option: Black-76 on the forward (see ``black76``);
- future: mark = forward ``S * exp(r T)`` (T floored at 0: an expired future is the index),
  delta = dF/dS, theta = value change per calendar day as T falls (``-r F / 365``);
- perpetual: mark = index, delta 1 (funding is cash flow, not value, so no theta).

Inverse (coin-settled) instruments are valued in their coin and converted to USD at the current
index ``S``; the Greeks are those of that converted value, ``S * P(S')`` with ``S`` held (the
coin-margined convention: a coin account's margin is its coin PnL, converted at the index):

- option, ``contract_size`` coins: the coin premium is ``P = V / S``, V the Black-76 USD price
  (Deribit quotes BTC options so). Converted: value ``V``; delta ``S dP/dS = Δ - P`` (the
  "delta minus the premium in coin" Deribit shows), gamma ``S d²P/dS² = Γ - 2 (Δ - P) / S``,
  vega and theta Black-76's (S is not a function of vol or time);
- future or perpetual, ``contract_size`` USD of face: the coin value of a long contract is
  ``-contract_size / F`` (its PnL ``contract_size (1/F_entry - 1/F)``); converted:
  ``-contract_size / g`` (g = F / S = exp(r T)), delta ``contract_size / F`` coins, gamma
  ``-2 contract_size / (S F)``, theta ``-r contract_size / (g 365)``.

Prices and average prices as the venue quotes them (USD per unit, coin per unit for inverse
options, USD for inverse futures) become per-contract values through :func:`quote_value`.
"""

from __future__ import annotations

import numpy as np

from pipelines.risk.black76 import YEAR_DAYS, Greeks, black76_greeks, black76_price
from pipelines.risk.instruments import KIND_CODE, InstrumentTable, Kind
from pipelines.risk.market import InstrumentInputs

OPTION = KIND_CODE[Kind.OPTION]
FUTURE = KIND_CODE[Kind.FUTURE]


def unit_greeks(table: InstrumentTable, inp: InstrumentInputs) -> Greeks:
    """Per-contract mark and Greeks in USD (inverse ones converted at the index, see the module
    docstring), arrays of len(table)."""
    n = len(table)
    price = inp.index.copy()  # perpetual mark = index
    delta = np.ones(n)
    gamma = np.zeros(n)
    vega = np.zeros(n)
    theta = np.zeros(n)
    fut = table.kind == FUTURE
    if fut.any():
        growth = np.exp(inp.rate[fut] * np.maximum(inp.t[fut], 0.0))
        price[fut] = inp.index[fut] * growth
        delta[fut] = growth
        theta[fut] = np.where(inp.t[fut] > 0, -inp.rate[fut] * price[fut] / YEAR_DAYS, 0.0) + 0.0  # no -0.0
    opt = table.kind == OPTION
    if opt.any():
        g = black76_greeks(inp.index[opt], table.strike[opt], inp.t[opt], inp.vol[opt], inp.rate[opt],
                           table.is_call[opt])
        price[opt], delta[opt], gamma[opt], vega[opt], theta[opt] = g.price, g.delta, g.gamma, g.vega, g.theta
    inv_opt = table.inverse & opt
    if inv_opt.any():
        coin_delta = delta[inv_opt] - price[inv_opt] / inp.index[inv_opt]
        gamma[inv_opt] = gamma[inv_opt] - 2.0 * coin_delta / inp.index[inv_opt]
        delta[inv_opt] = coin_delta
    inv_lin = table.inverse & ~opt
    if inv_lin.any():
        s = inp.index[inv_lin]
        growth = np.exp(inp.rate[inv_lin] * np.maximum(inp.t[inv_lin], 0.0))
        price[inv_lin] = -1.0 / growth  # times the contract size below, as every other value
        delta[inv_lin] = 1.0 / (s * growth)
        gamma[inv_lin] = -2.0 / (s * s * growth)
        vega[inv_lin] = 0.0
        theta[inv_lin] = np.where(inp.t[inv_lin] > 0, -inp.rate[inv_lin] / (growth * YEAR_DAYS), 0.0) + 0.0
    cs = table.contract_size
    return Greeks(price * cs, delta * cs, gamma * cs, vega * cs, theta * cs)


def inverse_option_greeks(
    index: np.ndarray | float,
    strike: np.ndarray | float,
    t: np.ndarray | float,
    vol: np.ndarray | float,
    rate: np.ndarray | float,
    is_call: np.ndarray | bool,
) -> Greeks:
    """A coin-settled option on one coin, in coin: premium ``P = V / S``, delta ``Δ - P`` (coins
    of exposure), gamma ``(Γ - 2 (Δ - P) / S)`` (coins per USD of index), vega and theta in coin
    (Black-76's divided by S). Its USD view (the premium sold at the index as it moves) is
    Black-76 itself: ``black76_greeks``."""
    s = np.asarray(index, dtype=np.float64)
    usd = black76_greeks(s, strike, t, vol, rate, is_call)
    premium = usd.price / s
    delta = usd.delta - premium
    return Greeks(premium, delta, usd.gamma - 2.0 * delta / s, usd.vega / s, usd.theta / s)


def scenario_values(
    table: InstrumentTable, inp: InstrumentInputs, index: np.ndarray, vol: np.ndarray
) -> np.ndarray:
    """Per-contract value of each instrument under shocked index and vol arrays of shape
    (n_instruments, n_scenarios); time does not pass (an instantaneous shock, as in the
    Deribit/Paradex grids). Inverse instruments: the coin value under the shock, converted at
    the current index (``S * P(S')`` = the USD value at S' divided by ``S' / S``)."""
    out = index.copy()
    fut = table.kind == FUTURE
    if fut.any():
        out[fut] *= np.exp(inp.rate[fut] * np.maximum(inp.t[fut], 0.0))[:, None]
    opt = table.kind == OPTION
    if opt.any():
        out[opt] = black76_price(index[opt], table.strike[opt][:, None], inp.t[opt][:, None], vol[opt],
                                 inp.rate[opt][:, None], table.is_call[opt][:, None])
    if table.inverse.any():
        inv = table.inverse
        move = index[inv] / inp.index[inv][:, None]
        growth = np.exp(inp.rate[inv] * np.maximum(inp.t[inv], 0.0))[:, None]
        out[inv] = np.where(opt[inv][:, None], out[inv] / move, -1.0 / (growth * move))
    return out * table.contract_size[:, None]


def units_per_contract(table: InstrumentTable, inp: InstrumentInputs) -> np.ndarray:
    """Underlying units one contract is exposed to: ``contract_size``, except an inverse future's
    or perpetual's (``contract_size`` USD of face at the forward: ``contract_size / F``). Notionals
    and short-option counts are units times the index."""
    units = table.contract_size.copy()
    inv = table.inverse & (table.kind != OPTION)
    if inv.any():
        forward = inp.index[inv] * np.exp(inp.rate[inv] * np.maximum(inp.t[inv], 0.0))
        units[inv] = table.contract_size[inv] / forward
    return units


def settlement_fx(table: InstrumentTable, inp: InstrumentInputs) -> np.ndarray:
    """USD per unit of each instrument's settlement currency: 1 for linear, the index for inverse."""
    return np.where(table.inverse, inp.index, 1.0)


def quote_value(table: InstrumentTable, instrument_idx: np.ndarray, price: np.ndarray) -> np.ndarray:
    """Per-contract value, in the settlement currency, of each ``price`` as the venue quotes it for
    instrument ``instrument_idx``: ``price * contract_size`` (USD per unit for linear, coin per unit
    for an inverse option), ``-contract_size / price`` for an inverse future or perpetual (price in
    USD). The values' differences are PnL: an average price becomes a cost this way."""
    size = table.contract_size[instrument_idx]
    inverse_linear = (table.inverse & (table.kind != OPTION))[instrument_idx]
    if not inverse_linear.any():
        return price * size
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(inverse_linear, -size / price, price * size)


def usd_marks(table: InstrumentTable, inp: InstrumentInputs, unit: Greeks, units: np.ndarray) -> np.ndarray:
    """USD value of one contract, as an order's notional: the mark for linear instruments and
    inverse options, the face at the index for inverse futures (``units * index``)."""
    inverse_linear = table.inverse & (table.kind != OPTION)
    return np.where(inverse_linear, units * inp.index, unit.price)
