"""The planner kernel's round check (``PLAN_SENDS``) against the ladder: it says a liquidating
account's round sends something exactly where ``Ladder.round_orders`` gives an order for the
plan, on random plans, ladders, in-flight quantities, unreliable sets and marks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from pipelines.errors import UserError
from pipelines.policy.ladder import Ladder, LadderParams
from pipelines.risk.instruments import underlying_of
from pipelines.risk.kernels import planner
from pipelines.risk.liquidation_order import plan_liquidations, plan_rounds
from tests.risk.test_kernels_planner import crash_books

NAMES = ("BTC-PERPETUAL", "BTC-25DEC26", "BTC-25DEC26-60000-C", "ETH-PERPETUAL", "ETH-25DEC26-2000-P")
QTY = st.one_of(st.sampled_from([0.0, -0.0, 1.0, -1.0, -10.0, 2.5, 1e-9]), st.floats(-50.0, 50.0))
IN_FLIGHT = st.one_of(st.sampled_from([0.0, -2.0, 2.0, -10.0, 0.1]), st.floats(-50.0, 50.0))
MARKS = st.one_of(st.sampled_from([math.nan, 0.0, math.inf, 1_000.0, 60_000.0, 50.0]), st.floats(0.0, 1e5))
UNRELIABLE = st.frozensets(st.sampled_from([*NAMES, "BTC", "ETH", "SOL"]), max_size=3)
LADDER_PARAMS = st.builds(LadderParams, initial_share=st.sampled_from([0.2, 0.0, 1.0, 0.05]),
                          ramp_ms=st.sampled_from([60_000, 1, 240_000]),
                          round_notional_usd=st.sampled_from([100_000.0, 500.0, 0.0, 1e9]),
                          min_notional_usd=st.sampled_from([1_000.0, 0.0, 2_000.0, 1e6]))


def ladder_of(params: LadderParams, distress: int | None, in_flight: dict[str, float]) -> Ladder:
    ladder = Ladder(params)
    ladder.restore_account("a", {"state": "liquidating", "distress_since_ms": distress, "last_round_ms": None,
                                 "breach_ids": [], "last_hedge_ms": None, "in_flight": in_flight})
    return ladder


def waits(names: tuple[str, ...], unreliable: frozenset[str]) -> np.ndarray:
    return np.array([n in unreliable or underlying_of(n) in unreliable for n in names], dtype=bool)


def check_of(ladder: Ladder, checked: list[bool], rows: int, positions: list[tuple[int, str]],
             names: tuple[str, ...], marks: np.ndarray, unreliable: frozenset[str],
             time_ms: int) -> planner.RoundCheck:
    """The ``RoundCheck`` the engine makes for a ladder holding account "a" on book row 1 of
    ``rows`` (``positions``: (row, instrument) per position; the other rows hold no ladder)."""
    p = ladder.params
    distress = np.full(rows, math.nan)
    in_flight = np.zeros(len(positions))
    held = [k for k, (row, _) in enumerate(positions) if row == 1]
    since, flights = ladder.round_code("a", [positions[k][1] for k in held])
    distress[1], in_flight[held] = since, flights
    return planner.RoundCheck(checked, distress, in_flight, waits(names, unreliable), marks, time_ms,
                              p.initial_share, p.ramp_ms, p.round_notional_usd, p.min_notional_usd)


@settings(max_examples=2_000, deadline=None)
@given(params=LADDER_PARAMS, distress=st.sampled_from([None, 0, 3_000, -60_000, 10_000]),
       time_ms=st.sampled_from([0, 3_500, 10_000, 90_000]),
       held=st.lists(st.sampled_from(range(len(NAMES))), min_size=1, max_size=len(NAMES), unique=True),
       other=st.lists(st.sampled_from(range(len(NAMES))), max_size=2, unique=True),
       in_flight=st.lists(IN_FLIGHT, min_size=len(NAMES), max_size=len(NAMES)),
       hedge=st.sampled_from([None, ("ETH-PERPETUAL", 3.0), ("BTC-PERPETUAL", -1.0)]),
       orders=st.lists(st.tuples(st.integers(0, len(NAMES) - 1), QTY), max_size=6),
       marks=st.lists(MARKS, min_size=len(NAMES), max_size=len(NAMES)), unreliable=UNRELIABLE,
       before=st.integers(0, 2))
def test_the_kernels_verdict_is_whether_round_orders_gives_anything(params, distress, time_ms, held, other,
                                                                    in_flight, hedge, orders, marks, unreliable,
                                                                    before) -> None:
    """``_round_sends`` on a plan's orders (instruments the account holds, repeated ones too,
    after ``before`` orders of another account) is ``bool(Ladder.round_orders(...))``: NaN and
    zero marks, a zero minimum notional, a budget under the minimum, in flight of either sign
    (hedges share it with closes) included."""
    flying = {NAMES[k]: in_flight[k] for k in held if in_flight[k] != 0.0}
    if hedge is not None:
        flying[hedge[0]] = hedge[1]  # a hedge, on a perpetual the account may not hold
    ladder = ladder_of(params, distress, flying)
    plan = [(held[k % len(held)], qty) for k, qty in orders]
    legs = [(NAMES[k], underlying_of(NAMES[k]), qty, marks[k]) for k, qty in plan]
    expected = bool(ladder.round_orders("a", legs, time_ms, set(), unreliable))
    positions = [(0, NAMES[k]) for k in other] + [(1, NAMES[k]) for k in held]
    check = check_of(ladder, [True], 2, positions, NAMES, np.array(marks), unreliable, time_ms)
    table = np.zeros((before + len(plan), planner.ORDER_FIELDS))
    table[:before, planner.ORDER_INSTRUMENT], table[:before, planner.ORDER_QTY] = 0, 1e6  # another account's
    for o, (k, qty) in enumerate(plan, start=before):
        table[o, planner.ORDER_INSTRUMENT], table[o, planner.ORDER_QTY] = k, qty
    index = {n: k for k, n in enumerate(NAMES)}
    book = (np.array([0, len(other), len(positions)], dtype=np.int64),
            np.array([index[n] for _, n in positions], dtype=np.int64), np.ones(len(positions)),
            np.zeros(len(NAMES), dtype=np.int64), np.zeros(len(NAMES), dtype=np.bool_))
    rounds, limits = planner._rounds(check, 1, book)
    assert planner._round_sends(table, before, len(table), 1, book, rounds, limits) is expected
    event("sends" if expected else "sends nothing")


@settings(max_examples=150, deadline=None)
@given(case=crash_books(), unreliable=st.frozensets(st.sampled_from(["BTC", "ETH", "BTC-PERPETUAL"]), max_size=2),
       flights=st.lists(IN_FLIGHT, min_size=40, max_size=40), distress=st.sampled_from([None, 0, -30_000]),
       params=LADDER_PARAMS, data=st.data())
def test_plan_rounds_checks_the_rounds_asked_for_and_unpacks_the_plans_a_visit_reads(case, unreliable, flights,
                                                                                     distress, params, data) -> None:
    """On random books, ``plan_rounds`` gives ``plan_liquidations``' plans, but None for the
    accounts checked whose round sends nothing, and per account whether ``Ladder.round_orders``
    gives anything for its plan at the kernel's in-flight quantities (False where not checked)."""
    book, risk, kw = case  # its planner parameters aside: plan_rounds plans with the default ones
    accounts, targets = kw["accounts"], kw["target_ratios"]
    checked = data.draw(st.lists(st.booleans(), min_size=len(accounts), max_size=len(accounts)))
    names, start = book.instruments.names, book.position_start
    ladders, in_flight = {}, np.zeros(len(book.qty))
    distress_of = np.full(len(book.accounts), math.nan)
    for a in range(len(book.accounts)):
        held = [names[k] for k in book.instrument_idx[start[a]:start[a + 1]].tolist()]
        ladders[a] = ladder_of(params, distress, {n: flights[j % 40] for j, n in enumerate(held)})
        distress_of[a], in_flight[start[a]:start[a + 1]] = ladders[a].round_code("a", held)
    p = params
    check = planner.RoundCheck(checked, distress_of, in_flight, waits(names, unreliable), risk.marks, 4_000,
                               p.initial_share, p.ramp_ms, p.round_notional_usd, p.min_notional_usd)
    made, sends = plan_rounds(book, risk, accounts, targets, check, kw["adaptive"], kw["conditions"])
    plans = plan_liquidations(book, risk, accounts, targets, adaptive=kw["adaptive"], conditions=kw["conditions"])
    marks = dict(zip(names, risk.marks.tolist()))
    for a, is_checked, plan, got, send in zip(accounts, checked, plans, made, sends):
        legs = [(o.instrument, underlying_of(o.instrument), o.qty, marks[o.instrument]) for o in plan.orders]
        expected = is_checked and bool(ladders[a].round_orders("a", legs, 4_000, set(), unreliable))
        assert send is expected
        assert got == (plan if send or not is_checked else None)
        assert repr(got) == repr(plan if send or not is_checked else None)
        event("sends" if send else "checked, sends nothing" if is_checked else "not checked")


@settings(max_examples=25, deadline=None)
@given(case=crash_books(), wrong=st.sampled_from(["checked", "distress_since_ms", "in_flight", "waits", "marks"]),
       longer=st.booleans())
def test_a_round_check_of_the_wrong_size_is_refused(case, wrong, longer) -> None:
    """A ``RoundCheck`` with one entry too few or too many in any of its arrays is a UserError,
    never a plan left out or an index the kernel reads past its array."""
    book, risk, kw = case
    accounts, targets = kw["accounts"], kw["target_ratios"]
    fields = {"checked": [True] * len(accounts), "distress_since_ms": np.zeros(len(book.accounts)),
              "in_flight": np.zeros(len(book.qty)), "waits": np.zeros(len(book.instruments), dtype=bool),
              "marks": risk.marks}
    size = len(fields[wrong])
    fields[wrong] = np.resize(fields[wrong], size + 1 if longer or not size else size - 1)
    check = planner.RoundCheck(**fields, time_ms=0, initial_share=0.2, ramp_ms=60_000, round_notional_usd=1e5,
                               min_notional_usd=1e3)
    with pytest.raises(UserError, match="^round check: expected one entry per batch account, book row, position"):
        plan_rounds(book, risk, accounts, targets, check, kw["adaptive"], kw["conditions"])
