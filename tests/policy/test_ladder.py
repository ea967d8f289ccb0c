from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.detect.breach import Breach, BreachKind
from pipelines.errors import UserError
from pipelines.policy.ladder import (
    AccountState,
    AccountView,
    CloseIntent,
    Ladder,
    LadderParams,
    time_to_breach_ms,
    times_to_breach_ms,
)


def view(t: int, ratio: float, equity: float = 100_000.0, delta: float = 0.0, velocity: float = 0.0,
         hedged: bool = False) -> AccountView:
    mm = ratio * equity
    return AccountView("a", t, equity, mm, mm / 0.8, ratio, {"BTC": delta}, {"BTC": 0.0}, {"BTC": 0.0},
                       {"BTC": 60_000.0}, {"BTC": velocity}, hedged)


def shortfall(t: int) -> Breach:
    return Breach(BreachKind.MARGIN_SHORTFALL, "a", t, 1.05, 1.0, t - 3000, t, ("e",))


LEGS = [CloseIntent("BTC-PERPETUAL", "BTC", -10.0, 60_000.0)]


def plan(_target: float) -> list[CloseIntent]:
    return LEGS


def types(decisions) -> list[str]:
    return [d.action_type.value for d in decisions]


def test_time_to_breach_linear_and_quadratic() -> None:
    # 10 BTC long, index falling $1 per ms: equity 100k above MM 50k -> 50k / 10 per ms = 5 s
    assert time_to_breach_ms(view(0, 0.5, delta=10.0, velocity=-1.0)) == 5_000
    assert time_to_breach_ms(view(0, 0.5, delta=10.0, velocity=+1.0)) == math.inf
    assert time_to_breach_ms(view(0, 1.2)) == 0.0


def test_predictive_margin_call_before_the_ratio_is_high() -> None:
    ladder = Ladder()
    out = ladder.on_revaluation(view(0, 0.5, delta=10.0, velocity=-0.1), [], LEGS, plan, set(), set())
    assert types(out) == ["margin_call"] and dict(out[0].params)["predictive"] == "true"
    assert ladder.state("a") is AccountState.MARGIN_CALL
    calm = Ladder()
    assert calm.on_revaluation(view(0, 0.5, delta=10.0, velocity=0.0), [], LEGS, plan, set(), set()) == []


def test_escalation_and_hysteresis() -> None:
    ladder = Ladder()
    assert types(ladder.on_revaluation(view(0, 0.85), [], LEGS, plan, set(), set())) == ["margin_call"]
    assert ladder.on_revaluation(view(1_000, 0.75), [], LEGS, plan, set(), set()) == []  # above release: stays
    assert types(ladder.on_revaluation(view(2_000, 0.95), [], LEGS, plan, set(), set())) == ["reduce_only"]
    out = ladder.on_revaluation(view(3_000, 1.05), [shortfall(3_000)], LEGS, plan, set(), set())
    assert types(out) == ["partial_liquidation"] and ladder.state("a") is AccountState.LIQUIDATING
    assert out[0].breach_ids and out[0].side == "sell"
    assert ladder.on_revaluation(view(3_500, 1.05), [], LEGS, plan, set(), set()) == []  # one round a second
    ladder.on_revaluation(view(5_000, 0.6), [], LEGS, plan, set(), set())
    assert ladder.state("a") is AccountState.NORMAL


def test_rounds_ramp_are_capped_and_respect_in_flight() -> None:
    ladder = Ladder(LadderParams(round_notional_usd=1e12))
    first = ladder.on_revaluation(view(0, 1.05), [shortfall(0)], LEGS, plan, set(), set())
    assert first[0].quantity == 10.0 * 0.2  # the initial share
    later = ladder.on_revaluation(view(30_000, 1.05), [], LEGS, plan, set(), set())
    assert later[0].quantity == 10.0 * (0.2 + 0.5) - 2.0  # ramped share minus what is in flight
    ladder.on_position_update("a", "BTC-PERPETUAL")
    capped = Ladder(LadderParams(round_notional_usd=120_000.0))
    out = capped.on_revaluation(view(0, 1.05), [shortfall(0)], LEGS, plan, set(), set())
    assert out[0].quantity * 60_000.0 == 120_000.0


# one round's plan, worked by hand (defaults: 20 % ramped to 100 % over 60 s, $100,000 per round,
# none under $1,000); at 18 s of distress the share is 0.2 + 18/60 = 0.5
WORKED_PLAN = [CloseIntent("ETH-PERPETUAL", "ETH", -100.0, 2_000.0),  # ETH's oracle unreliable: waits
               CloseIntent("LINK-PERPETUAL", "LINK", -1_000.0, 20.0),  # a manipulated mark: waits
               CloseIntent("BTC-PERPETUAL", "BTC", -4.0, 10_000.0),  # -2 of it, -0.5 in flight: -1.5, $15,000
               CloseIntent("BTC-C", "BTC", 2.0, 1_000.0),  # 1 of it, 3 in flight: past it, no sale back
               CloseIntent("BTC-PERPETUAL", "BTC", -10.0, 10_000.0),  # -5, -2 now in flight: -3, $30,000
               CloseIntent("SOL-PERPETUAL", "SOL", 50.0, 100.0),  # 25, $2,500, thin: to the LPs
               CloseIntent("DOGE-PERPETUAL", "DOGE", 1_000.0, 1.5),  # 500, $750: under the minimum
               CloseIntent("AVAX-PERPETUAL", "AVAX", 2_000.0, 100.0),  # 1,000, $100,000: capped at $52,500 left
               CloseIntent("XRP-PERPETUAL", "XRP", 100.0, 100.0)]  # the budget is spent: not reached


def worked_ladder() -> Ladder:
    ladder = Ladder()
    ladder.restore_account("a", {"state": "liquidating", "distress_since_ms": 0, "last_round_ms": None,
                                 "breach_ids": ["b"], "last_hedge_ms": None,
                                 "in_flight": {"BTC-PERPETUAL": -0.5, "BTC-C": 3.0}})
    return ladder


def test_a_rounds_orders_worked_by_hand() -> None:
    """The round loop's arithmetic on numbers worked out by hand: the ramped share, less what
    is in flight (this round's own orders included, for an instrument planned twice), never
    past the position, the round's notional budget spent leg by leg (the last leg capped to
    what is left, then the round ends), none under the minimum, thin books to the LPs, legs
    on an unreliable underlying or instrument skipped; ``on_revaluation`` sends those orders
    and puts them in flight."""
    ladder, thin, unreliable = worked_ladder(), {"SOL-PERPETUAL"}, {"ETH", "LINK-PERPETUAL"}
    orders = ladder.round_orders("a", WORKED_PLAN, 18_000, thin, unreliable)
    assert [(leg.instrument, kind.value) for leg, _, kind in orders] == [
        ("BTC-PERPETUAL", "partial_liquidation"), ("BTC-PERPETUAL", "partial_liquidation"),
        ("SOL-PERPETUAL", "transfer_to_lp"), ("AVAX-PERPETUAL", "partial_liquidation")]
    assert [qty for _, qty, _ in orders[:3]] == [-1.5, -3.0, 25.0]
    assert orders[3][1] == pytest.approx(525.0, rel=1e-15)  # 1,000 x 52,500 / 100,000
    assert [leg for leg, _, _ in orders] == [WORKED_PLAN[2], WORKED_PLAN[4], WORKED_PLAN[5], WORKED_PLAN[7]]
    view = AccountView("a", 18_000, 100_000.0, 90_000.0, 100_000.0, 0.9, {"BTC": 0.0}, {"BTC": 0.0},
                       {"BTC": 0.0}, {"BTC": 60_000.0}, {"BTC": 0.0})  # over the target 0.9 / 1.02
    decisions = ladder.on_revaluation(view, [], [], lambda target: WORKED_PLAN, thin, unreliable)
    assert [(d.instrument, d.side, d.quantity) for d in decisions] == [
        ("BTC-PERPETUAL", "sell", 1.5), ("BTC-PERPETUAL", "sell", 3.0), ("SOL-PERPETUAL", "buy", 25.0),
        ("AVAX-PERPETUAL", "buy", orders[3][1])]
    in_flight = ladder.account_state("a")["in_flight"]
    assert in_flight == {"BTC-PERPETUAL": -5.0, "BTC-C": 3.0, "SOL-PERPETUAL": 25.0, "AVAX-PERPETUAL": orders[3][1]}
    # $99,500 spent on the first leg, the next one's $5,000 capped to the $500 left: under the minimum
    spent = [CloseIntent("SOL-PERPETUAL", "SOL", 1_990.0, 100.0), CloseIntent("AVAX-PERPETUAL", "AVAX", 100.0, 100.0)]
    assert [(leg.instrument, qty) for leg, qty, _ in worked_ladder().round_orders("a", spent, 18_000, set(), set())
            ] == [("SOL-PERPETUAL", 995.0)]


def test_a_rounds_share_starts_at_the_initial_share_and_ramps_to_all() -> None:
    """The share of each leg is 20 % with no distress time, 20 % + elapsed / 60 s, and all of
    it from 48 s on (here less the 0.5 in flight, within a budget it does not reach)."""
    ladder, leg = worked_ladder(), [CloseIntent("BTC-PERPETUAL", "BTC", -5.0, 10_000.0)]
    assert [qty for _, qty, _ in ladder.round_orders("a", leg, 0, set(), set())] == [-0.5]  # -1 + 0.5
    assert [qty for _, qty, _ in ladder.round_orders("a", leg, 18_000, set(), set())] == [-2.0]
    assert [qty for _, qty, _ in ladder.round_orders("a", leg, 48_000, set(), set())] == [-4.5]
    assert [qty for _, qty, _ in ladder.round_orders("a", leg, 600_000, set(), set())] == [-4.5]
    assert ladder.round_orders("a", [leg[0]._replace(qty=-2.9)], 0, set(), set()) == []  # -0.08: $800


def test_a_round_that_sends_nothing_still_paces_the_next() -> None:
    """In flight covers the plan: the round sends nothing, and the plan is not asked again on
    the next tick (a fast feed revalues every 250 ms) but a round later."""
    ladder = Ladder(LadderParams(round_notional_usd=1e12, ramp_ms=10**9))  # the share stays at 20 %
    asked: list[float] = []

    def counted(target: float) -> list[CloseIntent]:
        asked.append(target)
        return LEGS

    assert types(ladder.on_revaluation(view(0, 1.05), [shortfall(0)], LEGS, counted, set(), set())) == [
        "partial_liquidation"]
    assert ladder.on_revaluation(view(1_000, 1.05), [], LEGS, counted, set(), set()) == []  # covered
    assert ladder.on_revaluation(view(1_250, 1.05), [], LEGS, counted, set(), set()) == []
    assert len(asked) == 2
    assert not ladder.may_round("a", 1.05, 1_250, 1.0) and ladder.may_round("a", 1.05, 2_000, 1.0)
    ladder.on_revaluation(view(2_000, 1.05), [], LEGS, counted, set(), set())
    assert len(asked) == 3


def test_thin_book_goes_to_lps_and_unreliable_oracle_suspends() -> None:
    ladder = Ladder()
    out = ladder.on_revaluation(view(0, 1.05), [shortfall(0)], LEGS, plan, {"BTC-PERPETUAL"}, set())
    assert types(out) == ["transfer_to_lp"]
    suspended = Ladder()
    assert suspended.on_revaluation(view(0, 1.05), [shortfall(0)], LEGS, plan, set(), {"BTC"}) == []


def test_equity_below_liquidation_closes_everything_once() -> None:
    ladder = Ladder()
    breach = Breach(BreachKind.EQUITY_BELOW_LIQUIDATION, "a", 0, 1.6, 1.5, 0, 0, ("e",))
    out = ladder.on_revaluation(view(0, 1.6), [breach], LEGS, plan, set(), set())
    assert types(out) == ["full_liquidation"] and out[0].quantity == 10.0
    assert ladder.on_revaluation(view(1_000, 1.7), [breach], LEGS, plan, set(), set()) == []


def test_delta_hedge_for_hedged_accounts_accounts_for_in_flight() -> None:
    ladder = Ladder()
    out = ladder.on_revaluation(view(0, 0.3, delta=5.0, hedged=True), [], LEGS, plan, set(), set())
    assert types(out) == ["delta_hedge"] and (out[0].side, out[0].quantity) == ("sell", 5.0)
    assert ladder.on_revaluation(view(2_000, 0.3, delta=5.0, hedged=True), [], LEGS, plan, set(), set()) == []


def scaled(bound: float) -> st.SearchStrategy[float]:
    """0, or a magnitude in [1e-6, bound] of either sign: the range of slack, gamma and delta terms."""
    magnitude = st.floats(1e-6, bound)
    return st.one_of(st.just(0.0), magnitude, magnitude.map(lambda x: -x))


@settings(max_examples=300, deadline=None)
@given(scaled(1e6), scaled(1e3), scaled(1e4))
def test_vectorised_time_to_breach_is_the_smallest_positive_root(slack: float, a: float, b: float) -> None:
    got = float(times_to_breach_ms(np.array([slack]), np.array([a]), np.array([b]))[0])
    if slack <= 0:
        assert got == 0.0
        return
    roots = np.roots([a, b, slack]) if abs(a) >= 1e-18 else np.roots([b, slack])
    positive = [r.real for r in np.atleast_1d(roots) if abs(r.imag) <= 1e-9 * max(1.0, abs(r.real)) and r.real > 0]
    if not positive:
        assert got == math.inf
    else:
        assert got == pytest.approx(min(positive), rel=1e-6)


def test_a_liquidated_accounts_unfilled_residual_escalates_to_the_insurance_fund() -> None:
    ladder = Ladder()
    breach = Breach(BreachKind.EQUITY_BELOW_LIQUIDATION, "a", 0, 1.6, 1.5, 0, 0, ("e",))
    out = ladder.on_revaluation(view(0, 1.6), [breach], LEGS, plan, {"BTC-PERPETUAL"}, set())
    assert types(out) == ["transfer_to_lp"] and out[0].quantity == 10.0
    ladder.on_position_update("a", "BTC-PERPETUAL")  # the LPs took 4 of the 10
    residual = [CloseIntent("BTC-PERPETUAL", "BTC", -6.0, 60_000.0)]
    assert ladder.on_revaluation(view(500, 1.7), [], residual, plan, {"BTC-PERPETUAL"}, set()) == []  # same round
    out = ladder.on_revaluation(view(1_000, 1.7), [], residual, plan, {"BTC-PERPETUAL"}, set())
    assert types(out) == ["insurance_fund"] and (out[0].side, out[0].quantity) == ("sell", 6.0)
    assert out[0].breach_ids == (breach.breach_id,)  # the breach the first round answered
    assert ladder.on_revaluation(view(2_000, 1.8), [], residual, plan, set(), set()) == []  # still in flight
    ladder.on_position_update("a", "BTC-PERPETUAL")  # nothing taken yet: sent again
    assert types(ladder.on_revaluation(view(3_000, 1.8), [], residual, plan, set(), set())) == ["insurance_fund"]
    ladder.on_position_update("a", "BTC-PERPETUAL")
    assert ladder.on_revaluation(view(4_000, 1.9), [], residual, plan, set(), {"BTC"}) == []  # oracle: waits
    ladder.on_position_update("a", "BTC-PERPETUAL")  # closed
    assert ladder.on_revaluation(view(5_000, 0.0), [], [], plan, set(), set()) == []
    assert ladder.state("a") is AccountState.NORMAL


MARGINS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, -1.0, 1e-300]))


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(MARGINS, MARGINS), min_size=1, max_size=20), st.sampled_from([0.0, 0.02, 0.1]))
def test_target_ratios_are_target_ratio_of_to_the_bit(margins, buffer) -> None:
    """The engine plans with the vectorised targets, the ladder rounds with the scalar one."""
    ladder = Ladder(LadderParams(buffer=buffer))
    maintenance, initial = (np.array(column, dtype=np.float64) for column in zip(*margins))
    scalar = [ladder.target_ratio_of(m, i) for m, i in margins]
    assert np.array_equal(ladder.target_ratios(maintenance, initial), np.array(scalar), equal_nan=True)
    assert [math.copysign(1.0, t) for t in ladder.target_ratios(maintenance, initial).tolist()] == \
        [math.copysign(1.0, t) for t in scalar]


@pytest.mark.parametrize(("field", "value", "message"), [
    ("ramp_ms", 0, "ladder parameter ramp_ms: must be positive, got 0"),
    ("round_ms", -1, "ladder parameter round_ms: expected a finite non-negative number, got -1"),
    ("min_notional_usd", math.nan, "ladder parameter min_notional_usd: expected a finite non-negative number, got nan"),
    ("round_notional_usd", math.inf,
     "ladder parameter round_notional_usd: expected a finite non-negative number, got inf"),
])
def test_ladder_parameters_that_cannot_be_used_are_refused(field: str, value: float, message: str) -> None:
    with pytest.raises(UserError) as refused:
        LadderParams(**{field: value})
    assert str(refused.value) == message
