"""Scenario margin: the grid, vol shocks, and hypothesis properties of the requirement."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pipelines.errors import UserError
from pipelines.risk.book import account_risk
from pipelines.risk.margin import VOL_DOWN, VOL_NONE, VOL_UP, MarginConfig, MarginParams, grid_and_params, shocked_vols
from tests.kit.books import portfolio
from tests.kit.markets import market

UNIVERSE = [
    "BTC-PERPETUAL", "BTC-27DEC26", "BTC-26MAR27",
    "BTC-27NOV26-60000-C", "BTC-27NOV26-60000-P", "BTC-27DEC26-50000-P", "BTC-27DEC26-70000-C",
    "BTC-26MAR27-80000-C", "BTC-26MAR27-40000-P", "ETH-PERPETUAL", "ETH-27DEC26-2400-C", "ETH-27DEC26-2000-P",
]
MKT = market()

qty = st.floats(-50, 50, allow_nan=False).filter(lambda q: abs(q) > 1e-3)
legs = st.lists(st.tuples(st.sampled_from(UNIVERSE), qty), min_size=1, max_size=8)


def mm(positions: list[tuple[str, float]], config: MarginConfig | None = None, collateral: float = 1e6) -> float:
    pf = portfolio(collateral, *positions)
    return float(account_risk(pf, MKT, config)[1].maintenance[0])


def test_default_grid_is_9_moves_by_3_vols_plus_8_weighted_extended() -> None:
    move, kind, weight = MarginParams().scenarios()
    assert len(move) == 27 + 8
    assert np.allclose(sorted(set(np.round(move[:27], 2))), np.arange(-0.16, 0.17, 0.04))
    assert set(kind[:27]) == {VOL_UP, VOL_NONE, VOL_DOWN}
    assert (kind[27:] == VOL_UP).all() and (weight[:27] == 1).all()
    assert dict(zip(move[27:].round(2), weight[27:], strict=True))[-0.66] == 0.24


def test_a_configs_grid_is_built_once_per_underlyings_and_cannot_be_changed() -> None:
    """Every revaluation tick asks for the grid; it is built once per config and underlyings,
    and read-only, so no caller can change what the next one gets."""
    config = MarginConfig()
    grid, params = grid_and_params(("BTC", "ETH"), config)
    assert grid_and_params(("BTC", "ETH"), config) == (grid, params)
    with pytest.raises(ValueError, match="read-only"):
        grid.move[0, 0] = 0.5
    with pytest.raises(ValueError, match="read-only"):
        params.mm_to_im[0] = 1.0
    other = MarginConfig(per_underlying={"ETH": MarginParams(moves=(-0.5, 0.5), extended=())})
    assert grid_and_params(("BTC", "ETH"), other)[0].count.tolist() == [len(config.default.scenarios()[0]), 6]
    assert grid_and_params(("ETH",), config)[0].count.tolist() == [len(config.default.scenarios()[0])]


def test_vol_shock_scaling_short_and_long_dated_and_floors() -> None:
    p = MarginParams()
    vol = np.array([0.6, 0.6, 0.3, 0.6])
    dte = np.array([30.0, 7.5, 30.0, 0.001])
    kinds = np.array([[VOL_UP, VOL_DOWN, VOL_NONE]])
    out = shocked_vols(vol, dte, kinds, p)
    assert np.allclose(out[0], [0.6 * 1.4, 0.6 * 0.78, 0.6])  # at 30 days the scale is 1
    scale = 4 ** 0.3  # (30 / 7.5) ** 0.3, short-dated power
    assert np.allclose(out[1, :2], [0.6 + 0.6 * 0.4 * scale, 0.6 * (1 - 0.22 * scale)])
    assert np.isclose(out[2, 0], 0.3 + 0.5 * 0.4)  # up-shock taken on max(vol, 0.5)
    assert np.allclose(out[3], shocked_vols(vol[3:], np.array([1.0]), kinds, p)[0])  # DTE floored at 1 day
    steep = MarginParams(vol_down=0.5)  # 1 - 0.5 * 30 ** 0.3 < 0 at one day: the floor holds
    assert shocked_vols(np.array([0.6]), np.array([1.0]), kinds, steep)[0, 1] == steep.min_shocked_vol
    long = shocked_vols(np.array([0.6]), np.array([120.0]), kinds, p)
    assert np.isclose(long[0, 0], 0.6 + 0.6 * 0.4 * 0.25 ** 0.13)


def test_bad_parameters_are_user_errors() -> None:
    with pytest.raises(UserError, match="mm_to_im"):
        MarginParams(mm_to_im=0)
    with pytest.raises(UserError, match="moves"):
        MarginParams(moves=(-1.5,))


def test_initial_margin_is_maintenance_over_the_configured_factor() -> None:
    pf = portfolio(1e6, ("BTC-27DEC26-60000-C", -10))
    _, r = account_risk(pf, MKT)
    assert np.isclose(r.initial[0], r.maintenance[0] / 0.8)
    cfg = MarginConfig(per_underlying={"BTC": MarginParams(mm_to_im=0.5)})
    _, r2 = account_risk(pf, MKT, cfg)
    assert np.isclose(r2.initial[0], 2 * r2.maintenance[0])


def test_long_perp_margin_is_the_16pct_move_plus_the_delta_charge() -> None:
    _, r = account_risk(portfolio(1e6, ("BTC-PERPETUAL", 2.0)), MKT)
    # Long 2 BTC: worst grid loss is -16 % (the -66 % extended move weighs 24 % -> 15.84 %).
    assert np.isclose(r.scenario_loss[0, 0], 2 * 60_000 * 0.16)
    assert np.isclose(r.delta_charge[0, 0], 0.02 * 2 * 60_000)
    assert np.isclose(r.maintenance[0], 2 * 60_000 * 0.18)


def test_short_option_charge_and_hedged_delta_charge() -> None:
    _, r = account_risk(portfolio(1e6, ("BTC-27DEC26-60000-C", -4), ("BTC-PERPETUAL", 1)), MKT)
    assert np.isclose(r.short_option_charge[0, 0], 0.01 * 4 * 60_000)
    call_delta = float(r.unit.delta[0])
    hedged = min(1.0, 4 * call_delta)
    net = abs(1 - 4 * call_delta)
    assert np.isclose(r.delta_charge[0, 0], (0.02 * net + 0.01 * hedged) * 60_000)


@settings(max_examples=60, deadline=None)
@given(legs)
def test_margin_is_never_negative_and_im_covers_mm(positions: list[tuple[str, float]]) -> None:
    pf = portfolio(1e5, *positions)
    _, r = account_risk(pf, MKT)
    assert r.maintenance[0] >= 0 and r.initial[0] >= r.maintenance[0]


@settings(max_examples=60, deadline=None)
@given(legs, st.floats(1.0, 10.0))
def test_margin_grows_with_position_size(positions: list[tuple[str, float]], k: float) -> None:
    base = mm(positions)
    assert mm([(n, q * k) for n, q in positions]) >= base * (1 - 1e-12) - 1e-9


@settings(max_examples=60, deadline=None)
@given(legs, st.floats(0.0, 1.0))
def test_adding_the_opposite_position_never_raises_margin(positions: list[tuple[str, float]], frac: float) -> None:
    base = mm(positions)
    opposite = [(n, -q * frac) for n, q in positions]  # the opposite book, up to its full size
    assert mm(positions + opposite) <= base * (1 + 1e-12) + 1e-9
    flat = mm(positions + [(n, -q) for n, q in positions])
    assert flat == 0.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(UNIVERSE), min_size=1, max_size=1), st.floats(0.01, 100), st.floats(0.0, 1.0))
def test_single_leg_adding_any_part_of_its_opposite_never_raises_margin(name: list[str], q: float, frac: float) -> None:
    for sign in (1.0, -1.0):
        assert mm([(name[0], sign * q), (name[0], -sign * q * frac)]) <= mm([(name[0], sign * q)]) * (1 + 1e-12) + 1e-9


# "In small moves": index moves only (no vol shock, no extended scenarios), where convexity
# makes the delta hedge pay: the hedged loss is the Bregman gap V(S') - V(S) - D (S' - S).
SMALL_MOVES = MarginConfig(MarginParams(moves=(-0.03, -0.02, -0.01, 0.0, 0.01, 0.02, 0.03), vol_up=0.0,
                                        vol_down=0.0, extended=()))


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(["27NOV26", "27DEC26", "26MAR27"]), st.sampled_from([50_000, 56_000, 60_000, 64_000, 70_000]),
       st.floats(0.5, 40.0))
def test_delta_hedged_short_straddle_needs_less_margin_than_naked_in_small_moves(expiry: str, strike: int,
                                                                                  size: float) -> None:
    straddle = [(f"BTC-{expiry}-{strike}-C", -size), (f"BTC-{expiry}-{strike}-P", -size)]
    _, r = account_risk(portfolio(1e6, *straddle), MKT, SMALL_MOVES)
    delta = float(r.delta[0, 0])
    assume(abs(delta) > 0.01 * size)  # an at-the-money straddle has nothing to hedge
    hedged = straddle + [("BTC-PERPETUAL", -delta)]
    assert mm(hedged, SMALL_MOVES) < mm(straddle, SMALL_MOVES)
