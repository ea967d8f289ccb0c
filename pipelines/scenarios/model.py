"""Seeded stochastic market paths for crash scenarios: price (trend + diffusion + jumps), implied
volatility (a spike that follows the drawdown), order-book depth (evaporation windows) and the
oracle (stale or stuck windows).

Everything is drawn from one ``numpy.random.Generator`` seeded by the caller, in a fixed order,
so the same spec and seed give the same paths bit for bit. Time is in whole seconds from the
scenario start; the generator samples one point per ``step_s``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

YEAR_S = 365.0 * 86_400.0


@dataclasses.dataclass(frozen=True)
class UnderlyingPath:
    """One underlying's path: a drawdown of ``move`` (``-0.5`` = −50 %; positive for a pump)
    between ``start`` and ``start + length`` (fractions of the scenario), a partial
    ``recovery`` of the move by the end, diffusion at ``sigma`` (annualised), and ``jumps``
    ``(time fraction, log size)`` at fixed times plus Poisson jumps during the move
    (``jump_rate`` per minute, mean ``jump_mean`` log size, same sign as the move)."""

    underlying: str
    price: float
    move: float
    start: float = 0.2
    length: float = 0.4
    recovery: float = 0.2
    sigma: float = 0.8
    jumps: tuple[tuple[float, float], ...] = ()
    jump_rate: float = 0.2
    jump_mean: float = 0.01
    iv: float = 0.55
    iv_peak: float = 1.1
    options: bool = True


@dataclasses.dataclass(frozen=True)
class Window:
    """A stretch of the scenario, in fractions of its duration, with a level (meaning per use)."""

    start: float
    end: float
    level: float = 0.0

    def covers(self, fraction: float) -> bool:
        return self.start <= fraction < self.end


def move_progress(spec: UnderlyingPath, n: int) -> np.ndarray:
    """Per step, how far the move is along its smooth S-curve, from 0 before ``start`` to 1 at
    ``start + length``."""
    frac = np.arange(n) / max(n - 1, 1)
    progress = np.clip((frac - spec.start) / max(spec.length, 1e-9), 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * progress)


def price_path(rng: np.random.Generator, spec: UnderlyingPath, n: int, step_s: float) -> np.ndarray:
    """``n`` prices, one per step: trend to the move and back by ``recovery``, plus noise and jumps."""
    frac = np.arange(n) / max(n - 1, 1)
    target = math.log1p(spec.move)
    shape = move_progress(spec, n)  # smooth S-curve into the trough
    after = np.clip((frac - spec.start - spec.length) / max(1.0 - spec.start - spec.length, 1e-9), 0.0, 1.0)
    trend = target * shape - target * spec.recovery * after
    dt = step_s / YEAR_S
    noise = np.concatenate(([0.0], np.cumsum(rng.normal(0.0, spec.sigma * math.sqrt(dt), n - 1))))
    in_move = (frac >= spec.start) & (frac < spec.start + spec.length)
    rate = spec.jump_rate * step_s / 60.0
    hits = rng.random(n) < rate
    sizes = rng.exponential(abs(spec.jump_mean), n) * math.copysign(1.0, spec.move or 1.0)
    jumps = np.cumsum(np.where(hits & in_move, sizes, 0.0))
    for at, size in spec.jumps:
        jumps += np.where(frac >= at, size, 0.0)
    return spec.price * np.exp(trend + noise + jumps)


def iv_path(prices: np.ndarray, spec: UnderlyingPath) -> np.ndarray:
    """Implied vol rises with the drawdown from the running peak (or the pump's size) to ``iv_peak``."""
    move = abs(spec.move) or 1.0
    if spec.move >= 0:
        excursion = np.abs(prices / prices[0] - 1.0)
    else:
        excursion = 1.0 - prices / np.maximum.accumulate(prices)
    stress = np.clip(excursion / move, 0.0, 1.0)
    return spec.iv + (spec.iv_peak - spec.iv) * stress


def depth_path(n: int, base_usd: float, windows: tuple[Window, ...], prices: np.ndarray, spec: UnderlyingPath,
               floor: float = 0.15) -> np.ndarray:
    """One-side USD depth per step: thins with stress down to ``floor`` of ``base_usd``; inside a
    window, ``level`` × base (0 = no bidders at all)."""
    frac = np.arange(n) / max(n - 1, 1)
    move = abs(spec.move) or 1.0
    excursion = np.abs(prices / prices[0] - 1.0)
    stress = np.clip(excursion / move, 0.0, 1.0)
    depth = base_usd * (1.0 - (1.0 - floor) * stress)
    for window in windows:
        depth = np.where((frac >= window.start) & (frac < window.end), base_usd * window.level, depth)
    return depth
