"""Scenario portfolio margin, Deribit/Paradex design, every parameter per underlying.

Revalue the account under a grid of index moves crossed with volatility shocks, plus weighted
extended moves at vol up; the maintenance margin of one underlying is

    MM_u = max(0, worst weighted scenario loss) + minimum delta charge + short-option charge

and the account's MM is the sum over underlyings (no cross-underlying offsets: a USD-settled
account with BTC and ETH legs gets no credit for their correlation, as in Paradex and Derive).
IM = MM / ``mm_to_im``. The defaults and their sources are listed in docs/risk-model.md.

Speed: scenario revaluation depends only on the instrument, never on the account, so
:func:`scenario_matrix` prices each unique instrument once under every scenario; accounts are
then a sparse product of positions with that matrix (see ``book``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from pipelines.errors import UserError
from pipelines.risk.instruments import InstrumentTable
from pipelines.risk.market import InstrumentInputs
from pipelines.risk.valuation import scenario_values

VOL_UP, VOL_NONE, VOL_DOWN = 1, 0, -1

PARADEX_EXTENDED: tuple[tuple[float, float], ...] = (
    (-0.66, 0.24), (-0.33, 0.48), (0.50, 0.32), (1.00, 0.16),
    (2.00, 0.08), (3.00, 0.0533), (4.00, 0.04), (5.00, 0.032),
)


@dataclasses.dataclass(frozen=True)
class MarginParams:
    """Scenario-margin parameters of one underlying. Sources of each default: docs/risk-model.md."""

    moves: tuple[float, ...] = (-0.16, -0.12, -0.08, -0.04, 0.0, 0.04, 0.08, 0.12, 0.16)
    vol_up: float = 0.40  # relative shock up (Paradex; Deribit uses 0.50)
    vol_down: float = 0.22  # relative shock down (Paradex; Deribit uses 0.25)
    vol_unchanged: bool = True  # Deribit also revalues at unchanged vol
    short_dated_power: float = 0.30
    long_dated_power: float = 0.13
    power_switch_dte: float = 30.0  # days; below it the short-dated power applies
    reference_dte: float = 30.0  # shock scale = (reference_dte / DTE) ** power
    min_dte_days: float = 1.0  # ours: stops (30/DTE)^0.3 blowing up in an option's last hours
    min_vol_for_shock_up: float = 0.50  # Deribit: the up-shock is taken on max(vol, this)
    min_shocked_vol: float = 0.05  # ours: the down-shocked vol never goes below this
    extended: tuple[tuple[float, float], ...] = PARADEX_EXTENDED  # (move, weight) at vol up
    delta_charge_net: float = 0.02  # Paradex: 2 % x |net delta| x spot
    delta_charge_hedged: float = 0.01  # Paradex: 1 % x hedged delta x spot
    short_option_charge: float = 0.01  # Derive option contingency: 1 % of spot per short contract
    mm_to_im: float = 0.80  # Deribit: MM = 0.8 x IM

    def __post_init__(self) -> None:
        checks = {
            "moves": all(m > -1.0 for m in self.moves) and len(self.moves) > 0,
            "vol_up": self.vol_up >= 0, "vol_down": 0 <= self.vol_down,
            "min_dte_days": self.min_dte_days > 0, "reference_dte": self.reference_dte > 0,
            "min_shocked_vol": self.min_shocked_vol > 0, "min_vol_for_shock_up": self.min_vol_for_shock_up >= 0,
            "extended": all(m > -1.0 and w >= 0 for m, w in self.extended),
            "delta_charge_net": self.delta_charge_net >= 0, "delta_charge_hedged": self.delta_charge_hedged >= 0,
            "short_option_charge": self.short_option_charge >= 0, "mm_to_im": 0 < self.mm_to_im <= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise UserError(f"margin parameter {bad[0]}: out of range")

    def scenarios(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(move, vol kind, weight) arrays: the grid (vol unchanged, up, down) then extended.
        Unchanged comes first so that a tie (a book with no vega) reports the unshocked scenario."""
        kinds = ([VOL_NONE] if self.vol_unchanged else []) + [VOL_UP, VOL_DOWN]
        move = [m for _ in kinds for m in self.moves] + [m for m, _ in self.extended]
        kind = [k for k in kinds for _ in self.moves] + [VOL_UP] * len(self.extended)
        weight = [1.0] * (len(kinds) * len(self.moves)) + [w for _, w in self.extended]
        return np.array(move), np.array(kind, dtype=np.int8), np.array(weight)


@dataclasses.dataclass(frozen=True)
class MarginConfig:
    """Per-underlying parameters with a default for every underlying not listed."""

    default: MarginParams = MarginParams()
    per_underlying: Mapping[str, MarginParams] = dataclasses.field(default_factory=dict)

    def params_for(self, underlying: str) -> MarginParams:
        return self.per_underlying.get(underlying, self.default)


@dataclasses.dataclass(frozen=True, eq=False)
class ScenarioGrid:
    """Scenarios per underlying, padded to a common count (padding: move 0, weight 0)."""

    underlyings: tuple[str, ...]
    move: np.ndarray  # (n_und, S)
    vol_kind: np.ndarray  # (n_und, S)
    weight: np.ndarray  # (n_und, S)
    count: np.ndarray  # (n_und,) real scenarios per underlying

    @classmethod
    def build(cls, underlyings: tuple[str, ...], config: MarginConfig) -> ScenarioGrid:
        per = [config.params_for(u).scenarios() for u in underlyings]
        width = max((len(m) for m, _, _ in per), default=0)
        n = len(underlyings)
        move, kind, weight = np.zeros((n, width)), np.zeros((n, width), dtype=np.int8), np.zeros((n, width))
        count = np.zeros(n, dtype=np.int64)
        for u, (m, k, w) in enumerate(per):
            move[u, : len(m)], kind[u, : len(m)], weight[u, : len(m)], count[u] = m, k, w, len(m)
        return cls(underlyings, move, kind, weight, count)

    def describe(self, underlying: int, scenario: int) -> tuple[float, int, float]:
        """(move, vol kind, weight) of one scenario."""
        return (float(self.move[underlying, scenario]), int(self.vol_kind[underlying, scenario]),
                float(self.weight[underlying, scenario]))


@dataclasses.dataclass(frozen=True, eq=False)
class UnderlyingParams:
    """MarginParams fields as arrays over underlyings, for vectorised row margin."""

    delta_charge_net: np.ndarray
    delta_charge_hedged: np.ndarray
    short_option_charge: np.ndarray
    mm_to_im: np.ndarray

    @classmethod
    def build(cls, underlyings: tuple[str, ...], config: MarginConfig) -> UnderlyingParams:
        ps = [config.params_for(u) for u in underlyings]
        return cls(*(np.array([getattr(p, f.name) for p in ps], dtype=np.float64)
                     for f in dataclasses.fields(cls)))


@dataclasses.dataclass(frozen=True, eq=False)
class InstrumentShocks:
    """The vol-shock fields of ``MarginParams`` per instrument (its underlying's), for
    ``shocked_vols`` over a whole instrument table at once."""

    min_dte_days: np.ndarray
    power_switch_dte: np.ndarray
    short_dated_power: np.ndarray
    long_dated_power: np.ndarray
    reference_dte: np.ndarray
    min_vol_for_shock_up: np.ndarray
    vol_up: np.ndarray
    vol_down: np.ndarray
    min_shocked_vol: np.ndarray

    @classmethod
    def build(cls, table: InstrumentTable, config: MarginConfig) -> InstrumentShocks:
        ps = [config.params_for(u) for u in table.underlyings]
        return cls(*(np.array([getattr(p, f.name) for p in ps], dtype=np.float64)[table.underlying_idx]
                     for f in dataclasses.fields(cls)))


def _column(value: float | np.ndarray) -> float | np.ndarray:
    """A per-instrument parameter as a column against (instrument, scenario) arrays."""
    return value[:, None] if isinstance(value, np.ndarray) else value


def shocked_vols(vol: np.ndarray, dte_days: np.ndarray, kind: np.ndarray,
                 p: MarginParams | InstrumentShocks) -> np.ndarray:
    """Shocked vol per (instrument, scenario): ``p`` is one underlying's parameters (for
    instruments of that underlying) or ``InstrumentShocks`` (each instrument its own).

    scale = (30 / DTE) ** (0.3 if DTE < 30 else 0.13), DTE floored at ``min_dte_days``;
    up:   vol + max(vol, min_vol_for_shock_up) * vol_up * scale  (the Deribit 0.5 floor read as a
          floor on the vol the relative up-shock is taken on: a 30 %-vol option is still shocked
          by at least 0.5 x 40 % = 20 vol points at 30 days, instead of only 12);
    down: max(vol * (1 - vol_down * scale), min_shocked_vol).
    """
    dte = np.maximum(dte_days, p.min_dte_days)
    power = np.where(dte < p.power_switch_dte, p.short_dated_power, p.long_dated_power)
    scale = (p.reference_dte / dte) ** power
    vol = vol[:, None]
    scale = scale[:, None]
    up = vol + np.maximum(vol, _column(p.min_vol_for_shock_up)) * _column(p.vol_up) * scale
    down = np.maximum(vol * (1.0 - _column(p.vol_down) * scale), _column(p.min_shocked_vol))
    return np.where(kind == VOL_UP, up, np.where(kind == VOL_DOWN, down, np.broadcast_to(vol, up.shape)))


def scenario_matrix(
    table: InstrumentTable, inp: InstrumentInputs, config: MarginConfig, base_value: np.ndarray
) -> tuple[np.ndarray, ScenarioGrid]:
    """Per-contract PnL of every instrument under its underlying's scenarios: (n_instr, S).

    ``base_value`` is the per-contract mark (from ``valuation.unit_greeks``). Padding columns
    are 0 (they can never be the worst loss, whose floor is 0).
    """
    layout = scenario_layout(table, config)
    dte = np.maximum(inp.t, 0.0) * 365.0
    index = inp.index[:, None] * layout.growth
    vol = shocked_vols(inp.vol, dte, layout.vol_kind, layout.shocks)
    pnl = scenario_values(table, inp, index, vol) - base_value[:, None]
    pnl[layout.pad] = 0.0
    return pnl, layout.grid


@dataclasses.dataclass(frozen=True, eq=False)
class _ScenarioLayout:
    """What ``scenario_matrix`` needs of a table and a config besides the market: each
    instrument's row of its underlying's grid, and its shock parameters."""

    grid: ScenarioGrid
    growth: np.ndarray  # (n_instr, S): 1 + move
    vol_kind: np.ndarray  # (n_instr, S)
    pad: np.ndarray  # (n_instr, S): padding column of the instrument's underlying
    shocks: InstrumentShocks


_LAYOUTS: dict[tuple[int, int], tuple[InstrumentTable, MarginConfig, _ScenarioLayout]] = {}


def scenario_layout(table: InstrumentTable, config: MarginConfig) -> _ScenarioLayout:
    """Built once per (table, config), like ``grid_and_params`` (same keying and bound): the
    engine keeps one table per built book, so a tick only prices."""
    key = (id(table), id(config))
    hit = _LAYOUTS.get(key)
    if hit is None or hit[0] is not table or hit[1] is not config:
        if len(_LAYOUTS) >= 256:
            _LAYOUTS.clear()
        grid = grid_and_params(table.underlyings, config)[0]
        und = table.underlying_idx
        pad = np.arange(grid.move.shape[1])[None, :] >= grid.count[und][:, None]
        hit = _LAYOUTS[key] = (table, config, _ScenarioLayout(grid, 1.0 + grid.move[und], grid.vol_kind[und], pad,
                                                               InstrumentShocks.build(table, config)))
    return hit[2]


_BUILT: dict[tuple[int, tuple[str, ...]], tuple[MarginConfig, ScenarioGrid, UnderlyingParams]] = {}


def grid_and_params(underlyings: tuple[str, ...], config: MarginConfig) -> tuple[ScenarioGrid, UnderlyingParams]:
    """The scenario grid and parameter arrays of ``underlyings`` under ``config``, built once.

    Why: every revaluation tick of every shard rebuilt both from the dataclasses, about a tenth
    of a small book's revaluation, though they change only with the config and the underlyings.
    Keyed by the config's identity (its mapping field makes it unhashable), which the entry
    keeps alive so the id cannot be reused; the arrays are read-only, so no caller can change
    what the next one gets."""
    key = (id(config), underlyings)
    hit = _BUILT.get(key)
    if hit is None or hit[0] is not config:
        if len(_BUILT) >= 256:  # configs come and go in sweeps: bound the cache
            _BUILT.clear()
        grid, params = ScenarioGrid.build(underlyings, config), UnderlyingParams.build(underlyings, config)
        for array in (grid.move, grid.vol_kind, grid.weight, grid.count,
                      *(getattr(params, f.name) for f in dataclasses.fields(params))):
            array.flags.writeable = False
        hit = _BUILT[key] = (config, grid, params)
    return hit[1], hit[2]


@dataclasses.dataclass(frozen=True, eq=False)
class RowMargin:
    """Margin of (account, underlying) rows."""

    scenario_loss: np.ndarray  # worst weighted loss, >= 0
    worst_scenario: np.ndarray  # column index into the grid
    delta_charge: np.ndarray
    short_option_charge: np.ndarray
    maintenance: np.ndarray
    initial: np.ndarray


def row_margin(
    pnl: np.ndarray,  # (k, S) scenario PnL of each row
    weight: np.ndarray,  # (k, S)
    net_delta: np.ndarray,
    long_delta: np.ndarray,  # sum of positive position deltas
    short_delta: np.ndarray,  # sum of |negative position deltas|
    short_option_units: np.ndarray,  # short option contracts x contract size
    index: np.ndarray,
    params: UnderlyingParams,
    und: np.ndarray,  # underlying index of each row
) -> RowMargin:
    """MM_u = max(0, -min_s w_s PnL_s) + (2 % |net D| + 1 % hedged D) S + 1 % S x short options."""
    weighted = pnl * weight
    if weighted.shape[1]:
        worst = np.argmin(weighted, axis=1)
        loss = np.maximum(-weighted.min(axis=1), 0.0)  # the value at ``worst``, NaN included
    else:
        worst, loss = np.zeros(len(pnl), dtype=np.int64), np.zeros(len(pnl))
    hedged = np.minimum(long_delta, short_delta)
    delta_charge = (params.delta_charge_net[und] * np.abs(net_delta) + params.delta_charge_hedged[und] * hedged) * index
    short_charge = params.short_option_charge[und] * short_option_units * index
    mm = loss + delta_charge + short_charge
    return RowMargin(loss, worst, delta_charge, short_charge, mm, mm / params.mm_to_im[und])
