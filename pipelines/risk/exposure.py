"""Account exposure: equity and per-underlying Greeks and notionals, for many accounts at once.

Position Greeks are quantity x unit Greeks; an account's Greeks per underlying are sums of its
positions' Greeks, computed as one sparse product of the book's (row, instrument) quantity
matrix with the instruments' unit Greeks. Notional counts underlying units at the index price
(``qty * units * index``, units per contract from ``valuation.units_per_contract``), not
delta-adjusted: net notional is signed, gross absolute.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp

from pipelines.risk.black76 import Greeks
from pipelines.risk.market import InstrumentInputs


@dataclasses.dataclass(frozen=True, eq=False)
class Exposure:
    """Per-account equity and per-(account, underlying) rows, each of shape (n_acc * n_und,)."""

    unrealised_pnl: np.ndarray  # (n_acc,)
    equity: np.ndarray  # (n_acc,)
    delta: np.ndarray
    gamma: np.ndarray
    vega: np.ndarray
    theta: np.ndarray
    long_delta: np.ndarray  # sum of positive position deltas (for the hedged-delta charge)
    short_delta: np.ndarray  # sum of |negative position deltas|
    short_option_units: np.ndarray  # short option contracts x contract size
    gross_notional: np.ndarray
    net_notional: np.ndarray


def compute_exposure(
    matrix: sp.csr_matrix,  # (n_rows, n_instr) net quantities, rows = account * n_und + underlying
    rows: np.ndarray,  # row of each netted position
    account_idx: np.ndarray,
    instrument_idx: np.ndarray,
    qty: np.ndarray,
    cost_qty: np.ndarray,
    cost: np.ndarray,
    collateral: np.ndarray,
    unit: Greeks,
    inp: InstrumentInputs,
    is_option: np.ndarray,
    units: np.ndarray,  # underlying units per contract
) -> Exposure:
    n_rows = matrix.shape[0]
    n_acc = len(collateral)
    upnl = np.bincount(account_idx, weights=cost_qty * unit.price[instrument_idx] - cost, minlength=n_acc)
    per_instr = np.column_stack([unit.delta, unit.gamma, unit.vega, unit.theta, inp.index * units])
    agg = matrix @ per_instr
    pos_delta = qty * unit.delta[instrument_idx]
    long_delta = np.bincount(rows, weights=np.maximum(pos_delta, 0.0), minlength=n_rows)
    short_delta = np.bincount(rows, weights=np.maximum(-pos_delta, 0.0), minlength=n_rows)
    opt = is_option[instrument_idx]
    short_units = np.bincount(rows, weights=np.where(opt, np.maximum(-qty, 0.0), 0.0) * units[instrument_idx],
                              minlength=n_rows)
    gross = np.bincount(rows, weights=np.abs(qty) * (inp.index * units)[instrument_idx], minlength=n_rows)
    return Exposure(
        unrealised_pnl=upnl, equity=collateral + upnl,
        delta=agg[:, 0], gamma=agg[:, 1], vega=agg[:, 2], theta=agg[:, 3],
        long_delta=long_delta, short_delta=short_delta, short_option_units=short_units,
        gross_notional=gross, net_notional=agg[:, 4],
    )
