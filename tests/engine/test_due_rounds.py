"""Liquidating accounts whose round is due (``DUE_ROUND``): the engine plans them with the visited
rows, checks each round (compiled, in the planner kernel; numpy, with ``Ladder.round_orders``)
and marks the rounds that send nothing without the per-account path; the replays' outputs, and
every account's state and the triage's codes along the way, are those of one that visits every
account."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from bench import venue_feed
from pipelines.backtest.run import engine_params, simulate
from pipelines.engine.engine import Engine, EngineParams
from pipelines.policy.ladder import LadderParams
from pipelines.replay.inprocess import replay_dicts
from pipelines.risk.kernels import triage
from pipelines.risk.liquidation_order import plan_liquidations
from pipelines.scenarios import library
from pipelines.scenarios.generate import generate
from tests.engine.test_engine import run
from tests.kit.crash import crash_events

EVERY = 97  # ticks between two looks at the engine's state mid-replay


def account_states(engine: Engine) -> dict[str, Any]:
    """What the engine holds per account mid-tick-stream (``_account_state`` but the book, which
    events alone change, and the exposures' record, folded lazily) and its triage codes."""
    held = engine.ladder.accounts() | engine.detectors.accounts() | engine.penalties.accounts() | engine._attention
    codes, table = engine._codes_cache, None
    if codes is not None:
        table = codes.table.copy()
        # the in-flight column holds on LIQUIDATED rows, the only ones the triage reads it for (_Codes)
        table[table[:, triage.STATE] != triage.LIQUIDATED, triage.IN_FLIGHT] = np.nan
    return {"accounts": {a: (engine.ladder.account_state(a), engine.detectors.account_state(a),
                             engine.penalties.account_state(a), a in engine._attention) for a in sorted(held)},
            "codes": None if codes is None else (codes.built.book.accounts, table)}


def replayed(rows: list, compiled: bool) -> tuple[Any, list[dict], list[dict]]:
    """The replay's output, the engine's state every ``EVERY`` ticks, and every held account's
    state at the end (as ``export_accounts`` gives it)."""
    revalue, engines, looks = Engine._revalue, [], []

    def looked(self: Engine, time_ms: int):
        out = revalue(self, time_ms)
        engines.append(self)
        if len(engines) % EVERY == 0:
            looks.append(account_states(self))
        return out

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Engine, "_revalue", looked)
        out = replay_dicts(rows, params=EngineParams(compiled=compiled))
    engine, = set(engines)
    end = [engine._account_state(a) for a in sorted(engine.held_accounts())]  # the run may end mid-tick
    looks.append(account_states(engine))
    return out, looks, end


Replayed = tuple[Any, list[dict], list[dict]]  # what ``replayed`` returns


def assert_same_replay(triaged: Replayed, visited: Replayed) -> None:
    """Two ``replayed`` runs are the same: breaches, actions and exposures, the looks (more than
    three) account by account and code by code, and every held account's state at the end."""
    (out, looks, end), (visited_out, visited_looks, visited_end) = triaged, visited
    assert [b.breach_id for b in out.breaches] == [b.breach_id for b in visited_out.breaches]
    assert [a.action_id for a in out.actions] == [a.action_id for a in visited_out.actions]
    assert out.exposures == visited_out.exposures
    assert len(looks) > 3 and len(looks) == len(visited_looks)
    for look, visited_look in zip(looks, visited_looks):
        assert look["accounts"] == visited_look["accounts"]
        assert (look["codes"] is None) == (visited_look["codes"] is None)
        if look["codes"] is not None:
            assert look["codes"][0] == visited_look["codes"][0]
            np.testing.assert_array_equal(look["codes"][1], visited_look["codes"][1])
    assert end == visited_end


@pytest.mark.parametrize("scenario", ["jelly-2025", "luna-2022"])
def test_due_rounds_that_send_nothing_change_nothing_a_visit_would_not(scenario, monkeypatch) -> None:
    """Compiled and numpy, the triaged replay gives the breaches, actions and exposures of one
    that sends every revalued account but the screened-out ones through the per-account path,
    and the same state for every account (ladder, detectors, penalties, attention; at the end
    its book and exposure record too) and the same triage codes, mid-replay and at the end;
    it marks rounds without a visit as well as visiting rounds that send."""
    rows = list(venue_feed.rows(generate(library.get(scenario)).events))
    marked, sent = [], []
    plans = Engine._plans

    def watched(self, *args):
        made, sends = plans(self, *args)
        marked.append(sends.count(False))
        sent.append(sends.count(True))
        return made, sends

    with monkeypatch.context() as patch:
        patch.setattr(Engine, "_plans", watched)
        triaged = [replayed(rows, compiled) for compiled in (True, False)]
    assert sum(marked) and sum(sent)
    fates = Engine._fates
    monkeypatch.setattr(Engine, "_fates", lambda self, *args: np.minimum(fates(self, *args), triage.VISIT))
    for compiled, replay in zip((True, False), triaged):
        assert_same_replay(replay, replayed(rows, compiled))


def assert_plans_dropped_as_visiting_every_account(monkeypatch, rows: list, compiled: bool, method: str,
                                                   unplanned, dropped: list) -> None:
    """The replay of ``rows`` with ``Engine.<method>`` replaced by ``unplanned`` (which drops some of
    the tick's plans into ``dropped``) drops some, and is the replay of one that visits every
    account, state and codes included."""
    with monkeypatch.context() as patch:
        patch.setattr(Engine, method, unplanned)
        replay = replayed(rows, compiled)
    assert dropped
    fates = Engine._fates
    monkeypatch.setattr(Engine, "_fates", lambda self, *args: np.minimum(fates(self, *args), triage.VISIT))
    assert_same_replay(replay, replayed(rows, compiled))


def test_a_due_round_the_tick_made_no_plan_for_is_visited(monkeypatch) -> None:
    """A due round whose target is finite but that the tick's batch made no plan for is not read
    as sending nothing (``_rounds_send``, the numpy path's check): it is visited (the visit plans
    it alone), and the replay is still the one that visits every account, state and codes
    included."""
    rows = list(venue_feed.rows(generate(library.get("jelly-2025")).events))
    rounds_send, dropped = Engine._rounds_send, []

    def unplanned(self, accounts, rows, risk, plans, *args):
        dropped.extend(plans.pop(i) for i in rows.tolist() if i in plans)  # the visit's plans too
        return rounds_send(self, accounts, rows, risk, plans, *args)

    assert_plans_dropped_as_visiting_every_account(monkeypatch, rows, False, "_rounds_send", unplanned, dropped)


def test_a_visited_due_round_the_tick_kept_no_plan_for_plans_it_alone(monkeypatch) -> None:
    """Compiled, a due round the kernel finds sending is visited with the tick's plan; without it
    the visit plans the account alone, to the same replay as one that visits every account."""
    rows = list(venue_feed.rows(generate(library.get("jelly-2025")).events))
    plans, dropped = Engine._plans, []

    def unplanned(self, built, revalued, rows, due, *args):
        made, sends = plans(self, built, revalued, rows, due, *args)
        dropped.extend(made.pop(i) for i in rows[due].tolist() if i in made)
        return made, sends

    assert_plans_dropped_as_visiting_every_account(monkeypatch, rows, True, "_plans", unplanned, dropped)


@pytest.mark.parametrize("compiled", [True, False])
def test_a_due_round_under_the_minimum_is_marked_or_the_next_tick_sends_early(compiled, monkeypatch) -> None:
    """The scripted crash (an event a second) with rounds every 2 s and the share ramped over
    4 min: a due round whose ramp since the last round is worth less than the minimum notional
    sends nothing, and left unmarked it would be due again a second later and send then.
    Marked, the replay is the one that visits every account: actions, breaches and states."""
    params = EngineParams(hedged_accounts=frozenset({"hedged-desk"}),
                          ladder=LadderParams(round_ms=2_000, ramp_ms=240_000), compiled=compiled)
    plans, marked = Engine._plans, []

    def watched(self, *args):
        made, sends = plans(self, *args)
        marked.append(sends.count(False))
        return made, sends

    with monkeypatch.context() as patch:
        patch.setattr(Engine, "_plans", watched)
        engine, breaches, actions = run(crash_events(), params)
    leave_alone = Engine._leave_alone

    def unmarked(self, built, rows, fates, time_ms):
        leave_alone(self, built, rows, [triage.UNMOVED if f == triage.ROUND else f for f in fates], time_ms)

    with monkeypatch.context() as patch:
        patch.setattr(Engine, "_leave_alone", unmarked)
        _, _, early = run(crash_events(), params)
    assert sum(marked) and [a.action_id for a in early] != [a.action_id for a in actions]
    fates = Engine._fates
    monkeypatch.setattr(Engine, "_fates", lambda self, *args: np.minimum(fates(self, *args), triage.VISIT))
    visited, visited_breaches, visited_actions = run(crash_events(), params)
    assert [b.breach_id for b in breaches] == [b.breach_id for b in visited_breaches]
    assert [a.action_id for a in actions] == [a.action_id for a in visited_actions]
    held = sorted(engine.held_accounts())
    assert held == sorted(visited.held_accounts())
    assert [engine._account_state(a) for a in held] == [visited._account_state(a) for a in held]


def assert_round_columns_are_the_ladders(engine: Engine) -> int:
    """The planner's round check columns of the engine's codes (``_Codes``) hold the ladder's
    distress start and in-flight quantities (``Ladder.round_code``) on every row in attention,
    and every row the triage may find due (LIQUIDATING) is in attention. Returns the number of
    LIQUIDATING rows."""
    codes = engine._codes_cache
    if codes is None:
        return 0
    book, closes = codes.built.book, codes.built.closes
    start, liquidating = book.position_start, codes.table[:, triage.STATE] == triage.LIQUIDATING
    for i, account in enumerate(book.accounts):
        if account not in engine._attention:
            assert not liquidating[i]
            continue
        since, in_flight = engine.ladder.round_code(account, [name for name, _, _ in closes[i]])
        np.testing.assert_array_equal(codes.distress[i], since)
        np.testing.assert_array_equal(codes.in_flight[start[i]:start[i + 1]], in_flight)
    return int(liquidating.sum())


@pytest.mark.parametrize("scenario", library.names())
def test_the_round_checks_resident_columns_follow_the_ladder_tick_after_tick(scenario, monkeypatch) -> None:
    """After every tick of a bundled scenario's compiled replay (its visits, book rebuilds and
    rounds marked), the resident columns the planner's round check reads are the ladder's."""
    rows = list(venue_feed.rows(generate(library.get(scenario)).events))
    revalue, liquidating = Engine._revalue, []

    def checked(self: Engine, time_ms: int):
        out = revalue(self, time_ms)
        liquidating.append(assert_round_columns_are_the_ladders(self))
        return out

    monkeypatch.setattr(Engine, "_revalue", checked)
    replay_dicts(rows, params=EngineParams(compiled=True))
    assert len(liquidating) > 1_000
    assert sum(liquidating)  # rows the triage could find due, on some ticks


@pytest.mark.parametrize(("scenario", "seed", "ladder"), [
    ("luna-2022", 3, {}),
    ("ftx-2022", 1, {"min_notional_usd": 5_000.0, "ramp_ms": 20_000, "round_ms": 500}),
])
def test_the_kernels_round_verdicts_are_the_ladders_in_a_backtest_with_fills(scenario, seed, ladder,
                                                                             monkeypatch) -> None:
    """In a compiled backtest (fills come back as position updates: quantities in flight clear,
    books are rebuilt), every due row's verdict from the planner kernel is ``_rounds_send``'s:
    ``Ladder.round_orders`` on ``plan_liquidations``' plan, read from the ladder itself, not from
    the resident columns; and every plan kept for a visit is that plan. Both ways count: a
    verdict that sends where the ladder would not only costs a visit, which no output shows."""
    generated = generate(library.get(scenario), seed)
    params = engine_params(generated)
    params = dataclasses.replace(params, compiled=True, ladder=dataclasses.replace(params.ladder, **ladder))
    plans_of, verdicts = Engine._plans, {"due": 0, "sends": 0}

    def checked(self: Engine, built, revalued, rows, due, unreliable, time_ms):
        plans, sends = plans_of(self, built, revalued, rows, due, unreliable, time_ms)
        book, risk = revalued.book, revalued.risk
        wanted, targets, _ = self._wanted(book.accounts, risk, rows, due, time_ms)
        made = plan_liquidations(book, risk, wanted, targets, adaptive=self.params.adaptive,
                                 conditions=revalued.conditions) if wanted else []
        reference = dict(zip(wanted, made))
        marks = dict(zip(book.instruments.names, risk.marks.tolist()))
        expected = self._rounds_send(book.accounts, rows[due], risk, reference, marks, unreliable, time_ms).tolist()
        assert sends == expected
        assert {i: repr(p) for i, p in plans.items()} == {i: repr(reference[i]) for i in plans}
        verdicts["due"] += len(sends)
        verdicts["sends"] += sum(sends)
        return plans, sends

    monkeypatch.setattr(Engine, "_plans", checked)
    simulate(generated, with_backstop=True, params=params, progress=False)
    assert verdicts["due"] > 100 and 0 < verdicts["sends"] < verdicts["due"]
