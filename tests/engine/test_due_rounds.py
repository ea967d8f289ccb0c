"""Liquidating accounts whose round is due (``DUE_ROUND``): the engine plans them with the visited
rows, checks each round with ``Ladder.round_orders`` and marks the rounds that send nothing
without the per-account path; the replays' outputs, and every account's state and the triage's
codes along the way, are those of one that visits every account."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bench import venue_feed
from pipelines.engine.engine import Engine, EngineParams
from pipelines.policy.ladder import LadderParams
from pipelines.replay.inprocess import replay_dicts
from pipelines.risk.kernels import triage
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
    rounds_send = Engine._rounds_send

    def watched(self, *args):
        sends = rounds_send(self, *args)
        marked.append(int((~sends).sum()))
        sent.append(int(sends.sum()))
        return sends

    with monkeypatch.context() as patch:
        patch.setattr(Engine, "_rounds_send", watched)
        triaged = [replayed(rows, compiled) for compiled in (True, False)]
    assert sum(marked) and sum(sent)
    fates = Engine._fates
    monkeypatch.setattr(Engine, "_fates", lambda self, *args: np.minimum(fates(self, *args), triage.VISIT))
    for compiled, replay in zip((True, False), triaged):
        assert_same_replay(replay, replayed(rows, compiled))


def test_a_due_round_the_tick_made_no_plan_for_is_visited(monkeypatch) -> None:
    """A due round whose target is finite but that the tick's batch made no plan for is not read
    as sending nothing: it is visited (the visit plans it alone), and the replay is still the
    one that visits every account, state and codes included."""
    rows = list(venue_feed.rows(generate(library.get("jelly-2025")).events))
    plans, dropped = Engine._plans, []

    def unplanned(self, book, risk, rows, due, time_ms, conditions):
        made = plans(self, book, risk, rows, due, time_ms, conditions)
        dropped.extend(made.pop(i) for i in rows[due].tolist() if i in made)
        return made

    with monkeypatch.context() as patch:
        patch.setattr(Engine, "_plans", unplanned)
        replay = replayed(rows, True)
    assert dropped
    fates = Engine._fates
    monkeypatch.setattr(Engine, "_fates", lambda self, *args: np.minimum(fates(self, *args), triage.VISIT))
    assert_same_replay(replay, replayed(rows, True))


@pytest.mark.parametrize("compiled", [True, False])
def test_a_due_round_under_the_minimum_is_marked_or_the_next_tick_sends_early(compiled, monkeypatch) -> None:
    """The scripted crash (an event a second) with rounds every 2 s and the share ramped over
    4 min: a due round whose ramp since the last round is worth less than the minimum notional
    sends nothing, and left unmarked it would be due again a second later and send then.
    Marked, the replay is the one that visits every account: actions, breaches and states."""
    params = EngineParams(hedged_accounts=frozenset({"hedged-desk"}),
                          ladder=LadderParams(round_ms=2_000, ramp_ms=240_000), compiled=compiled)
    rounds_send, marked = Engine._rounds_send, []

    def watched(self, *args):
        sends = rounds_send(self, *args)
        marked.append(int((~sends).sum()))
        return sends

    with monkeypatch.context() as patch:
        patch.setattr(Engine, "_rounds_send", watched)
        engine, breaches, actions = run(crash_events(), params)
    leave_alone = Engine._leave_alone

    def unmarked(self, built, rows, fate, time_ms):
        leave_alone(self, built, rows, np.where(fate == triage.ROUND, triage.UNMOVED, fate), time_ms)

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
