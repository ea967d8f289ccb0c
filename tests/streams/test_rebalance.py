"""A message faust handed over before the current assignment of its partition is not processed:
the partition is read again from its committed offset, and the old copy would put a shard
ahead of that re-read (``pipelines.streams.app.current``). The end-to-end proof is the SIGKILL
parity tests; these pin the rule itself."""

from __future__ import annotations

from types import SimpleNamespace

from pipelines.streams.app import current


def message(topic: str, partition: int, time_in: float | None) -> SimpleNamespace:
    return SimpleNamespace(topic=topic, partition=partition, time_in=time_in)


def test_a_message_handed_over_after_the_assignment_is_current() -> None:
    assigned_at = {("p.backstop.positions", 3): 100.0}
    assert current(message("p.backstop.positions", 3, 100.0), assigned_at)
    assert current(message("p.backstop.positions", 3, 250.5), assigned_at)


def test_a_message_taken_before_the_last_rebalance_is_not() -> None:
    assigned_at = {("p.backstop.positions", 3): 100.0}
    assert not current(message("p.backstop.positions", 3, 99.9), assigned_at)


def test_the_assignment_is_per_topic_partition() -> None:
    assigned_at = {("p.backstop.positions", 3): 100.0, ("p.backstop.market.fanout", 3): 50.0}
    assert current(message("p.backstop.market.fanout", 3, 60.0), assigned_at)
    assert not current(message("p.backstop.positions", 3, 60.0), assigned_at)
    assert not current(message("p.backstop.positions", 4, 500.0), assigned_at)  # not assigned here


def test_a_message_without_an_arrival_stamp_is_not_trusted() -> None:
    assert not current(message("p.backstop.positions", 3, None), {("p.backstop.positions", 3): 1.0})
