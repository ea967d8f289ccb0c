"""Taking each partition strictly in offset order (``pipelines.streams.inorder``): what faust
leaves over or loses around a rebalance is dropped and read again from the first offset missed.
The end-to-end proof is the replay-parity test on the real broker (scale-out and SIGKILL)."""

from __future__ import annotations

from pipelines.streams.inorder import STALLED_S, InOrder, behind_snapshot
from pipelines.streams.settled import BrokerProgress

TP = ("p.backstop.positions", 3)
FANOUT = ("p.backstop.market.fanout", 3)


def reading(ends: dict, committed: dict | None = None, starts: dict | None = None) -> BrokerProgress:
    return BrokerProgress(starts=starts or {}, ends=ends, committed=committed or {})


def test_nothing_is_taken_before_the_worker_positions_the_partition() -> None:
    order = InOrder()
    assert not order.take(TP, 0, 1.0)
    assert order.due([TP], reading({TP: 10}, committed={TP: 4}), 2.0) == {TP: 4}
    order.positioned({TP: 4}, 2.0)
    assert not order.take(TP, 3, 2.5)  # before the committed offset: the snapshot holds it
    assert [order.take(TP, offset, 3.0) for offset in (4, 5, 6)] == [True, True, True]
    assert order.next[TP] == 7


def test_a_partition_without_a_commit_is_read_from_its_log_start() -> None:
    order = InOrder()
    assert order.due([TP, ("p.changelog", 3)], reading({TP: 10}, starts={TP: 2}), 1.0) == {TP: 2}


def test_a_hole_is_read_again_from_the_first_offset_missed() -> None:
    order = InOrder()
    order.positioned({TP: 0}, 1.0)
    assert order.take(TP, 0, 1.5)
    assert not order.take(TP, 3, 1.6)  # 1 and 2 were lost on the way
    assert order.due([TP], reading({TP: 10}), 1.7) == {TP: 1}
    order.positioned({TP: 1}, 1.8)
    assert not order.take(TP, 4, 1.75)  # left over from before the re-read: dropped, no new gap
    assert order.due([TP], reading({TP: 10}), 1.9) == {}
    assert [order.take(TP, offset, 2.0) for offset in (1, 2, 3)] == [True, True, True]


def test_a_hole_is_never_taken_as_real_outside_a_compacted_topic() -> None:
    order = InOrder()
    order.positioned({TP: 4}, 1.0)
    assert order.take(TP, 4, 1.1)
    for now in (1.2, 1.4, 1.6):  # whatever arrives past offset 5, however often it is re-read
        assert not order.take(TP, 6, now)
        targets = order.due([TP], reading({TP: 10}), now + 0.05)
        assert targets == {TP: 5}
        order.positioned(targets, now + 0.1)
    assert order.next[TP] == 5


def test_a_partition_positioned_again_after_a_rebalance_still_waits_for_its_first_offset() -> None:
    order = InOrder()
    order.positioned({TP: 0}, 1.0)
    order.forget(TP)
    order.positioned({TP: 0}, 2.0)  # no commit yet: the log start again
    assert not order.take(TP, 3, 2.5)  # faust lost 0..2: read again, not skipped
    assert order.due([TP], reading({TP: 10}), 3.0) == {TP: 0}


def test_a_compacted_topic_has_holes_by_design() -> None:
    instruments = ("p.backstop.instruments", 0)
    order = InOrder(compacted=["p.backstop.instruments"])
    order.positioned({instruments: 0, TP: 0}, 1.0)
    assert order.take(instruments, 3, 1.1) and order.next[instruments] == 4
    assert not order.take(TP, 3, 1.1)


def test_a_partition_the_broker_holds_more_of_is_re_read_once_nothing_arrives() -> None:
    order = InOrder()
    order.positioned({TP: 0, FANOUT: 0}, 0.0)
    assert order.take(TP, 0, 0.5) and order.take(FANOUT, 0, 0.5)
    ends = reading({TP: 2, FANOUT: 1})
    assert order.due([TP, FANOUT], ends, STALLED_S) == {}  # not for long yet
    # the messages after offset 0 were lost with nothing after them: only time shows it
    assert order.due([TP, FANOUT], ends, 0.5 + STALLED_S + 0.1) == {TP: 1}  # the fan-out is read to its end


def test_a_revoked_partition_is_not_taken_until_positioned_again() -> None:
    order = InOrder()
    order.positioned({TP: 0}, 0.0)
    assert order.take(TP, 0, 0.1)
    order.forget(TP)
    assert not order.take(TP, 1, 0.2)
    assert order.due([TP], reading({TP: 5}, committed={TP: 1}), 0.3) == {TP: 1}


# ---------------------------------------------------------------- the restored shard covers the commits

COLLATERAL = ("p.backstop.collateral", 3)
ACCOUNT_INPUTS = {TP: "backstop.positions/3", COLLATERAL: "backstop.collateral/3"}
FANOUT_INPUT = (FANOUT, "backstop.market.fanout/3")


def behind(targets: dict, held: dict, starts: dict | None = None) -> dict:
    return behind_snapshot(targets, ACCOUNT_INPUTS, FANOUT_INPUT, held, starts or {})


def test_a_shard_restored_from_its_snapshot_reads_from_the_committed_offsets() -> None:
    targets = {TP: 8, COLLATERAL: 3, FANOUT: 40}  # the snapshot holds positions 0..7, collateral 0..2, fan-out 0..39
    held = {"backstop.positions/3": 7, "backstop.collateral/3": 2, "backstop.market.fanout/3": 39,
            "backstop.market.index/0": 900}
    assert behind(targets, held) == {}
    # a snapshot ahead of the commits (stored, then the worker died before committing): fine too
    assert behind({TP: 5, COLLATERAL: 1, FANOUT: 20}, held) == {}


def test_inputs_committed_past_the_snapshot_are_read_again_from_where_it_ends() -> None:
    targets = {TP: 8, COLLATERAL: 3, FANOUT: 40}
    held = {"backstop.positions/3": 4, "backstop.collateral/3": 2, "backstop.market.fanout/3": 30}
    assert behind(targets, held, {FANOUT: 6}) == {TP: 5, FANOUT: 31}
    # the account inputs caught up, the fan-out not yet (a takeover while a shard re-reads): the fan-out alone
    assert behind(targets, {**held, "backstop.positions/3": 7}) == {FANOUT: 31}
    # an input the shard never took anything from, committed past its start
    assert behind(targets, {"backstop.positions/3": 7, "backstop.market.fanout/3": 39}) == {COLLATERAL: 0}
    # never before the log start: what retention deleted cannot be read again
    assert behind(targets, held, {TP: 6, FANOUT: 35}) == {TP: 6, FANOUT: 35}


def test_a_snapshot_that_never_recorded_its_fanout_offset_reads_the_fanout_again_only_when_behind() -> None:
    old = {"backstop.positions/3": 7, "backstop.collateral/3": 2}  # written before shards recorded it
    assert behind({TP: 8, COLLATERAL: 3, FANOUT: 40}, old) == {}
    assert behind({TP: 9, COLLATERAL: 3, FANOUT: 40}, old, {FANOUT: 6}) == {TP: 8, FANOUT: 6}


def test_no_snapshot_while_the_group_committed_past_the_log_start_reads_everything_again() -> None:
    starts = {TP: 2, COLLATERAL: 0, FANOUT: 10}
    assert behind({TP: 2, COLLATERAL: 0, FANOUT: 10}, {}, starts) == {}  # a new deployment
    assert behind({TP: 2, COLLATERAL: 0, FANOUT: 11}, {}, starts) == {FANOUT: 10}
    assert behind({TP: 5, COLLATERAL: 3, FANOUT: 11}, {}, starts) == starts
    # only the inputs being positioned now are moved
    assert behind({TP: 9}, {}, starts) == {TP: 2}
