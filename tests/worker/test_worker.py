"""Workers on an in-memory broker give exactly the in-process run's outputs."""

from __future__ import annotations

import pytest

from pipelines.engine.engine import EngineParams
from tests.kit.crash import crash_events
from tests.worker.cluster import CONFIG, Cluster, assert_same, oracle, outputs, publish

PARAMS = EngineParams(hedged_accounts=frozenset({"hedged-desk"}))


@pytest.mark.parametrize("seed", range(3))
def test_one_worker_holding_every_partition_matches_the_in_process_run(seed: int) -> None:
    cluster = Cluster(CONFIG.__class__(**{**CONFIG.__dict__, "engine": PARAMS}), seed=seed)
    messages = publish(cluster.broker, crash_events())
    want = oracle(messages, PARAMS)
    assert len(want["Action"]) > 10
    cluster.start("w1")
    cluster.group.move(range(12), "w1")
    cluster.settle()
    assert_same(outputs(cluster.broker), want)


@pytest.mark.parametrize("seed", range(int(__import__("os").environ.get("WORKER_SEEDS", "6"))))
def test_partitions_moving_and_workers_crashing_change_no_output(seed: int) -> None:
    """Two workers share the partitions; at random steps partitions move between them, and a
    worker dies (what it had not flushed is lost) and is started again. Every output of the
    in-process run arrives, copies sent again are identical, nothing else arrives."""
    import random

    rng = random.Random(seed)
    cluster = Cluster(CONFIG.__class__(**{**CONFIG.__dict__, "engine": PARAMS}), seed=seed)
    events = crash_events()
    messages = publish(Cluster().broker, events)
    want = oracle(messages, PARAMS)
    cluster.feed(events, per_step=rng.randrange(2, 8))
    cluster.start("a")
    cluster.start("b")
    cluster.group.move(range(0, 6), "a")
    cluster.group.move(range(6, 12), "b")
    for _ in range(8):
        cluster.step(rng.randrange(5, 120))
        event = rng.choice(["move", "move", "crash"])
        if event == "move":
            giver = rng.choice(sorted(cluster.workers))
            held = sorted(cluster.group.members[giver].held)
            if held:
                cluster.group.move(rng.sample(held, rng.randint(1, len(held))),
                                   next(n for n in cluster.workers if n != giver))
        else:
            name = rng.choice(sorted(cluster.workers))
            lost = cluster.crash(name)
            cluster.step(rng.randrange(0, 20))
            cluster.start(name)
            cluster.group.move(lost, name)
    cluster.settle()
    assert_same(outputs(cluster.broker), want)
