"""A message faust handed over before its partition was last revoked is not processed: the
partition is read again from its committed offset, and the old copy would put a shard ahead of
that re-read (``pipelines.streams.app.current``). The end-to-end proof is the SIGKILL parity
tests; these pin the rule itself."""

from __future__ import annotations

from types import SimpleNamespace

from pipelines.streams.app import current


def message(topic: str, partition: int, time_in: float | None) -> SimpleNamespace:
    return SimpleNamespace(topic=topic, partition=partition, time_in=time_in)


def test_before_any_rebalance_every_message_is_current() -> None:
    assert current(message("p.backstop.positions", 3, 0.5), {})


def test_a_message_handed_over_after_the_revocation_is_current() -> None:
    revoked_at = {("p.backstop.positions", 3): 100.0}
    assert current(message("p.backstop.positions", 3, 100.5), revoked_at)


def test_a_message_taken_before_the_last_revocation_is_not() -> None:
    revoked_at = {("p.backstop.positions", 3): 100.0}
    assert not current(message("p.backstop.positions", 3, 99.9), revoked_at)
    assert not current(message("p.backstop.positions", 3, 100.0), revoked_at)


def test_revocations_are_per_topic_partition() -> None:
    revoked_at = {("p.backstop.positions", 3): 100.0, ("p.backstop.market.fanout", 3): 50.0}
    assert current(message("p.backstop.market.fanout", 3, 60.0), revoked_at)
    assert not current(message("p.backstop.positions", 3, 60.0), revoked_at)
    assert current(message("p.backstop.positions", 4, 60.0), revoked_at)  # never revoked here


def test_a_message_without_an_arrival_stamp_is_not_trusted() -> None:
    assert not current(message("p.backstop.positions", 3, None), {})
