"""Take every input partition strictly in offset order, and re-read from the first offset missed.

A shard's restore-and-dedup recovery needs each input's messages in offset order with none
missing: a message taken past a hole puts the shard ahead, and the records in the hole are then
dropped as redeliveries. faust-streaming does not guarantee that around a rebalance:

- it clears its stream buffers when flow resumes, and at the end of a recovery it resumes the
  partitions and lets the fetcher run while it seeks them to their committed offsets, *before*
  that clear (``Recovery.on_recovery_completed``): messages fetched in between are discarded
  while the consumer's position has moved past them, so nothing fetches them again;
- a rebalance leaves messages already handed to a stream in its take buffer, taken before the
  partitions were read again from their committed offsets.

Both were seen: a worker scaled out two seconds into a replay never read some of its
partitions again, and its shards waited for them for good or went on without them.

So the worker keeps, per topic-partition it reads, the next offset it will take (``InOrder``),
and takes a message only if it is exactly that offset; anything else is dropped unacknowledged.
After an assignment a partition has no next offset until the worker has positioned the consumer
itself (``due``: the group's committed offset, or the log start); a message past the next
offset, or a partition the broker holds more of while nothing arrives, is re-read from the next
offset. Dropping and re-reading are always safe: a shard drops a record it already holds by its
offset, and only taken messages are ever acknowledged. A compacted topic has holes by design
and is taken as it comes. Elsewhere a hole is never taken as real: a message delivered past
it can be one left over from a fetch before the last positioning, however often the worker
re-reads (an earlier version that took a hole once two re-reads began past it skipped the
first records of a partition and emitted other actions in CI). Input producers must therefore
not be transactional (a transaction marker holds an offset no message has); the worker would
re-read such a partition again and again, logging each time.

The group's committed offset is where a newly assigned partition is read from because a
snapshot holding everything before it was stored first. ``behind_snapshot`` checks that, per
account partition, against the shard actually restored: a shard that holds less than the
committed offsets say (no snapshot found, or an older one) would go on without the records in
between, and its accounts would be watched without their positions: silently. Its inputs are
read from where its state ends instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pipelines.streams.settled import TP, BrokerProgress

#: A partition the broker holds more of, from which nothing arrived for this long, is re-read.
#: Only a hole at a partition's tail needs it (any later message shows a hole at once); a busy
#: worker goes seconds without taking anything (5 s re-read fan-out partitions needlessly in
#: a scale-out test), and re-reading costs a fetch, so it is long.
STALLED_S = 30.0


class InOrder:
    """``compacted``: Kafka topic names whose offsets have holes by design (log compaction
    removes superseded records); there a message past the next offset is taken as it comes."""

    def __init__(self, compacted: Iterable[str] = ()) -> None:
        self.next: dict[TP, int] = {}  # the next offset to take, per topic-partition positioned here
        self._compacted = frozenset(compacted)
        self._arrived: dict[TP, float] = {}  # when it last took one
        self._positioned: dict[TP, float] = {}  # when it was last positioned
        self._gaps: set[TP] = set()
        self.dropped = 0

    def take(self, tp: TP, offset: int, handed_over: float | None) -> bool:
        """Whether a message at ``offset`` of ``tp``, handed over by faust at monotonic time
        ``handed_over``, is the one to take now (then the next offset moves on). One past the
        next offset, handed over after the partition was positioned, marks a gap to re-read."""
        expected = self.next.get(tp)
        if expected is None or offset < expected:
            self.dropped += 1
            return False
        if offset > expected and tp[0] not in self._compacted:
            self.dropped += 1
            if (handed_over or 0.0) > self._positioned.get(tp, 0.0):  # else left over from before it
                self._gaps.add(tp)
            return False
        self.next[tp] = offset + 1
        self._arrived[tp] = handed_over or 0.0
        return True

    def forget(self, tp: TP) -> None:
        """The partition was revoked: nothing of it is taken until it is positioned again."""
        self.next.pop(tp, None)
        self._gaps.discard(tp)

    def due(self, assigned: Iterable[TP], progress: BrokerProgress, now: float) -> dict[TP, int]:
        """Where to position the consumer, per assigned partition that needs it: a newly
        assigned one at the group's committed offset (or the log start), one with a gap or
        stalled behind the broker's end (nothing taken for ``STALLED_S``) at its next offset.
        Partitions the reading does not cover (the snapshot changelog) are faust's alone."""
        targets = {}
        for tp in assigned:
            if tp not in progress.ends:
                continue
            start = progress.starts.get(tp, 0)
            expected = self.next.get(tp)
            if expected is None:
                targets[tp] = max(progress.committed.get(tp, 0), start)
            elif tp in self._gaps or (progress.ends[tp] > expected
                                      and now - max(self._arrived.get(tp, 0.0), self._positioned[tp]) > STALLED_S):
                targets[tp] = max(expected, start)
        return targets

    def positioned(self, targets: Mapping[TP, int], now: float) -> None:
        """The consumer now reads each partition of ``targets`` from its offset."""
        for tp, offset in targets.items():
            self.next[tp] = offset
            self._positioned[tp] = now
            self._gaps.discard(tp)


def behind_snapshot(targets: Mapping[TP, int], account_inputs: Mapping[TP, str], fanout: tuple[TP, str],
                    held: Mapping[str, int], starts: Mapping[TP, int]) -> dict[TP, int]:
    """Where one account partition's newly assigned inputs must be read from instead of
    ``targets`` (the group's committed offsets, or log starts) so its shard misses nothing;
    empty when its state covers them.

    ``account_inputs``: the partition's account topic-partitions with their shard input names
    (``backstop.positions/3``); ``fanout``: its fan-out topic-partition with the name the shard
    records it under (``backstop.market.fanout/3``); ``held``: the offsets the restored shard
    holds per input (``Shard.offsets``; empty for a new shard).

    The group commits a partition's offsets only after a snapshot covering them is stored, so
    an input committed past what the shard holds lost state: it is read again from where the
    shard's record of it ends (never before the log start). A snapshot written before shards
    recorded their fan-out offset holds account offsets only; its fan-out is read from the
    start where an account input is behind (the shard drops market records it holds by their
    source offsets).
    """
    def resume(tp: TP, name: str) -> int:
        return max(held.get(name, -1) + 1, starts.get(tp, 0))

    behind = {tp: resume(tp, name) for tp, name in account_inputs.items()
              if tp in targets and targets[tp] > resume(tp, name)}
    fanout_tp, fanout_name = fanout
    if fanout_tp in targets:
        if fanout_name in held or not held:
            if targets[fanout_tp] > resume(fanout_tp, fanout_name):
                behind[fanout_tp] = resume(fanout_tp, fanout_name)
        elif behind:
            behind[fanout_tp] = starts.get(fanout_tp, 0)
    return behind
