"""``Ladder.unmoved`` (with ``Ladder.hedge_waits`` for a hedged account): where it says a revaluation
leaves an account alone, ``on_revaluation`` returns nothing and changes nothing (the engine skips
those accounts' per-account path)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from hypothesis import event, given, settings
from hypothesis import strategies as st

from pipelines.policy.actions import ActionType
from pipelines.policy.circuit import TradingState
from pipelines.policy.ladder import AccountState, AccountView, CloseIntent, Ladder

RATIOS = st.one_of(st.sampled_from([0.0, 0.69, 0.7, 0.75, 0.8, 0.85, 0.9, 1.0, 1.6, math.nan, math.inf]),
                   st.floats(0.0, 2.5))
LEGS = [CloseIntent("BTC-PERPETUAL", "BTC", -10.0, 60_000.0)]


def codes(ladder: Ladder, account: str, closes: Sequence[CloseIntent],
          unreliable: frozenset[str] = frozenset()) -> tuple[np.ndarray, ...]:
    """``Ladder.code`` as the one-account arrays ``unmoved`` and ``round_only`` read."""
    legs = [(leg.instrument, leg.underlying, leg.qty) for leg in closes]
    return tuple(np.array([value]) for value in ladder.code(account, legs, unreliable))


def unmoved(ladder: Ladder, view: AccountView, positions: Sequence[CloseIntent] = (),
            trading: Mapping[str, TradingState] | None = None) -> bool:
    """``unmoved``, and for a hedged view ``hedge_waits`` too, as the engine's triage reads them."""
    state, last_round, _, last_hedge, held = codes(ladder, view.account, [])
    left = ladder.unmoved(state, last_round, held, np.array([view.margin_ratio]),
                          np.array([view.time_to_breach_ms]), np.array([view.maintenance]),
                          np.array([view.initial]), view.event_time_ms)[0]
    return bool(left and (not view.hedged or hedge_waits(ladder, view, positions, trading or {})))


def hedge_waits(ladder: Ladder, view: AccountView, positions: Sequence[CloseIntent],
                trading: Mapping[str, TradingState]) -> bool:
    underlyings = sorted(view.delta)
    state, _, _, last_hedge, _ = codes(ladder, view.account, [])
    held = {leg.instrument: -leg.qty for leg in positions}
    return bool(ladder.hedge_waits(
        state, last_hedge, np.array([[view.delta[u] for u in underlyings]]),
        np.array([ladder.hedges_in_flight(view.account, underlyings)]),
        np.array([[held.get(f"{u}-PERPETUAL", 0.0) for u in underlyings]]),
        np.array([trading.get(u, TradingState.ACTIVE).allows_risk_increase for u in underlyings]),
        np.array([view.index[u] for u in underlyings]), view.event_time_ms)[0])


def revalue(ladder: Ladder, view: AccountView, positions: list[CloseIntent],
            trading: Mapping[str, TradingState] | None = None, unreliable: frozenset[str] = frozenset()) -> list:
    planned = []
    out = ladder.on_revaluation(view, [], positions, lambda target: planned.append(target) or LEGS, set(),
                                unreliable, trading)
    return out + planned


@settings(max_examples=3_000, deadline=None)
@given(state=st.sampled_from(list(AccountState)), last_round=st.sampled_from([None, 0, 2_499, 2_500, 3_000]),
       ratio=RATIOS, ttb=st.sampled_from([0.0, 1_000.0, 299_999.0, 300_000.0, math.inf, math.nan]),
       maintenance=st.sampled_from([0.0, 50_000.0, math.nan]), initial=st.sampled_from([0.0, 60_000.0, 100_000.0]),
       in_flight=st.booleans(), held=st.booleans(), hedged=st.booleans(),
       last_hedge=st.sampled_from([None, 0, 2_499, 2_500, 3_000, 3_500]),
       delta=st.sampled_from([0.0, 0.5, 0.83, 0.84, 1.0, 10.0, -10.0, -9.5, math.nan]),
       eth=st.sampled_from([0.0, 20.0, 30.0, -30.0]), eth_hedge=st.sampled_from([None, -20.0, 5.0]),
       positions=st.sampled_from([[], LEGS, [CloseIntent("BTC-PERPETUAL", "BTC", 5.0, 60_000.0)],
                                  [CloseIntent("ETH-PERPETUAL", "ETH", 30.0, 2_000.0)],
                                  [CloseIntent("ETH-PERPETUAL", "ETH", 10.0, 2_000.0)]]),
       btc=st.sampled_from(list(TradingState)), eth_state=st.sampled_from(list(TradingState)))
def test_an_unmoved_account_is_left_alone(state, last_round, ratio, ttb, maintenance, initial, in_flight, held,
                                           hedged, last_hedge, delta, eth, eth_hedge, positions, btc,
                                           eth_state) -> None:
    """A hedged account too, where its hedge waits: a hedge sent within the round, or none that
    would go out whatever the delta (at 60,000 a hedge of 0.84 BTC is over the $50,000
    threshold, 0.83 under; 25 ETH at 2,000), or one the underlying's trading state refuses (it
    would add to the position in the perpetual, or flip it): the rule is exact, not a heuristic."""
    ladder = Ladder()
    if held:
        hedges = {"BTC-PERPETUAL": -10.0} if in_flight else {}
        hedges |= {} if eth_hedge is None else {"ETH-PERPETUAL": eth_hedge}
        ladder.restore_account("a", {"state": state.value, "distress_since_ms": 0, "last_round_ms": last_round,
                                     "breach_ids": ["b1", "b2"], "last_hedge_ms": last_hedge, "in_flight": hedges})
    view = AccountView("a", 3_500, 100_000.0, maintenance, initial, ratio, {"BTC": delta, "ETH": eth},
                       {"BTC": 0.0, "ETH": 0.0}, {"BTC": 0.0, "ETH": 0.0}, {"BTC": 60_000.0, "ETH": 2_000.0},
                       {"BTC": -1.0, "ETH": 0.0}, hedged=hedged, time_to_breach_ms=ttb)
    trading = {"BTC": btc, "ETH": eth_state}
    if unmoved(ladder, view, positions, trading):
        before = ladder.account_state("a")
        assert revalue(ladder, view, positions, trading) == []
        assert ladder.account_state("a") == before


def test_unmoved_waits_for_the_next_round_and_for_a_release() -> None:
    ladder = Ladder()
    ladder.restore_account("a", {"state": "liquidated", "distress_since_ms": 0, "last_round_ms": 1_000,
                                 "breach_ids": ["b"], "last_hedge_ms": None, "in_flight": {"BTC-PERPETUAL": -10.0}})

    def at(t: int, ratio: float) -> AccountView:
        return AccountView("a", t, 100_000.0, 50_000.0, 60_000.0, ratio, {}, {}, {}, {}, {}, time_to_breach_ms=0.0)

    assert unmoved(ladder, at(1_750, 1.6))
    assert not unmoved(ladder, at(2_000, 1.6))  # a round is due
    assert not unmoved(ladder, at(1_750, 0.5))  # may be released
    assert not unmoved(Ladder(), at(1_750, 0.5))  # a NORMAL account gets its ladder made


def test_a_hedged_account_waits_for_its_next_hedge() -> None:
    ladder = Ladder()
    ladder.restore_account("a", {"state": "normal", "distress_since_ms": None, "last_round_ms": None,
                                 "breach_ids": [], "last_hedge_ms": 1_000, "in_flight": {}})

    def at(t: int, ratio: float, ttb: float = math.inf, delta: float = 10.0) -> AccountView:
        return AccountView("a", t, 100_000.0, 50_000.0, 60_000.0, ratio, {"BTC": delta}, {}, {}, {"BTC": 60_000.0},
                           {}, hedged=True, time_to_breach_ms=ttb)

    assert unmoved(ladder, at(1_999, 0.5))
    assert not unmoved(ladder, at(2_000, 0.5))  # a hedge is due
    assert ladder.on_revaluation(at(2_000, 0.5), [], [], lambda target: [], set(), set())  # and goes out
    assert not unmoved(ladder, at(2_500, 0.8))  # a margin call
    assert not unmoved(ladder, at(2_500, 0.5, ttb=1_000.0))  # a predictive one
    assert unmoved(ladder, at(2_999, 0.5))
    assert unmoved(ladder, at(3_000, 0.5))  # due, but the 10 BTC sent cover the delta
    assert not unmoved(ladder, at(3_000, 0.5, delta=11.0))  # 1 BTC more to hedge
    halted = {"BTC": TradingState.HALTED}
    assert unmoved(ladder, at(3_000, 0.5, delta=11.0), [], halted)  # refused: it would open a short
    legs = [CloseIntent("BTC-PERPETUAL", "BTC", -3.0, 60_000.0)]  # long 3 BTC-PERPETUAL
    assert not unmoved(ladder, at(3_000, 0.5, delta=11.0), legs, halted)  # selling 1 of them is accepted


ETH_LEG = CloseIntent("ETH-PERPETUAL", "ETH", 30.0, 2_000.0)
ETH_CALL = CloseIntent("ETH-30JUN22-2000-C", "ETH", -4.0, 150.0)
# what a leg waits on: underlyings whose oracle is unreliable, instruments manipulated or delisted
UNRELIABLE = st.sets(st.sampled_from(["BTC", "ETH", "BTC-PERPETUAL", "ETH-PERPETUAL", "ETH-30JUN22-2000-C", "SOL"]))


@settings(max_examples=2_000, deadline=None)
@given(state=st.sampled_from(list(AccountState)), last_round=st.sampled_from([None, 0, 2_499, 2_500, 3_000]),
       ratio=RATIOS, in_flight=st.sampled_from([{}, {"BTC-PERPETUAL": -10.0}, {"BTC-PERPETUAL": -4.0},
                                                {"BTC-PERPETUAL": -12.0}, {"ETH-PERPETUAL": -1.0},
                                                {"ETH-PERPETUAL": 30.0, "ETH-30JUN22-2000-C": -4.0}]),
       legs=st.sampled_from([[], LEGS, LEGS + [ETH_LEG], [ETH_LEG, ETH_CALL], LEGS + [ETH_LEG, ETH_CALL]]),
       held=st.booleans(), hedged=st.booleans(), unreliable=UNRELIABLE)
def test_a_round_only_account_only_marks_its_round(state, last_round, ratio, in_flight, legs, held, hedged,
                                                   unreliable) -> None:
    """Where ``round_only`` holds, ``on_revaluation`` (with the ``unreliable`` set the codes were
    read with) returns nothing and changes what ``mark_rounds`` changes on a twin ladder: the
    last round's time alone (hedged or not: a liquidated account is never hedged); each leg
    in flight in full, or waiting on an unreliable underlying or instrument."""
    ladder, twin = Ladder(), Ladder()
    if held:
        for one in (ladder, twin):
            one.restore_account("a", {"state": state.value, "distress_since_ms": 0, "last_round_ms": last_round,
                                      "breach_ids": ["b1"], "last_hedge_ms": None, "in_flight": dict(in_flight)})
    view = AccountView("a", 3_500, 100_000.0, 50_000.0, 60_000.0, ratio, {"BTC": 10.0}, {"BTC": 0.0}, {"BTC": 0.0},
                       {"BTC": 60_000.0}, {"BTC": -1.0}, hedged=hedged, time_to_breach_ms=0.0)
    unreliable = frozenset(unreliable)
    state, last_round, in_flight, _, _ = codes(ladder, "a", legs, unreliable)
    if ladder.round_only(state, last_round, np.array([ratio]), in_flight, view.event_time_ms)[0]:
        assert revalue(ladder, view, legs, unreliable=unreliable) == []
        twin.mark_rounds(["a"], view.event_time_ms)
        assert ladder.account_state("a") == twin.account_state("a")
        assert ladder.account_state("a")["last_round_ms"] == view.event_time_ms


def test_round_only_needs_every_close_in_flight_or_waiting_and_a_due_round() -> None:
    ladder = Ladder()
    ladder.restore_account("a", {"state": "liquidated", "distress_since_ms": 0, "last_round_ms": 1_000,
                                 "breach_ids": ["b"], "last_hedge_ms": None, "in_flight": {"BTC-PERPETUAL": -10.0}})

    def round_only(t: int, ratio: float, closes: list[CloseIntent], unreliable: frozenset[str] = frozenset()) -> bool:
        state, last_round, in_flight, _, _ = codes(ladder, "a", closes, unreliable)
        return bool(ladder.round_only(state, last_round, np.array([ratio]), in_flight, t)[0])

    btc = CloseIntent("BTC-PERPETUAL", "BTC", -12.0, 60_000.0)
    eth = CloseIntent("ETH-PERPETUAL", "ETH", 3.0, 2_000.0)
    assert round_only(2_000, 1.6, LEGS)
    assert not round_only(1_999, 1.6, LEGS)  # no round due
    assert not round_only(2_000, 0.5, LEGS)  # may be released
    assert not round_only(2_000, 1.6, [btc])  # 2 more to send
    assert not round_only(2_000, 1.6, LEGS + [eth])  # a leg never sent
    assert round_only(2_000, 1.6, LEGS + [eth], frozenset({"ETH"}))  # it waits on ETH's oracle
    assert round_only(2_000, 1.6, LEGS + [eth], frozenset({"ETH-PERPETUAL"}))  # on its manipulated mark
    assert round_only(2_000, 1.6, [btc, eth], frozenset({"BTC", "ETH"}))
    assert not round_only(2_000, 1.6, LEGS + [eth], frozenset({"BTC"}))  # ETH's leg would go out
    assert not Ladder().code("a", [], frozenset())[2]  # no ladder held


BTC_CALL = CloseIntent("BTC-30JUN22-60000-C", "BTC", 2.0, 3_000.0)
# plan legs: a perpetual, an option, the perpetual again (the planner's orders on one instrument
# need not be consecutive), sizes around the minimum notional and past the round's budget
PLAN_LEGS = st.lists(st.sampled_from([CloseIntent("BTC-PERPETUAL", "BTC", -10.0, 60_000.0),
                                      CloseIntent("BTC-PERPETUAL", "BTC", -0.05, 60_000.0),
                                      CloseIntent("BTC-PERPETUAL", "BTC", 0.1, 60_000.0),
                                      ETH_LEG, CloseIntent("ETH-PERPETUAL", "ETH", 1.0, 2_000.0), ETH_CALL,
                                      BTC_CALL]), max_size=4)


@settings(max_examples=3_000, deadline=None)
@given(state=st.sampled_from([AccountState.LIQUIDATING] * 4 + list(AccountState)),
       last_round=st.sampled_from([None, 0, 2_499, 2_500, 3_000]),
       distress=st.sampled_from([None, 0, 3_000, -60_000]), ratio=RATIOS,
       maintenance=st.sampled_from([0.0, 50_000.0, math.nan, math.inf]),
       initial=st.sampled_from([0.0, 60_000.0, 100_000.0]),
       in_flight=st.sampled_from([{}, {"BTC-PERPETUAL": -2.0}, {"BTC-PERPETUAL": -10.0}, {"BTC-PERPETUAL": 1.0},
                                  {"ETH-PERPETUAL": 6.0, "BTC-30JUN22-60000-C": 0.4},
                                  {"ETH-PERPETUAL": 30.0, "ETH-30JUN22-2000-C": -4.0}]),
       plan=PLAN_LEGS, hedged=st.booleans(), unreliable=UNRELIABLE,
       thin=st.sets(st.sampled_from(["BTC-PERPETUAL", "ETH-30JUN22-2000-C"])))
def test_a_due_round_is_the_orders_round_orders_gives(state, last_round, distress, ratio, maintenance, initial,
                                                      in_flight, plan, hedged, unreliable, thin) -> None:
    """Where ``round_due`` holds, ``on_revaluation`` with no breach sends exactly the orders
    ``round_orders`` gives for the plan at the account's target (instrument, side, quantity,
    kind), and puts them in flight; where it gives none, ``on_revaluation`` returns nothing and
    changes what ``mark_rounds`` changes on a twin ladder, the last round's time alone (hedged
    or not: a liquidating account is never hedged)."""
    ladder, twin = Ladder(), Ladder()
    for one in (ladder, twin):
        one.restore_account("a", {"state": state.value, "distress_since_ms": distress, "last_round_ms": last_round,
                                  "breach_ids": ["b1"], "last_hedge_ms": None, "in_flight": dict(in_flight)})
    view = AccountView("a", 3_500, 100_000.0, maintenance, initial, ratio, {"BTC": 10.0}, {"BTC": 0.0},
                       {"BTC": 0.0}, {"BTC": 60_000.0}, {"BTC": -1.0}, hedged=hedged, time_to_breach_ms=0.0)
    state_code, last_round_code, _, _, _ = codes(ladder, "a", [])
    if not ladder.round_due(state_code, last_round_code, np.array([ratio]), np.array([maintenance]),
                            np.array([initial]), view.event_time_ms)[0]:
        return
    target = ladder.target_ratio(view)
    legs = plan if math.isfinite(target) else []  # the engine's plan closure: no target, no plan
    orders = ladder.round_orders("a", [tuple(leg) for leg in legs], view.event_time_ms, thin, unreliable)
    assert ladder.account_state("a") == twin.account_state("a")  # round_orders changes nothing
    decisions = ladder.on_revaluation(view, [], [], lambda t: legs if t == target or t != t else [], thin,
                                      frozenset(unreliable))
    assert [(d.instrument, d.side, d.quantity, d.action_type) for d in decisions] == \
        [(leg[0], "buy" if qty > 0 else "sell", abs(qty), kind) for leg, qty, kind in orders]
    event("sends" if orders else "sends nothing")
    if not orders:
        twin.mark_rounds(["a"], view.event_time_ms)
        assert ladder.account_state("a") == twin.account_state("a")
    else:
        assert ladder.account_state("a")["in_flight"] != in_flight


def test_round_due_is_a_liquidating_round_not_released() -> None:
    ladder = Ladder()
    ladder.restore_account("a", {"state": "liquidating", "distress_since_ms": 2_000, "last_round_ms": 1_000,
                                 "breach_ids": ["b"], "last_hedge_ms": None, "in_flight": {"BTC-PERPETUAL": -2.0}})

    def due(t: int, ratio: float, state: AccountState = AccountState.LIQUIDATING) -> bool:
        code = np.array([float(list(AccountState).index(state))])
        _, last_round, _, _, _ = codes(ladder, "a", [])
        return bool(ladder.round_due(code, last_round, np.array([ratio]), np.array([50_000.0]),
                                     np.array([60_000.0]), t)[0])

    assert due(2_000, 0.9)
    assert not due(1_999, 0.9)  # no round due
    assert not due(2_000, 0.8)  # under the target (0.817): released
    assert not due(2_000, 0.9, AccountState.LIQUIDATED)  # a liquidated account's round is another
    legs = [("BTC-PERPETUAL", "BTC", -10.0, 60_000.0)]
    assert ladder.round_orders("a", legs, 2_000, set(), set()) == []  # 20 % of 10: the 2 in flight
    assert ladder.round_orders("a", legs, 2_050, set(), set()) == []  # 0.008 more: $500, under the minimum
    (leg, qty, kind), = ladder.round_orders("a", legs, 8_000, {"BTC-PERPETUAL"}, set())  # 30 %: 1 more
    assert (leg, qty, kind) == (legs[0], -10.0 * (0.2 + 6_000 / 60_000) + 2.0, ActionType.TRANSFER_TO_LP)
    assert ladder.round_orders("a", legs, 8_000, set(), {"BTC"}) == []  # waits on BTC's oracle
    assert ladder.account_state("a")["in_flight"] == {"BTC-PERPETUAL": -2.0}  # nothing changed
