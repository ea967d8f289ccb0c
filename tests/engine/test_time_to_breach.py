"""The time to breach a visit hands the ladder (``AccountView.time_to_breach_ms``) is the one
``ladder.time_to_breach_ms`` gives for that view, bit for bit: compiled (the triage kernel's,
kept per book row) and numpy, on a feed where each tick moves only some underlyings, so that
a tick's triaged rows are part of the book and a row's place among them is not its row."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pipelines.backtest.run import engine_params
from pipelines.backtest.simulate import sequence_events
from pipelines.engine.engine import Engine
from pipelines.policy.ladder import Ladder, time_to_breach_ms
from pipelines.replay.inprocess import DEFAULT_KEY
from pipelines.scenarios import library
from pipelines.scenarios.generate import generate


def every_other_second(events: list) -> list:
    """``events`` with each underlying's index records kept only every other second, the
    underlyings taking turns."""
    underlyings = sorted({v["underlying"] for _, record, v in events if record == "IndexPrice"})
    return [(t, record, v) for t, record, v in events if record != "IndexPrice"
            or (v["event_time_ms"] // 1000 + underlyings.index(v["underlying"])) % 2 == 0]


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("scenario", ["luna-2022", "may-2021"])
def test_a_visits_time_to_breach_is_its_views(scenario, compiled, monkeypatch) -> None:
    generated = generate(library.get(scenario))
    engine = Engine(DEFAULT_KEY, dataclasses.replace(engine_params(generated), compiled=compiled))
    on_revaluation, triage_of, seen, partial = Ladder.on_revaluation, Engine._triage, [], []

    def checked(self: Ladder, view, *args, **kwargs):
        seen.append((view.time_to_breach_ms, time_to_breach_ms(view)))
        return on_revaluation(self, view, *args, **kwargs)

    def triaged(self: Engine, built, rows, *args):
        partial.append(not np.array_equal(rows, np.arange(len(rows))))
        return triage_of(self, built, rows, *args)

    monkeypatch.setattr(Ladder, "on_revaluation", checked)
    monkeypatch.setattr(Engine, "_triage", triaged)
    for _, record, value, ref in sequence_events(every_other_second(generated.events)):
        engine.on_event(record, value, ref)
    engine.flush()
    assert len(seen) > 20 and any(partial)  # some ticks' rows are not the book's first rows
    got, want = np.array(seen).T
    np.testing.assert_array_equal(got, want)
