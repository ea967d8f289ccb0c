"""Adaptive maintenance margin: the "adaptive liquidation engine".

The scenario grid prices a fixed, instantaneous shock. What it misses is what hurts a
liquidator: closing a book takes time, more time the thinner the book is relative to the
position, and during that time a short-gamma, short-vega book keeps losing, faster the faster
the market moves. So for each (account, underlying) we add what the book can lose *while it is
being liquidated* in the market as the stream sees it now:

    tau   = base_horizon_days + step_days * gross_notional / (participation * depth)   [days]
    sigma = max(realised vol, implied vol)                                            [annual]
    m     = z * sigma * sqrt(tau / 365)               (index move over the horizon, fraction)
    dvol  = z * vol_of_vol * sigma * sqrt(tau / 365)  (vol move over the horizon, absolute)
    gamma add-on    = 1/2 * max(0, -Gamma) * (S m)^2
    vega add-on     = max(0, -Vega) * 100 * dvol     (Vega per vol point)
    slippage add-on = impact * N * sqrt(N / depth),  N = |net delta| * S
    add-on = min(gamma + vega + slippage add-ons, (max_multiplier - 1) * MM_base)

``depth`` is the USD depth within ``depth_band`` of mid on one side (from the stream's order
book). The gamma and vega add-ons are superlinear in size (tau grows with gross notional /
depth): concentration in a thin market costs more than proportionally. Long gamma and long vega
get no credit, so the add-on never lowers the requirement. Unknown depth (NaN or inf) means
"deep": the horizon is the base one. The formula, defaults and a worked example are in
docs/risk-model.md.
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Mapping

import numpy as np

from pipelines.errors import UserError

YEAR_DAYS = 365.0


@dataclasses.dataclass(frozen=True)
class AdaptiveParams:
    z: float = 2.33  # one-sided 99 %
    base_horizon_days: float = 15.0 / 1440.0  # 15 min: Derive's first auction phase (95 % -> 70 % of MtM)
    step_seconds: float = 30.0  # Hyperliquid: 20 % of a large position to the book, then 30 s
    participation: float = 0.20  # fraction of the visible depth taken per step (Hyperliquid 20 %)
    vol_of_vol: float = 1.0  # annualised vol of implied vol (crypto ATM IV: roughly 60-120 %)
    depth_band: float = 0.01  # depth is measured within 1 % of mid
    impact: float = 0.005  # half the band: walking a uniform book to 1 % costs 0.5 % on average
    max_multiplier: float = 3.0  # cap: adaptive MM <= 3 x base MM, bad stream data cannot run away

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not np.isfinite(value) or value < 0:
                raise UserError(f"adaptive parameter {f.name}: expected a finite non-negative number")
        if self.max_multiplier < 1:
            raise UserError("adaptive parameter max_multiplier: must be at least 1")


@dataclasses.dataclass(frozen=True)
class MarketConditions:
    """What the stream measures per underlying: realised vol (annualised) and one-side depth in
    USD within ``AdaptiveParams.depth_band`` of mid. Missing values mean "no information"."""

    realised_vol: Mapping[str, float] = dataclasses.field(default_factory=dict)
    depth_usd: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def arrays(self, underlyings: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        rv = np.array([self.realised_vol.get(u, np.nan) for u in underlyings], dtype=np.float64)
        depth = np.array([self.depth_usd.get(u, np.inf) for u in underlyings], dtype=np.float64)
        return rv, depth


@dataclasses.dataclass(eq=False)
class ConditionBuffers:
    """A realised vol and a depth array as long as ``underlyings``, which only the conditions
    ``owner`` (their maker's latest) writes its ``arrays(underlyings)`` into: arrays handed out
    from here hold the owner's values until the maker gives the buffers to newer conditions, and
    older conditions asked later make arrays of their own instead of writing over the owner's."""

    underlyings: tuple[str, ...]
    realised_vol: np.ndarray
    depth: np.ndarray
    owner: HeldConditions | None = None


@dataclasses.dataclass(frozen=True)
class HeldConditions(MarketConditions):
    """Conditions whose values cannot change after they are made (``MarketBoard.conditions``',
    reused tick after tick while unchanged, and what a compiled layout keeps its market rows
    for): the dicts are read-only copies (a write raises ``TypeError``); ``arrays`` are made once
    per underlyings tuple and shared, so not to be written to either (the kernels and the numpy
    reference only read them). ``buffers``: the maker's (``ConditionBuffers``): while these
    conditions own them, ``arrays`` of their tuple are written into them, so those arrays are
    valid while these are the maker's latest (a tick's, read within the tick)."""

    buffers: ConditionBuffers | None = dataclasses.field(default=None, compare=False, repr=False)
    _arrays: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = dataclasses.field(
        default_factory=dict, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "realised_vol", types.MappingProxyType(dict(self.realised_vol)))
        object.__setattr__(self, "depth_usd", types.MappingProxyType(dict(self.depth_usd)))

    def arrays(self, underlyings: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        made = self._arrays.get(underlyings)
        if made is None:
            buffers = self.buffers
            if buffers is not None and buffers.owner is self and buffers.underlyings == underlyings:
                made = self._filled(buffers)
            else:
                made = super().arrays(underlyings)
            self._arrays[underlyings] = made
        return made

    def _filled(self, buffers: ConditionBuffers) -> tuple[np.ndarray, np.ndarray]:
        """``MarketConditions.arrays(buffers.underlyings)``, written into the buffers' arrays."""
        vols, depths, rv, depth = self.realised_vol, self.depth_usd, buffers.realised_vol, buffers.depth
        for k, u in enumerate(buffers.underlyings):
            rv[k] = vols.get(u, math.nan)
            depth[k] = depths.get(u, math.inf)
        return rv, depth


@dataclasses.dataclass(frozen=True, eq=False)
class AdaptiveAddon:
    horizon_days: np.ndarray
    move: np.ndarray
    vol_move: np.ndarray
    gamma_addon: np.ndarray
    vega_addon: np.ndarray
    slippage_addon: np.ndarray
    total: np.ndarray  # after the cap


def adaptive_addon(
    gamma: np.ndarray,
    vega: np.ndarray,
    net_delta: np.ndarray,
    gross_notional: np.ndarray,
    index: np.ndarray,
    implied_vol: np.ndarray,
    realised_vol: np.ndarray,
    depth_usd: np.ndarray,
    base_maintenance: np.ndarray,
    params: AdaptiveParams,
) -> AdaptiveAddon:
    """The add-on of each (account, underlying) row; all arguments broadcast together."""
    rv = np.where(np.isfinite(realised_vol) & (realised_vol > 0), realised_vol, 0.0)
    sigma = np.maximum(rv, implied_vol)
    deep = ~np.isfinite(depth_usd) | (depth_usd <= 0)
    safe_depth = np.where(deep, 1.0, depth_usd)
    ratio = np.where(deep, 0.0, gross_notional / (params.participation * safe_depth)) if params.participation > 0 \
        else np.zeros_like(gross_notional)
    horizon = params.base_horizon_days + params.step_seconds / 86_400.0 * ratio
    root = np.sqrt(horizon / YEAR_DAYS)
    move = params.z * sigma * root
    vol_move = params.z * params.vol_of_vol * sigma * root
    gamma_addon = 0.5 * np.maximum(-gamma, 0.0) * (index * move) ** 2
    vega_addon = np.maximum(-vega, 0.0) * 100.0 * vol_move
    delta_notional = np.abs(net_delta) * index
    slippage = np.where(deep, 0.0, params.impact * delta_notional * np.sqrt(delta_notional / safe_depth))
    raw = gamma_addon + vega_addon + slippage
    total = np.minimum(raw, (params.max_multiplier - 1.0) * base_maintenance)
    return AdaptiveAddon(horizon, move, vol_move, gamma_addon, vega_addon, slippage, total)
