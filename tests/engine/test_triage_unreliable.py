"""The triage's in-flight column follows the market's unreliable set (``_Codes.follow``): a
liquidated account whose every leg is in flight or waits on an unreliable underlying or
instrument only marks its round, and the column is read again for the LIQUIDATED rows
whenever a tick's set differs from the one it was read with."""

from __future__ import annotations

import types

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import venue_feed
from pipelines.detect.detectors import Detectors
from pipelines.engine.engine import Engine, EngineParams, _Codes
from pipelines.policy.ladder import AccountState, Ladder
from pipelines.replay.inprocess import replay_dicts
from pipelines.risk.kernels import triage
from pipelines.scenarios import library
from pipelines.scenarios.generate import generate

# the legs to close (instrument, underlying, the position negated) of the accounts drawn
LEGS = [("BTC-PERPETUAL", "BTC", -10.0), ("ETH-PERPETUAL", "ETH", 30.0), ("ETH-30JUN22-2000-C", "ETH", -4.0)]
IN_FLIGHT = st.sampled_from([{}, {"BTC-PERPETUAL": -10.0}, {"BTC-PERPETUAL": -4.0}, {"ETH-PERPETUAL": 30.0},
                             {"BTC-PERPETUAL": -10.0, "ETH-PERPETUAL": 30.0, "ETH-30JUN22-2000-C": -4.0}])
ACCOUNT = st.tuples(st.sampled_from([None, *AccountState]), IN_FLIGHT, st.sets(st.integers(0, len(LEGS) - 1)))
UNRELIABLE = st.frozensets(st.sampled_from(["BTC", "ETH", "BTC-PERPETUAL", "ETH-PERPETUAL", "ETH-30JUN22-2000-C"]))


def restore(ladder: Ladder, account: str, state: AccountState | None, in_flight: dict[str, float]) -> None:
    ladder.drop_account(account)
    if state is not None:
        ladder.restore_account(account, {"state": state.value, "distress_since_ms": 0, "last_round_ms": 0,
                                         "breach_ids": ["b"], "last_hedge_ms": None, "in_flight": dict(in_flight)})


@settings(max_examples=300, deadline=None)
@given(st.lists(ACCOUNT, min_size=1, max_size=8), st.lists(st.tuples(UNRELIABLE, st.lists(st.tuples(
    st.integers(0, 7), st.sampled_from([None, *AccountState]), IN_FLIGHT), max_size=3)), min_size=1, max_size=6))
def test_the_in_flight_column_follows_the_unreliable_set(accounts, ticks) -> None:
    """Over ticks whose unreliable sets change (and whose visits change some ladders, refreshing
    their rows), every LIQUIDATED row holds ``Ladder.closes_wait`` for the tick's set."""
    names = tuple(f"a{i}" for i in range(len(accounts)))
    closes = [[LEGS[k] for k in sorted(legs)] for _, _, legs in accounts]
    position_start = np.cumsum([0] + [len(legs) for legs in closes])
    instruments = types.SimpleNamespace(underlyings=("BTC", "ETH"), names=tuple(name for name, _, _ in LEGS))
    book = types.SimpleNamespace(accounts=names, instruments=instruments, position_start=position_start,
                                 qty=np.zeros(position_start[-1]))
    built = types.SimpleNamespace(book=book, closes=closes, mask=lambda accounts: np.zeros(len(names)))
    ladder, detectors = Ladder(), Detectors()
    for name, (state, in_flight, _) in zip(names, accounts):
        restore(ladder, name, state, in_flight)
    codes = _Codes.empty(built, frozenset())  # type: ignore[arg-type]
    codes.refresh(np.arange(len(names)), ladder, detectors, set(names))
    for unreliable, visits in ticks:
        codes.follow(unreliable, ladder)
        for row, state, in_flight in visits:  # a visit changes the ladder, then its row is read again
            if row < len(names):
                restore(ladder, names[row], state, in_flight)
                codes.refresh(np.array([row]), ladder, detectors, set(names))
        for i, name in enumerate(names):
            if ladder.state(name) is AccountState.LIQUIDATED:
                assert codes.table[i, triage.IN_FLIGHT] == ladder.closes_wait(name, closes[i], unreliable)


def test_liquidated_accounts_waiting_on_unreliable_legs_only_mark_their_rounds(monkeypatch) -> None:
    """luna-2022 (oracles unreliable and marks manipulated while accounts are liquidated): the
    triaged replay's outputs are those of one that visits every revalued account, compiled and
    numpy (the screened-out rows left out of both), and the triage marks rounds of accounts
    with legs waiting on an unreliable set."""
    rows = list(venue_feed.rows(generate(library.get("luna-2022")).events))
    waiting = []
    triage_of = Engine._triage

    def watched(self, built, rows, risk, speeds, unreliable, time_ms):
        fate = triage_of(self, built, rows, risk, speeds, unreliable, time_ms)
        waiting.extend(i for i in rows[fate == triage.ROUND].tolist()
                       if any(u in unreliable or n in unreliable for n, u, _ in built.closes[i]))
        return fate

    monkeypatch.setattr(Engine, "_triage", watched)
    triaged = [replay_dicts(rows, params=EngineParams(compiled=compiled)) for compiled in (True, False)]
    assert waiting
    fates = Engine._fates
    monkeypatch.setattr(Engine, "_fates", lambda self, *args: np.minimum(fates(self, *args), triage.VISIT))
    for compiled, out in zip((True, False), triaged):
        visited = replay_dicts(rows, params=EngineParams(compiled=compiled))
        assert [b.breach_id for b in out.breaches] == [b.breach_id for b in visited.breaches]
        assert [a.action_id for a in out.actions] == [a.action_id for a in visited.actions]
        assert out.exposures == visited.exposures
