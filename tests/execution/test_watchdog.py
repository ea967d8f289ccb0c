"""The Kafka shells' watchdog (executor, audit sink): a blocking call that outlives its deadline
is reported, a call that returns in time is not."""

from __future__ import annotations

import threading
import time

from pipelines.kafka import Watchdog


def test_a_call_past_its_deadline_is_reported_once() -> None:
    stuck: list[str] = []
    fired = threading.Event()

    def on_stuck(what: str) -> None:
        stuck.append(what)
        fired.set()
    with Watchdog("send_offsets_to_transaction", 0.05, on_stuck):
        assert fired.wait(5)  # the block is still running when the timer fires
    assert stuck == ["send_offsets_to_transaction"]


def test_a_call_in_time_is_not_reported() -> None:
    stuck: list[str] = []
    with Watchdog("commit_transaction", 0.2, stuck.append):
        time.sleep(0.01)
    time.sleep(0.4)  # past the deadline: the cancelled timer stays silent
    assert stuck == []
