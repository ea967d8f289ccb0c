"""Replay parity on the real broker: one scenario recording, replayed into Kafka and through two
``backstop worker`` processes (checkpoints every 500 ms), gives exactly the breaches and actions of
the same file replayed in-process — also when one worker is SIGKILLed mid-stream and restarted
(its partitions restored from their checkpoints), and when a second worker joins mid-stream."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from pipelines.engine.engine import EngineParams
from pipelines.engine.wire import action_record
from pipelines.policy.signing import SigningKey
from pipelines.replay.inprocess import replay
from pipelines.replay.kafka_replay import replay_to_kafka
from pipelines.scenarios import library
from pipelines.scenarios.generate import generate, write_recording
from tests.kit.probes import stop
from tests.kit.worker_processes import SECRET, collect, missing_by_partition, start_worker, worker_logs

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(600)]

SCENARIO = "black-thursday-2020"


@pytest.mark.parametrize("change", ["steady", "sigkill", "scale-out"])
def test_a_recording_replayed_through_kafka_and_in_process_gives_the_same_outputs(kafka_bootstrap: str, prefix: str,
                                                                                   tmp_path: Path, change: str) -> None:
    """``steady``: two workers from the start; ``sigkill``: once the first actions are out, one
    dies and is restarted; ``scale-out``: one worker, joined by a second once the first actions
    are out (partitions move from a live worker mid-stream)."""
    generated = generate(library.get(SCENARIO))
    recording = tmp_path / "scenario.avro"
    write_recording(generated, recording)
    expected = replay(recording, key=SigningKey("default", SECRET.encode()),
                      params=EngineParams(hedged_accounts=generated.hedged))
    expected_actions = {a.action_id: action_record(a) for a in expected.actions}
    expected_breaches = {b.breach_id for b in expected.breaches}
    assert len(expected_actions) > 50 and len(expected_breaches) > 20

    replay_to_kafka(recording, {"bootstrap.servers": kafka_bootstrap}, prefix=prefix)
    hedged = ",".join(sorted(generated.hedged))
    names = ("w1",) if change == "scale-out" else ("w1", "w2")
    workers = [start_worker(kafka_bootstrap, prefix, tmp_path, name, hedged=hedged) for name in names]
    try:
        if change != "steady":  # once the first actions are out, partitions move
            assert collect(kafka_bootstrap, f"{prefix}backstop.actions", "Action", "action_id",
                           set(list(expected_actions)[:10]), timeout_s=120)
            if change == "sigkill":
                stop(workers[0], signal.SIGKILL)
                workers[0] = start_worker(kafka_bootstrap, prefix, tmp_path, "w1-restarted", hedged=hedged)
            else:
                workers.append(start_worker(kafka_bootstrap, prefix, tmp_path, "w2", hedged=hedged))
        actions = collect(kafka_bootstrap, f"{prefix}backstop.actions", "Action", "action_id",
                          set(expected_actions), timeout_s=240)
        breaches = collect(kafka_bootstrap, f"{prefix}backstop.breaches", "Breach", "breach_id",
                           expected_breaches, timeout_s=60)
    finally:
        for worker in workers:
            stop(worker)
    logs = worker_logs(tmp_path)
    assert set(actions) == set(expected_actions), (missing_by_partition(expected_actions, actions), logs)
    differing = {i: {k: (v, expected_actions[i].get(k)) for k, v in copy.items() if v != expected_actions[i].get(k)}
                 for i, copies in actions.items() for copy in copies if copy != expected_actions[i]}
    assert not differing, differing
    missing = [b for b in expected.breaches if b.breach_id not in breaches]
    extra = [copies[0] for breach_id, copies in breaches.items() if breach_id not in expected_breaches]
    assert not missing and not extra, (missing[:5], extra[:5], logs)
