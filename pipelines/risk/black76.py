"""Black-76 prices and Greeks, vectorised over numpy arrays (the crypto-options convention).

Options are priced on the forward ``F = S * exp(r * T)`` with discount ``DF = exp(-r * T)``,
where ``S`` is the underlying's index price, ``r`` the market's rate and ``T`` the time to
expiry in years (ACT/365). With one rate for carry and discounting this equals Black-Scholes on
the index, which is why the Greeks below are taken with respect to the *index*: that is what
the stream sees move, and what a hedge in the perpetual trades.

Conventions (also in docs/risk-model.md):
- delta, gamma: d/dS and d2/dS2 of the unit price, S the index price;
- vega: value change per one volatility point (0.01);
- theta: value change per calendar day as time passes (dV/dt / 365, t = calendar time, so
  T falls), the instantaneous rate rather than a finite one-day decay.
An option at or past expiry (T <= 0) is worth its intrinsic value ``max(w (S - K), 0)`` with a
step delta and zero gamma, vega and theta: the stream can see an option in its last
millisecond, and a NaN there would poison a whole account.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.special import ndtr

INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)
YEAR_DAYS = 365.0


@dataclasses.dataclass(frozen=True, eq=False)
class Greeks:
    """Unit price and Greeks, arrays of the broadcast input shape."""

    price: np.ndarray
    delta: np.ndarray
    gamma: np.ndarray
    vega: np.ndarray
    theta: np.ndarray


def _sign(is_call: np.ndarray | bool) -> np.ndarray:
    return np.where(is_call, 1.0, -1.0)


def black76_price(
    index: np.ndarray | float,
    strike: np.ndarray | float,
    t: np.ndarray | float,
    vol: np.ndarray | float,
    rate: np.ndarray | float,
    is_call: np.ndarray | bool,
) -> np.ndarray:
    """Unit price only: the hot path of scenario revaluation (about half the work of Greeks)."""
    s = np.asarray(index, dtype=np.float64)
    k = np.asarray(strike, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    w = _sign(is_call)
    live = t > 0.0
    t_pos = np.where(live, t, 1.0)
    df = np.exp(-np.asarray(rate, dtype=np.float64) * t_pos)
    f = s / df
    sd = np.asarray(vol, dtype=np.float64) * np.sqrt(t_pos)
    d1 = np.log(f / k) / sd + 0.5 * sd
    price = w * df * (f * ndtr(w * d1) - k * ndtr(w * (d1 - sd)))
    if live.all():
        return price
    return np.where(live, price, np.maximum(w * (s - k), 0.0))


def black76_greeks(
    index: np.ndarray | float,
    strike: np.ndarray | float,
    t: np.ndarray | float,
    vol: np.ndarray | float,
    rate: np.ndarray | float,
    is_call: np.ndarray | bool,
) -> Greeks:
    """Unit price, delta, gamma, vega (per vol point) and theta (per calendar day)."""
    s = np.asarray(index, dtype=np.float64)
    k = np.asarray(strike, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    r = np.asarray(rate, dtype=np.float64)
    sigma = np.asarray(vol, dtype=np.float64)
    w = _sign(is_call)
    live = t > 0.0
    t_pos = np.where(live, t, 1.0)
    sqrt_t = np.sqrt(t_pos)
    df = np.exp(-r * t_pos)
    f = s / df
    sd = sigma * sqrt_t
    d1 = np.log(f / k) / sd + 0.5 * sd
    d2 = d1 - sd
    n1 = ndtr(w * d1)
    n2 = ndtr(w * d2)
    pdf1 = INV_SQRT_2PI * np.exp(-0.5 * d1 * d1)
    price = w * df * (f * n1 - k * n2)
    # dF/dS = F/S = 1/DF, so the discount cancels in delta and gamma.
    delta = w * n1
    # an index so small that S * sd underflows to 0 has pdf1 = 0 too: gamma 0, never 0 / 0 = NaN
    # (a NaN margin compares false against every threshold and would leave an account "normal")
    s_sd = s * sd
    gamma = np.divide(pdf1, s_sd, out=np.zeros(np.broadcast(pdf1, s_sd).shape), where=s_sd > 0.0)
    vega_unit = s * pdf1 * sqrt_t  # DF * F * pdf * sqrt(T)
    # dV/dT (T = time to expiry) = r K DF w N(w d2) + S pdf sigma / (2 sqrt T); theta = -dV/dT / 365.
    dv_dt = w * r * k * df * n2 + vega_unit * sigma / (2.0 * t_pos)
    theta = -dv_dt / YEAR_DAYS
    vega = vega_unit * 0.01
    if not live.all():
        zero = np.zeros_like(price)
        intrinsic = np.maximum(w * (s - k), 0.0)
        price = np.where(live, price, intrinsic)
        delta = np.where(live, delta, np.where(intrinsic > 0.0, w, 0.0))
        gamma = np.where(live, gamma, zero)
        vega = np.where(live, vega, zero)
        theta = np.where(live, theta, zero)
    return Greeks(price, delta, gamma, vega, theta)
