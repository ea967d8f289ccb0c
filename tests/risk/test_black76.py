"""Prices and Greeks against QuantLib's BlackCalculator on randomised options, parity, and
finite-difference checks of the vega and theta conventions."""

from __future__ import annotations

import numpy as np
import QuantLib as ql
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.risk.black76 import black76_greeks, black76_price


def random_options(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    s = rng.uniform(0.5, 100_000.0, n)
    t = rng.uniform(1.0 / 365.0, 3.0, n)
    vol = rng.uniform(0.05, 2.0, n)
    rate = rng.uniform(-0.02, 0.15, n)
    # Strikes within 2.5 standard deviations of the forward: prices stay well above rounding.
    k = s * np.exp(rate * t) * np.exp(rng.uniform(-2.5, 2.5, n) * vol * np.sqrt(t))
    return {"s": s, "k": k, "t": t, "vol": vol, "rate": rate, "call": rng.random(n) < 0.5}


def quantlib(o: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, list[float]] = {g: [] for g in ("price", "delta", "gamma", "vega", "theta")}
    for s, k, t, vol, rate, call in zip(o["s"], o["k"], o["t"], o["vol"], o["rate"], o["call"], strict=True):
        df = float(np.exp(-rate * t))
        payoff = ql.PlainVanillaPayoff(ql.Option.Call if call else ql.Option.Put, float(k))
        calc = ql.BlackCalculator(payoff, float(s) / df, float(vol * np.sqrt(t)), df)
        out["price"].append(calc.value())
        out["delta"].append(calc.delta(float(s)))
        out["gamma"].append(calc.gamma(float(s)))
        out["vega"].append(calc.vega(float(t)) / 100.0)  # QuantLib: per unit vol; ours: per vol point
        out["theta"].append(calc.thetaPerDay(float(s), float(t)))
    return {g: np.array(v) for g, v in out.items()}


def rel_err(ours: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return np.abs(ours - ref) / np.abs(ref)


def test_prices_and_greeks_match_quantlib_on_random_options() -> None:
    o = random_options(2_000, seed=20261123)
    ref = quantlib(o)
    g = black76_greeks(o["s"], o["k"], o["t"], o["vol"], o["rate"], o["call"])
    assert rel_err(g.price, ref["price"]).max() < 1e-9
    assert np.array_equal(black76_price(o["s"], o["k"], o["t"], o["vol"], o["rate"], o["call"]), g.price)
    for name in ("delta", "gamma", "vega"):
        assert rel_err(getattr(g, name), ref[name]).max() < 1e-6, name
    # Theta crosses zero for some puts with positive rates: relative to its own size where that
    # is meaningful, else absolute against a millionth of the daily decay scale.
    scale = np.maximum(np.abs(ref["theta"]), 1e-3 * g.vega * 100 * o["vol"] / (2 * o["t"] * 365))
    assert (np.abs(g.theta - ref["theta"]) / scale).max() < 1e-6


@settings(max_examples=200, deadline=None)
@given(
    s=st.floats(1.0, 200_000.0), moneyness=st.floats(-2.0, 2.0), t=st.floats(0.003, 4.0),
    vol=st.floats(0.05, 2.5), rate=st.floats(-0.05, 0.2), call=st.booleans(),
)
def test_hypothesis_options_match_quantlib(s: float, moneyness: float, t: float, vol: float, rate: float,
                                           call: bool) -> None:
    k = s * np.exp(rate * t + moneyness * vol * np.sqrt(t))
    o = {"s": np.array([s]), "k": np.array([k]), "t": np.array([t]), "vol": np.array([vol]),
         "rate": np.array([rate]), "call": np.array([call])}
    ref = quantlib(o)
    g = black76_greeks(s, k, t, vol, rate, call)
    assert rel_err(g.price, ref["price"]).max() < 1e-9
    for name in ("delta", "gamma", "vega"):
        assert rel_err(np.atleast_1d(getattr(g, name)), ref[name]).max() < 1e-6, name


def test_put_call_parity() -> None:
    o = random_options(5_000, seed=7)
    call = black76_price(o["s"], o["k"], o["t"], o["vol"], o["rate"], True)
    put = black76_price(o["s"], o["k"], o["t"], o["vol"], o["rate"], False)
    parity = o["s"] - o["k"] * np.exp(-o["rate"] * o["t"])  # DF * (F - K)
    assert np.allclose(call - put, parity, rtol=1e-10, atol=1e-10 * o["s"].max())
    gc = black76_greeks(o["s"], o["k"], o["t"], o["vol"], o["rate"], True)
    gp = black76_greeks(o["s"], o["k"], o["t"], o["vol"], o["rate"], False)
    assert np.allclose(gc.delta - gp.delta, 1.0)
    assert np.allclose(gc.gamma, gp.gamma) and np.allclose(gc.vega, gp.vega)


def test_vega_is_per_vol_point_and_theta_per_calendar_day() -> None:
    s, k, t, vol, r = 60_000.0, 62_000.0, 45 / 365, 0.6, 0.03
    g = black76_greeks(s, k, t, vol, r, True)
    h = 1e-6
    dv = (black76_price(s, k, t, vol + h, r, True) - black76_price(s, k, t, vol - h, r, True)) / (2 * h)
    assert np.isclose(g.vega, dv * 0.01, rtol=1e-6)
    day = 1 / 365
    one_day_later = black76_price(s, k, t - day, vol, r, True) - black76_price(s, k, t, vol, r, True)
    assert g.theta < 0 and np.isclose(g.theta, one_day_later, rtol=2e-2)  # first order in one day
    dd = (black76_price(s + 1, k, t, vol, r, True) - black76_price(s - 1, k, t, vol, r, True)) / 2
    assert np.isclose(g.delta, dd, rtol=1e-6)


def test_expired_options_are_worth_intrinsic_with_no_time_greeks() -> None:
    g = black76_greeks(np.array([100.0, 100.0, 100.0]), np.array([90.0, 110.0, 90.0]), np.array([0.0, -0.1, 0.0]),
                       0.5, 0.0, np.array([True, False, False]))
    assert g.price.tolist() == [10.0, 10.0, 0.0]
    assert g.delta.tolist() == [1.0, -1.0, 0.0]
    assert not g.gamma.any() and not g.vega.any() and not g.theta.any()
