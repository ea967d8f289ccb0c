"""Recovery in-process: a worker killed at any call it makes to the outside (an injected abort,
as bytewax's ``TestingSource.ABORT``), then started again, still gives exactly the in-process
run's outputs; a checkpoint this version cannot read is refused and its partition read again."""

from __future__ import annotations

import dataclasses
import logging
import random

import pytest

from pipelines.engine.engine import EngineParams
from pipelines.engine.snapshot import FORMAT
from tests.kit.crash import crash_events
from tests.worker.cluster import CONFIG, Cluster, assert_same, oracle, outputs, publish

PARAMS = EngineParams(hedged_accounts=frozenset({"hedged-desk"}))
CONFIG_HERE = dataclasses.replace(CONFIG, engine=PARAMS)


class Abort(Exception):
    """The worker dies here."""


class Tripwire:
    """Counts the worker's calls to its ports and raises ``Abort`` at call number ``at``."""

    def __init__(self, at: int) -> None:
        self.at, self.calls, self.where = at, 0, ""

    def wrap(self, target: object, *methods: str) -> None:
        for name in methods:
            inner = getattr(target, name)

            label = f"{type(target).__name__}.{name}"

            def tripped(*args, _inner=inner, _name=label, **kwargs):
                self.calls += 1
                if self.calls == self.at:
                    self.where = _name
                    raise Abort(_name)
                return _inner(*args, **kwargs)
            setattr(target, name, tripped)


def arm(cluster: Cluster, name: str, tripwire: Tripwire) -> None:
    """Every port of worker ``name`` counts towards the tripwire; sources opened later too."""
    ports = cluster.ports[name]
    tripwire.wrap(ports.membership, "poll", "commit")
    tripwire.wrap(ports.store, "load", "begin", "finished")
    tripwire.wrap(ports.sink, "send", "flush")
    opened = ports.open_source

    def open_source():
        source = opened()
        tripwire.wrap(source, "assign", "poll", "unassign")
        return source
    ports.open_source = open_source


@pytest.mark.parametrize("seed", range(int(__import__("os").environ.get("WORKER_SEEDS", "8"))))
def test_a_worker_aborted_at_any_call_and_restarted_changes_no_output(seed: int) -> None:
    rng = random.Random(seed)
    cluster = Cluster(CONFIG_HERE, seed=seed)
    events = crash_events()
    want = oracle(publish(Cluster().broker, events), PARAMS)
    cluster.feed(events, per_step=rng.randrange(2, 8))
    cluster.start("a")
    cluster.start("b")
    cluster.group.move(range(0, 7), "a")
    cluster.group.move(range(7, 12), "b")
    aborts = 0
    for _ in range(3):
        victim = rng.choice(["a", "b"])
        tripwire = Tripwire(rng.randrange(1, 3_000))
        arm(cluster, victim, tripwire)
        for _ in range(400):
            try:
                cluster.step()
            except Abort:
                aborts += 1
                lost = cluster.crash(victim)
                cluster.step(rng.randrange(0, 10))
                cluster.start(victim)
                cluster.group.move(lost, victim)
                break
    cluster.settle()
    assert aborts, "the tripwires must fire"
    assert_same(outputs(cluster.broker), want)


def test_a_checkpoint_this_version_cannot_read_is_refused_and_its_partition_read_again(
        caplog: pytest.LogCaptureFixture) -> None:
    cluster = Cluster(CONFIG_HERE)
    want = oracle(publish(cluster.broker, crash_events()), PARAMS)
    cluster.start("a")
    cluster.group.move(range(12), "a")
    cluster.settle()
    assert set(cluster.store.stored) == set(range(12))
    cluster.store.stored[5] = b"BKS\x01" + cluster.store.stored[5][4:]  # a format-1 checkpoint
    cluster.store.stored[8] = cluster.store.stored[8][:40]  # a damaged one
    cluster.crash("a")
    cluster.start("b")
    caplog.clear()  # what the first worker logged (captured too where an earlier test set the level) is not the story
    with caplog.at_level(logging.INFO):
        cluster.group.move(range(12), "b")
        cluster.settle()
    refused = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in refused] == [
        f"partition 5: the stored checkpoint snapshot is format 1; this version reads format {FORMAT}: "
        "read its inputs again",
        "partition 8: the stored checkpoint snapshot is damaged (error): read its inputs again"]
    took = [r.getMessage() for r in caplog.records if r.getMessage().startswith("took over")]
    assert len(took) == 2 and "took over partition(s) [5, 8] from their first records" in took, took
    assert any(t.startswith("took over partition(s) [0, 1, 2, 3, 4, 6, 7, 9, 10, 11] from their checkpoint at ")
               for t in took), took
    assert_same(outputs(cluster.broker), want)
