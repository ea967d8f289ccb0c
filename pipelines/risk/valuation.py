"""Marks and unit Greeks for every instrument kind in one vectorised call.

- option: Black-76 on the forward (see ``black76``);
- future: mark = forward ``S * exp(r T)`` (T floored at 0: an expired future is the index),
  delta = dF/dS, theta = value change per calendar day as T falls (``-r F / 365``);
- perpetual: mark = index, delta 1 (funding is cash flow, not value, so no theta).
"""

from __future__ import annotations

import numpy as np

from pipelines.risk.black76 import YEAR_DAYS, Greeks, black76_greeks, black76_price
from pipelines.risk.instruments import KIND_CODE, InstrumentTable, Kind
from pipelines.risk.market import InstrumentInputs

OPTION = KIND_CODE[Kind.OPTION]
FUTURE = KIND_CODE[Kind.FUTURE]


def unit_greeks(table: InstrumentTable, inp: InstrumentInputs) -> Greeks:
    """Per-contract (unit x contract_size) mark and Greeks, arrays of len(table)."""
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
    cs = table.contract_size
    return Greeks(price * cs, delta * cs, gamma * cs, vega * cs, theta * cs)


def scenario_values(
    table: InstrumentTable, inp: InstrumentInputs, index: np.ndarray, vol: np.ndarray
) -> np.ndarray:
    """Per-contract value of each instrument under shocked index and vol arrays of shape
    (n_instruments, n_scenarios); time does not pass (an instantaneous shock, as in the
    Deribit/Paradex grids)."""
    out = index.copy()
    fut = table.kind == FUTURE
    if fut.any():
        out[fut] *= np.exp(inp.rate[fut] * np.maximum(inp.t[fut], 0.0))[:, None]
    opt = table.kind == OPTION
    if opt.any():
        out[opt] = black76_price(index[opt], table.strike[opt][:, None], inp.t[opt][:, None], vol[opt],
                                 inp.rate[opt][:, None], table.is_call[opt][:, None])
    return out * table.contract_size[:, None]
