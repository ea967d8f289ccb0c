"""Liquidating accounts whose round is due (``DUE_ROUND``): the engine plans them with the visited
rows, checks each round with ``Ladder.round_orders`` and marks the rounds that send nothing
without the per-account path; the replays' outputs are those of one that visits every account."""

from __future__ import annotations

import numpy as np
import pytest

from bench import venue_feed
from pipelines.engine.engine import Engine, EngineParams
from pipelines.replay.inprocess import replay_dicts
from pipelines.risk.kernels import triage
from pipelines.scenarios import library
from pipelines.scenarios.generate import generate


@pytest.mark.parametrize("scenario", ["jelly-2025", "luna-2022"])
def test_due_rounds_that_send_nothing_change_no_output(scenario, monkeypatch) -> None:
    """Compiled and numpy, the triaged replay gives the breaches, actions and exposures of one
    that sends every revalued account but the screened-out ones through the per-account path,
    and it marks rounds without a visit as well as visiting rounds that send."""
    rows = list(venue_feed.rows(generate(library.get(scenario)).events))
    marked, sent = [], []
    rounds_send = Engine._rounds_send

    def watched(self, *args):
        sends = rounds_send(self, *args)
        marked.append(int((~sends).sum()))
        sent.append(int(sends.sum()))
        return sends

    monkeypatch.setattr(Engine, "_rounds_send", watched)
    triaged = [replay_dicts(rows, params=EngineParams(compiled=compiled)) for compiled in (True, False)]
    assert sum(marked) and sum(sent)
    monkeypatch.undo()
    fates = Engine._fates
    monkeypatch.setattr(Engine, "_fates", lambda self, *args: np.minimum(fates(self, *args), triage.VISIT))
    for compiled, out in zip((True, False), triaged):
        visited = replay_dicts(rows, params=EngineParams(compiled=compiled))
        assert [b.breach_id for b in out.breaches] == [b.breach_id for b in visited.breaches]
        assert [a.action_id for a in out.actions] == [a.action_id for a in visited.actions]
        assert out.exposures == visited.exposures
