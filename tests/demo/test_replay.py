"""Issue 22 items 5 and 6: replaying the demo's recording gives the demo's breaches and actions, the
incident summary counts what the demo prints, and a second demo into the same store is refused.

chdb opens one store per process, so every command that reads or writes a store runs in its own
``backstop`` process, as a user runs them."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.replay.inprocess import replay_with_venue
from pipelines.replay.reading import recorded_scenario

SCENARIO = "aug-2024"
EXE = str(Path(sys.executable).with_name("backstop"))


def backstop(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=600, check=check)


def ids(store: Path, table: str, column: str) -> list[str]:
    sql = f"SELECT {column} FROM {table} FINAL ORDER BY {column}"
    answer = json.loads(backstop("audit", "query", "--store", str(store), sql, "--json").stdout)
    return [row[0] for row in answer["rows"]]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict]:
    store = tmp_path_factory.mktemp("demo") / "audit"
    return store, json.loads(backstop("demo", "--scenario", SCENARIO, "--store", str(store), "--json").stdout)


def test_replaying_the_scenario_recording_with_its_venue_gives_the_demo_ids(demo, tmp_path) -> None:
    store, _ = demo
    recording = tmp_path / "rec.avro"
    backstop("scenarios", "record", SCENARIO, "--out", str(recording))
    assert recorded_scenario(recording)["hedged_accounts"]  # the scenario's hedged books travel with it
    out = replay_with_venue(recording)
    assert any(a.action_type == "delta_hedge" for a in out.actions)
    assert sorted(b.breach_id for b in out.breaches) == ids(store, "breaches", "breach_id")
    assert sorted(a.action_id for a in out.actions) == ids(store, "actions", "action_id")


def test_the_incident_summary_counts_what_the_demo_prints(demo) -> None:
    store, printed = demo
    summary = json.loads(backstop("incident", "summary", "--store", str(store), "--from", printed["from"],
                                  "--to", printed["to"], "--json").stdout)
    fired: dict[str, int] = {}
    for row in summary["breaches"]:
        fired[row["kind"]] = fired.get(row["kind"], 0) + row["fired"]
    assert fired == printed["breaches"]
    assert sum(row["cleared"] for row in summary["breaches"]) > 0  # counted apart, not added to the fired ones
    assert {row["action_type"]: row["count"] for row in summary["actions"]} == printed["actions"]


def test_a_second_demo_into_the_same_store_is_refused_and_leaves_it_as_it_was(demo) -> None:
    store, printed = demo
    before = ids(store, "actions", "action_id")
    again = backstop("demo", "--scenario", "black-thursday-2020", "--store", str(store), "--json", check=False)
    assert again.returncode == 2
    assert again.stdout == "" and len(again.stderr.strip().splitlines()) == 1 and "already holds" in again.stderr
    assert ids(store, "actions", "action_id") == before
