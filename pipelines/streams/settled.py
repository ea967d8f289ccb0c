"""Which of a shard's inputs have nothing left on the broker, so that silence may idle them.

The idle rule (an input silent for ``idle_ms`` stops holding the sequencer back) is the one
place wall-clock time enters a worker. Silence alone is not evidence that an input has nothing
to say: while the group rebalances after a worker died, or while a survivor works through a
backlog, an input is silent only because nobody reads it. Idling it then lets the other inputs'
events overtake its own, and the engine sees another order than the in-process replay does —
other breaches, other actions. (A worker SIGKILLed mid-replay did exactly that, in about one run
in four, whatever the idle timeout: recovery on a busy broker outlasted it.)

So an input may be idled only once it is *settled*: everything the broker held for it, when
last asked, has been read here.

- Any input is settled when the shard holds its partition's last record (``Shard.offsets``).
  The shard's own record is what counts: a shard restored from a snapshot holds records this
  worker never read, and the consumer need not fetch them again.
- An account input (``backstop.positions/p``, ``backstop.collateral/p``) is read directly: it is
  also settled when this worker's position on it reached the partition's end offset.
- A market input (``backstop.market.index/1``) reaches shard *p* through the fan-out: the
  shard's own record (above) is the main test, or the partition holds none. That test is
  exact and needs nobody else's bookkeeping: a silent input idles even while the worker is
  behind on the fan-out, and a fan-out whose commit was lost in a rebalance (faust
  drops the acknowledgements of a failed OffsetCommit, so the group's offset can stay behind for
  good) holds nothing back. A last record that never reached the shard as such (unreadable, so
  dead-lettered with its batch) is covered by the slower test: the group's committed offset on
  the source reached its end (the fan-out commits only what the broker confirmed it forwarded)
  and this worker read ``backstop.market.fanout/p`` to an end read *after* those commits.

A partition whose last offset is a transaction marker never settles by these tests: market and
account producers are expected to be idempotent, not transactional.

The same reading shows records lost before a shard read them (``deleted_unread``): a log start
past what the shard took. Retention deletes by message timestamp, so an input stamped with old
event times can vanish while the cluster is still reading it; the shard then goes on without
those records, and the worker says so loudly rather than only in the consumer's offset reset.

``read_progress`` asks the broker (one AdminClient round, off the event loop); ``settled_inputs``
and ``deleted_unread`` are pure. Unknown progress (the broker not answering yet) settles nothing: a shard then
waits, it never guesses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping

from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

TP = tuple[str, int]  # (Kafka topic name, partition)


@dataclasses.dataclass(frozen=True)
class BrokerProgress:
    """One reading of the broker: per topic-partition its log start and end offsets and the
    worker group's committed offset (the next offset to read), where the group has one."""

    starts: Mapping[TP, int]
    ends: Mapping[TP, int]
    committed: Mapping[TP, int]

    def read_to(self, tp: TP, taken: Mapping[TP, int]) -> int:
        """The offset up to which this worker has read ``tp``: what it took where it positioned
        the partition, else the group's committed offset (where reading resumes); never before
        the log start (nothing before it can be read any more). What it took is the truth even
        below the commit: a shard found holding less than the group committed is read again
        from further back (``inorder.behind_snapshot``), and until it is, what the commit
        covers has not reached it."""
        read = taken[tp] if tp in taken else self.committed.get(tp, -1)
        return max(read, self.starts.get(tp, 0))


def read_progress(admin: AdminClient, group: str, partitions: Iterable[TP], timeout_s: float) -> BrokerProgress:
    """Committed offsets first, then the end offsets: an end read after a commit covers
    everything the fan-out forwarded before committing. Raises ``KafkaException`` on failure."""
    tps = [TopicPartition(topic, partition) for topic, partition in partitions]
    request = [ConsumerGroupTopicPartitions(group, tps)]
    answer = admin.list_consumer_group_offsets(request, request_timeout=timeout_s)[group].result()
    committed = {(tp.topic, tp.partition): tp.offset for tp in answer.topic_partitions if tp.offset >= 0}
    offsets = {}
    for name, spec in (("starts", OffsetSpec.earliest()), ("ends", OffsetSpec.latest())):
        futures = admin.list_offsets({tp: spec for tp in tps}, request_timeout=timeout_s)
        offsets[name] = {(tp.topic, tp.partition): future.result().offset for tp, future in futures.items()}
    return BrokerProgress(starts=offsets["starts"], ends=offsets["ends"], committed=committed)


def settled_inputs(inputs: Iterable[str], partition: int, progress: BrokerProgress | None,
                   taken: Mapping[TP, int], heard: Mapping[str, int], topic: Mapping[str, str],
                   account_topics: Collection[str], fanout_topic: str) -> set[str]:
    """The inputs of shard ``partition`` (named ``"backstop.positions/3"``) that are settled.

    ``taken``: this worker's next offset per topic-partition read; ``heard``: per input, the
    source offset of the last record the shard took from it (``Shard.offsets``); ``topic``: catalogue name ->
    Kafka topic name (the deployment prefix); ``account_topics``: the catalogue names read
    directly, every other input arriving through ``fanout_topic`` (a Kafka topic name)."""
    if progress is None:
        return set()
    fanout_read = _fanout_read(progress, (fanout_topic, partition), taken)
    settled = set()
    for name in inputs:
        catalogue_name, index = name.rsplit("/", 1)
        tp = (topic[catalogue_name], int(index))
        if tp not in progress.ends:
            continue
        end = progress.ends[tp]
        if heard.get(name, -1) + 1 >= end:  # the shard holds the last record: nothing more can come
            done = True
        elif catalogue_name in account_topics:
            done = progress.read_to(tp, taken) >= end
        else:  # through the fan-out: nothing left, or the fan-out sent all and it was read
            done = progress.starts.get(tp, 0) >= end or fanout_read and progress.read_to(tp, {}) >= end
        if done:
            settled.add(name)
    return settled


def describe_input(name: str, partition: int, progress: BrokerProgress | None, taken: Mapping[TP, int],
                   heard: Mapping[str, int], topic: Mapping[str, str], account_topics: Collection[str],
                   fanout_topic: str) -> str:
    """Where shard ``partition`` stands on input ``name`` against the broker, in words: what an
    operator needs when a shard waits for that input (arguments as for ``settled_inputs``)."""
    if progress is None:
        return "broker progress unknown"
    catalogue_name, index = name.rsplit("/", 1)
    tp = (topic[catalogue_name], int(index))
    where = f"end {progress.ends.get(tp, '?')}, committed {progress.committed.get(tp, '-')}"
    if catalogue_name in account_topics:
        return f"{where}, read to {progress.read_to(tp, taken)}"
    fanout = (fanout_topic, partition)
    return (f"{where}, last taken {heard.get(name, '-')}; fan-out partition {partition}: end "
            f"{progress.ends.get(fanout, '?')}, read to {progress.read_to(fanout, taken)}")


def deleted_unread(partition: int, progress: BrokerProgress | None, taken: Mapping[TP, int], heard: Mapping[str, int],
                   topic: Mapping[str, str], account_topics: Collection[str], fanout_topic: str
                   ) -> dict[str, tuple[int, int]]:
    """The inputs of shard ``partition`` whose log start has passed records the shard never
    took, as ``{input: (first, start)}``: offsets ``first`` .. ``start - 1`` were deleted before
    it read them. Only inputs the shard has taken something from count (a deployment that starts
    after retention trimmed a topic has lost nothing of its own). A market input counts only
    once ``fanout_topic`` partition ``partition`` is read to its end, as its records may still be
    on their way through the fan-out. Arguments as for ``settled_inputs``."""
    if progress is None:
        return {}
    fanout_read = _fanout_read(progress, (fanout_topic, partition), taken)
    lost = {}
    for name, offset in heard.items():
        catalogue_name, index = name.rsplit("/", 1)
        tp = (topic.get(catalogue_name), int(index))
        start = progress.starts.get(tp, 0)
        if offset + 1 < start and (catalogue_name in account_topics or fanout_read):
            lost[name] = (offset + 1, start)
    return lost


def _fanout_read(progress: BrokerProgress, fanout: TP, taken: Mapping[TP, int]) -> bool:
    """This worker has read the shard's fan-out partition to the end the reading found."""
    return fanout in progress.ends and progress.read_to(fanout, taken) >= progress.ends[fanout]
