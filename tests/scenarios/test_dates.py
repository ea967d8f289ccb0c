"""Scenarios are dated on their incidents: event time starts on the incident's day, options expire after it."""

from __future__ import annotations

import datetime

from pipelines.scenarios import library
from pipelines.scenarios.generate import generate


def day(ms: int) -> datetime.date:
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC).date()


def test_every_scenario_starts_in_the_year_its_name_gives() -> None:
    for scenario in library.SCENARIOS:
        assert scenario.name.endswith(str(day(scenario.start_ms).year)), scenario.name


def test_black_thursday_runs_on_12_march_2020() -> None:
    generated = generate(library.get("black-thursday-2020"))
    times = [value["event_time_ms"] for _, _, value in generated.events]
    assert generated.t0 == min(times) == library.get("black-thursday-2020").start_ms
    assert {day(t) for t in times} == {datetime.date(2020, 3, 12)}
    options = {value["instrument"] for _, record, value in generated.events
               if record == "PositionUpdate" and value["instrument"].endswith(("-C", "-P"))}
    assert options and all("APR20" in name for name in options)
