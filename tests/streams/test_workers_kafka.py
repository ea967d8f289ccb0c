"""Stream workers on the real broker: a scripted crash through a cluster of workers gives
exactly the breaches and actions of the same events run in-process (parity), also when a worker
is SIGKILLed mid-stream and its partitions move."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from pipelines.engine.engine import EngineParams
from pipelines.engine.shard import run_shards
from pipelines.engine.wire import action_record
from pipelines.policy.signing import SigningKey
from pipelines.topics import ACCOUNT_PARTITIONS
from tests.kit.crash import crash_events
from tests.kit.ports import free_ports
from tests.kit.probes import get, scrape, series, stop, total, wait_for
from tests.kit.worker_processes import SECRET, collect, missing_by_partition, publish, start_worker, worker_logs

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(600)]

KEY = SigningKey("default", SECRET.encode())


@pytest.mark.parametrize("kill_one", [False, pytest.param(True, marks=pytest.mark.chaos)], ids=["steady", "sigkill"])
def test_two_workers_match_the_in_process_run(kafka_bootstrap: str, prefix: str, tmp_path: Path, kill_one: bool,
                                              recovery_report) -> None:
    events = crash_events()
    # SIGKILL: a quarter of the crash is on the broker when the workers start, the rest is produced
    # after the kill, so the survivor takes the partitions over mid-stream
    split = len(events) // 4 if kill_one else len(events)
    messages = publish(kafka_bootstrap, prefix, events=events[:split])
    params = EngineParams(hedged_accounts=frozenset({"hedged-desk"}))

    ports = [free_ports(), free_ports()]
    workers = [start_worker(kafka_bootstrap, prefix, tmp_path, f"w{n + 1}", metrics_port=port)
               for n, port in enumerate(ports)]
    try:
        if kill_one:
            first = collect(kafka_bootstrap, f"{prefix}backstop.exposures", "ExposureSnapshot", "account",
                            {"levered-long", "short-puts", "hedged-desk", "whale-safe"}, timeout_s=120)
            assert first, (tmp_path / "w1.log").read_text()[-3000:]
            time.sleep(1.0)  # a checkpoint or two (every 500 ms)
            stop(workers[0], signal.SIGKILL)
            killed = time.monotonic()
            messages += publish(kafka_bootstrap, prefix, events=events[split:])
            workers[0] = start_worker(kafka_bootstrap, prefix, tmp_path, "w1-restarted")
        expected = run_shards(messages, ACCOUNT_PARTITIONS, KEY, params)
        expected_actions = {a.action_id: action_record(a) for a in expected.actions}
        expected_breaches = {b.breach_id for b in expected.breaches}
        assert len(expected_actions) > 10 and len(expected_breaches) > 5
        actions = collect(kafka_bootstrap, f"{prefix}backstop.actions", "Action", "action_id",
                          set(expected_actions), timeout_s=240)
        if kill_one:
            finished = time.monotonic() - killed
        breaches = collect(kafka_bootstrap, f"{prefix}backstop.breaches", "Breach", "breach_id",
                           expected_breaches, timeout_s=60)
        exposures = collect(kafka_bootstrap, f"{prefix}backstop.exposures", "ExposureSnapshot", "account",
                            {e["account"] for e in expected.exposures}, timeout_s=60)
        if not kill_one:  # both workers' endpoints: ready, and together they counted what they emitted
            pages = [scrape(port) for port in ports]
            assert [get(port, "/readyz")[0] for port in ports] == [200, 200]
            emitted = sum(total(page, "backstop_actions_total", stage="worker", outcome="emitted") for page in pages)
            consumed = sum(total(page, "backstop_events_consumed_total", stage="worker") for page in pages)
            # each timed its steps; one held past the session timeout (10 s) would have lost its partitions
            steps = [total(page, "backstop_worker_step_seconds_count") for page in pages]
            assert all(steps) and all(total(page, "backstop_worker_step_seconds_bucket", le="10.0") == count
                                      for page, count in zip(pages, steps)), steps

            lag: dict = {}

            def caught_up() -> bool:  # every input partition reported, the account ones all at lag 0
                lag.clear()
                for port in ports:
                    for labels, value in series(scrape(port), "backstop_consumer_lag").items():
                        lag[dict(labels)["topic"], dict(labels)["partition"]] = value
                accounts = [v for (topic, _), v in lag.items()
                            if topic in ("backstop.positions", "backstop.collateral")]
                return len(lag) == 2 * ACCOUNT_PARTITIONS + 6 * 3 and not any(accounts)
            try:
                wait_for(caught_up, 30, "lag 0 on every account partition")
            except AssertionError as exc:
                logs = worker_logs(tmp_path, tail=4000)
                raise AssertionError(f"{exc}: {len(lag)} series, {sorted(lag.items())}\n{logs}") from None
    finally:
        exits = [stop(worker) for worker in workers]
    logs = worker_logs(tmp_path)
    assert set(actions) == set(expected_actions), (missing_by_partition(expected_actions, actions), logs)
    for action_id, copies in actions.items():
        for copy in copies:  # re-sent copies are identical to the in-process action
            want = expected_actions[action_id]
            assert copy == want, {k: (v, want.get(k)) for k, v in copy.items() if v != want.get(k)}
    assert set(breaches) == expected_breaches
    if kill_one:  # from the kill to the last action: failure detection, takeover, catching up
        recovery_report("stream worker SIGKILLed (1 of 2)", finished,
                        f"{len(expected_actions)} actions and {len(expected_breaches)} breaches, as in-process")
    if not kill_one:
        assert emitted >= len(expected_actions) and consumed >= len(messages)
        assert exits == [0, 0], "SIGTERM: a worker stops cleanly (what it had not snapshotted is redelivered)"
        assert {topic for topic, _ in lag} == {"backstop.positions", "backstop.collateral",
                                              "backstop.instruments", "backstop.market.index", "backstop.market.mark",
                                              "backstop.market.volatility", "backstop.market.depth",
                                              "backstop.market.oracle"}
    # whale-safe is alone on its partition and never breaches: its exposures are the only sign its shard ran
    assert set(exposures) == {"levered-long", "short-puts", "hedged-desk", "whale-safe"}, logs
    strays = [copy for copies in exposures.values() for copy in copies if copy not in expected.exposures]
    assert not strays, strays[:2]
