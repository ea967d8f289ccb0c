"""The stream worker: the account partitions its group gives it, one engine for all of them.

One ``Worker.step`` polls the group (``Membership``), reads a batch for every lane, admits each
record once (decoded, validated; refused ones to the dead letters), pushes it into its lane's
sequencer, applies what can be released and sends the outputs (``Sink``). The market side is
read, decoded and applied once per lane, and in steady state a worker has one lane: one engine
for every partition it holds, one revaluation pass per tick over all their accounts.

Taking a partition over. Its latest checkpoint (the partition and the market at one tick boundary,
``engine/snapshot.py``) is restored into a lane of its own, which reads the market and the
partition's inputs on from there with a reader of its own: it repeats, by id, what the last owner
emitted after the checkpoint, and emits what it did not live to emit. When that lane has caught up
with the worker's main lane (the *leader*, the lane furthest on), both park at the next tick
boundary and the leader absorbs it (``Lane.absorb``): from then on the market is applied once.
No checkpoint, or one this version cannot read: the partition is read from its first record.

Checkpoints. Every ``checkpoint_ms`` a lane parks at a tick boundary; everything it sent is
flushed to the broker, each partition's checkpoint is handed to the store (``CheckpointStore``:
on Kafka a forked child encodes and writes it while the lane goes on), and only once they are
stored are the partitions' offsets committed to the group. A crash anywhere re-reads from the last
stored checkpoint and re-sends outputs with the same deterministic ids.

Nothing silent. A lane that holds records (read, or on the broker) and has applied nothing for
``stall_ms`` logs an ERROR naming its partitions and the input it waits for, its partitions'
``backstop_partition_stalled_seconds`` gauge rises, and ``ready`` turns false (``/readyz``).

Wall-clock time (``clock``, passed in) enters in three places only: an input silent for
``idle_ms`` *and* read to its end stops holding the others back (``Lane.idle``) until the
broker holds more of it than was read; checkpoints are
spaced by it; stalls are measured with it. None changes the order the core sees.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter

from pipelines.engine.engine import EngineOutput, EngineParams
from pipelines.engine.snapshot import Checkpoint, SnapshotFormatError, decode_checkpoint, encode_checkpoint
from pipelines.engine.wire import action_key, action_record, breach_key, breach_record
from pipelines.events.codec import default_codec
from pipelines.events.deadletter import dead_letter
from pipelines.events.validation import Validator
from pipelines.ops.metrics import Metrics
from pipelines.policy.signing import SigningKey
from pipelines.topics import ACCOUNT_PARTITIONS
from pipelines.worker.intake import Refused, admit
from pipelines.worker.lane import LATE, Lane, account_inputs
from pipelines.worker.ports import TP, Clock, Ports, Record, Source

log = logging.getLogger(__name__)

OUTPUT_TOPICS = {"Breach": "backstop.breaches", "Action": "backstop.actions", "ExposureSnapshot": "backstop.exposures"}
DEAD_LETTERS = "backstop.deadletters"


@dataclasses.dataclass(frozen=True)
class WorkerConfig:
    partitions: int = ACCOUNT_PARTITIONS
    batch_max: int = 5_000  # records read per lane per step
    poll_timeout_s: float = 0.05  # the longest a step waits for records
    idle_ms: int = 200
    checkpoint_ms: int = 10_000
    stall_ms: int = 10_000
    max_event_age_ms: int = 24 * 3600 * 1000
    engine: EngineParams = EngineParams()


def tp_of(name: str) -> TP:
    topic, partition = name.rsplit("/", 1)
    return topic, int(partition)


@dataclasses.dataclass
class Track:
    """A lane with its reader and the wall-clock facts the shell keeps about it."""

    lane: Lane
    source: Source
    started: float
    heard: dict[str, float] = dataclasses.field(default_factory=dict)  # input -> when a record last came
    purpose: str | None = None  # why the lane is cut: CHECKPOINT or MERGE
    checkpointed: float = 0.0
    progress: tuple[int, int] = (0, 0)  # (engine events applied, records held) at the last watch
    progressed: float = 0.0  # when it last applied something, or last had nothing waiting
    stall_reported: bool = False


CHECKPOINT, MERGE = "checkpoint", "merge"
MERGE_WAIT_S = 1.0  # the longest two lanes wait, parked, for each other
MERGE_RETRY_S = 2.0


class Worker:
    def __init__(self, ports: Ports, key: SigningKey, config: WorkerConfig | None = None, clock: Clock = time.monotonic,
                 metrics: Metrics | None = None) -> None:
        self.ports, self.key = ports, key
        self.config = config or WorkerConfig()
        self.clock = clock
        self.metrics = metrics or Metrics("worker")
        self.codec = default_codec()
        self.validator = Validator(max_past_ms=self.config.max_event_age_ms)
        self.tracks: list[Track] = []
        self._merging: tuple[Track, Track, int, float] | None = None  # (leader, follower, boundary, since)
        self._merge_after = 0.0  # no merge is tried before this (after one that did not complete)
        self._idled_at = 0.0
        self._watched_at = 0.0
        self._stalled: dict[int, float] = {}  # partition -> seconds stalled, as last reported
        self._ready = False
        self._committing: dict[TP, int] | None = None  # offsets the checkpoint in flight covers

    # ------------------------------------------------------------------ the loop

    def held(self) -> set[int]:
        return {p for track in self.tracks for p in track.lane.held.held}

    def ready(self) -> bool:
        """Holding partitions, none of them stalled (as of the last look, ``_watch``). Safe to
        call from another thread (the HTTP endpoint's): it reads one flag."""
        return self._ready

    def step(self) -> None:
        began = self.clock()
        assigned, revoked = self.ports.membership.poll()
        if revoked:
            self._give_up(revoked)
        if assigned:
            self._take_over(assigned - self.held())
        now = self.clock()
        now_ms = int(time.time() * 1000)
        timeout = self.config.poll_timeout_s / max(1, len(self.tracks))
        for track in list(self.tracks):
            if track.lane.parked:
                continue  # nothing it reads can be applied before it goes on: its queue would only grow
            records = track.source.poll(self.config.batch_max, timeout)
            if records:
                timeout = 0.0
                self._read(track, records, now, now_ms)
        for track in self.tracks:
            for name in track.lane.sequencer.idle_inputs():
                if track.source.lag(tp_of(name)):  # records on the broker it has not read: not idle
                    track.lane.wake(name)
        for track in list(self.tracks):
            self._advance(track, now)
        if now - self._idled_at >= self.config.idle_ms / 4000:
            self._idled_at = now
            for track in self.tracks:
                self._idle(track, now)
        self._merge(now)
        self._stored()
        if now - self._watched_at >= 1.0:
            self._watched_at = now
            self._watch(now)
        self.metrics.step(self.clock() - began)

    def close(self, wait_s: float = 30.0) -> None:
        """Stop: the checkpoint in flight, if any, is waited for (``wait_s``) and committed."""
        deadline = self.clock() + wait_s
        while self._committing is not None and self.clock() < deadline:
            self._stored()
            time.sleep(0.01)
        for track in self.tracks:
            track.source.close()
        self.tracks.clear()

    # ------------------------------------------------------------------ reading

    def _read(self, track: Track, records: list[Record], now: float, now_ms: int) -> None:
        lane, heard = track.lane, track.heard
        counts: Counter[str] = Counter()
        for r in records:
            name = f"{r.topic}/{r.partition}"
            if not lane.reads(name):
                continue  # an input given up while its records were in flight
            counts[r.topic] += 1
            # event times are judged against the record's own timestamp, never the wall clock: a record
            # read again after a takeover, days later, must be admitted or refused as it was the first time
            admitted = admit(self.codec, self.validator, r.value, r.topic, r.partition, r.offset, r.timestamp_ms)
            if isinstance(admitted, Refused):
                lane.skip(name, r.offset)
                self._dead_letter(lane, r, admitted.reason, admitted.detail, now_ms)
                continue
            heard[name] = now
            if lane.push(admitted) == LATE:
                self._dead_letter(lane, r, "late_event", f"event time {admitted.value['event_time_ms']} is more than "
                                  f"{lane.sequencer.allowed_lateness_ms} ms older than its input's newest", now_ms)
        for topic, count in counts.items():
            self.metrics.consumed(topic, count)

    def _dead_letter(self, lane: Lane, r: Record, reason: str, detail: str, now_ms: int) -> None:
        """Once per bad record: an account record by the lane holding its partition (the only
        one reading it), a market record by the lane holding account partition
        ``partition mod partitions`` (every lane reads it)."""
        if r.partition % self.config.partitions not in lane.held.held:
            return
        self.metrics.dead_letter(reason)
        record = dead_letter(reason=reason, detail=detail, topic=r.topic, partition=r.partition, offset=r.offset,
                             value=r.value, key=r.key, consumer="worker", event_time_ms=now_ms)
        self.ports.sink.send(DEAD_LETTERS, r.topic.encode(), self.codec.encode("DeadLetter", record))

    def _idle(self, track: Track, now: float) -> None:
        """Inputs silent for ``idle_ms`` and read to their end stop holding the others back."""
        limit = self.config.idle_ms / 1000
        for name in track.lane.inputs():
            if now - track.heard.get(name, track.started) > limit and track.source.settled(tp_of(name)):
                track.lane.idle(name)

    # ------------------------------------------------------------------ applying

    def _advance(self, track: Track, now: float) -> None:
        lane = track.lane
        before = lane.applied
        self._emit(lane.release())
        if lane.applied > before:
            self.metrics.applied(lane.applied - before)
        if (track.purpose is None and self._committing is None and lane.held.held
                and now - track.checkpointed >= self.config.checkpoint_ms / 1000):
            if lane.frontier > -(2**63):
                lane.cut_at(lane.next_boundary())
                track.purpose = CHECKPOINT
        if lane.cut is not None and not lane.parked:
            closed = lane.park()
            if closed is not None:
                self._emit(closed)
        if track.purpose == CHECKPOINT and lane.parked and self._committing is None:
            self._checkpoint(track, now)  # (another lane's in flight: this one waits, parked, for the next step)

    def _emit(self, output: EngineOutput) -> None:
        if not (output.breaches or output.actions or output.exposures):
            return
        sink, encode = self.ports.sink, self.codec.encode
        self.metrics.record_outputs(output.breaches, output.actions, int(time.time() * 1000))
        for breach in output.breaches:
            sink.send(OUTPUT_TOPICS["Breach"], breach_key(breach).encode(), encode("Breach", breach_record(breach)))
        for action in output.actions:
            sink.send(OUTPUT_TOPICS["Action"], action_key(action).encode(), encode("Action", action_record(action)))
        for exposure in output.exposures:
            sink.send(OUTPUT_TOPICS["ExposureSnapshot"], exposure["account"].encode(),
                      encode("ExposureSnapshot", exposure))

    def _checkpoint(self, track: Track, now: float) -> None:
        """Outputs on the broker, then the checkpoints stored (``CheckpointStore.begin`` takes the
        state as it is now; the lane goes on at once), then — once stored — the offsets committed."""
        lane = track.lane
        self.ports.sink.flush()
        self._committing = {tp_of(name): lane.released[name].offset + 1 for p in lane.held.held
                            for name in account_inputs(p) if lane.released[name].offset >= 0}
        self.ports.store.begin(lambda: [(c.partition.partition, encode_checkpoint(c)) for c in lane.checkpoints()])
        lane.resume()
        track.purpose, track.checkpointed = None, now

    def _stored(self) -> None:
        """Commit what the checkpoint in flight covers, once it is stored."""
        if self._committing is None:
            return
        stored = self.ports.store.finished()
        if stored is None:
            return
        if stored:
            held = self.held()  # a partition revoked meanwhile is its new owner's to commit
            self.ports.membership.commit({tp: o for tp, o in self._committing.items() if tp[1] in held})
        else:
            log.error("a checkpoint was not stored: its partitions' offsets stay where they were; the next one retries")
        self._committing = None

    # ------------------------------------------------------------------ partitions moving

    def _take_over(self, partitions: set[int]) -> None:
        """A lane per checkpointed market state among ``partitions`` and one for those read from
        their first record; each catches up alone until the leader absorbs it."""
        groups: dict[tuple, list] = {}
        fresh: list[int] = []
        for p in sorted(partitions):
            checkpoint = self._load(p)
            if checkpoint is None:
                fresh.append(p)
                continue
            market = checkpoint.market
            groups.setdefault((market.boundary_ms, tuple(sorted(market.inputs.items()))), []).append(checkpoint)
        params = self.config.engine
        lanes = [Lane.restore(self.key, params, self.config.partitions, group) for group in groups.values()]
        if fresh:
            lanes.append(Lane.fresh(self.key, params, self.config.partitions, fresh))
        now = self.clock()
        for lane in lanes:
            source = self.ports.open_source()
            source.assign({tp_of(name): lane.next_offset(name) for name in lane.inputs()})
            self.tracks.append(Track(lane, source, started=now, checkpointed=now, progressed=now))
            log.info("took over partition(s) %s from %s", sorted(lane.held.held),
                     f"their checkpoint at {lane.frontier + 1}" if lane.frontier > -(2**63) else "their first records")

    def _load(self, partition: int) -> Checkpoint | None:
        try:
            data = self.ports.store.load(partition)
        except Exception as exc:  # noqa: BLE001 - a store that cannot be read costs the checkpoint, not the worker
            log.error("partition %d: its checkpoint could not be read (%s): reading it from its first records",
                      partition, exc)
            return None
        if data is None:
            log.info("partition %d has no checkpoint: reading it from its first records", partition)
            return None
        try:
            checkpoint = decode_checkpoint(data)
        except SnapshotFormatError as exc:
            log.error("partition %d: %s", partition, exc)
            return None
        found = checkpoint.partition
        if (found.partition, found.partitions) != (partition, self.config.partitions):
            log.error("partition %d: its stored checkpoint is of partition %d of %d: reading it from its first records",
                      partition, found.partition, found.partitions)
            return None
        return checkpoint

    def _give_up(self, partitions: set[int]) -> None:
        for track in list(self.tracks):
            lost = partitions & track.lane.held.held
            for p in sorted(lost):
                track.lane.give_up(p)
                track.source.unassign([tp_of(name) for name in account_inputs(p)])
                self._stalled.pop(p, None)
                self.metrics.partition_stalled(p, None)
            if lost and not track.lane.held.held:
                self._drop(track)
        self._ready = self._ready and bool(self.tracks)

    def _drop(self, track: Track) -> None:
        track.source.close()
        self.tracks.remove(track)
        if self._merging is not None and track in self._merging[:2]:
            self._abort_merge(self.clock())

    def _merge(self, now: float) -> None:
        """One lane catching up at a time: once it is within a tick of the leader (the lane
        furthest on), both are cut at the next tick boundary after both; when both have parked
        there the leader absorbs it. If they have not both parked within ``MERGE_WAIT_S`` (one
        waits on an input that has not spoken), or their market records differ, both go on and
        the pair tries again ``MERGE_RETRY_S`` later: a parked leader holds every event behind it."""
        if self._merging is None:
            if len(self.tracks) < 2 or now < self._merge_after:
                return
            leader = max(self.tracks, key=lambda t: (t.lane.frontier, len(t.lane.held.held)))
            slack = self.config.engine.revaluation_interval_ms
            for track in self.tracks:
                if (track is not leader and track.purpose is None and leader.purpose is None
                        and track.lane.frontier >= leader.lane.frontier - slack):
                    boundary = track.lane.next_boundary(max(leader.lane.frontier, track.lane.frontier))
                    for lane_track in (leader, track):
                        lane_track.lane.cut_at(boundary)
                        lane_track.purpose = MERGE
                    self._merging = (leader, track, boundary, now)
                    return
            return
        leader, follower, boundary, began = self._merging
        if not (leader.lane.parked and follower.lane.parked):
            if now - began > MERGE_WAIT_S:
                self._abort_merge(now)
            return
        if leader.lane.market_released() != follower.lane.market_released():
            log.warning("partition(s) %s not merged at %d: the lanes applied different market records (an input "
                        "idled in one of them spoke late); trying again later", sorted(follower.lane.held.held),
                        boundary)
            self._abort_merge(now)
            return
        moved = sorted(follower.lane.held.held)
        leader.lane.absorb(follower.lane)
        leader.source.assign({tp_of(name): leader.lane.next_offset(name) for p in moved for name in account_inputs(p)})
        for p in moved:
            for name in account_inputs(p):
                leader.heard[name] = follower.heard.get(name, now)
        self._merging = None
        leader.lane.resume()
        leader.purpose = None
        self._drop(follower)
        log.info("partition(s) %s caught up at %d: one engine for %s", moved, boundary, sorted(leader.lane.held.held))

    def _abort_merge(self, now: float) -> None:
        assert self._merging is not None
        for track in self._merging[:2]:
            if track.purpose == MERGE:
                track.lane.resume()
                track.purpose = None
        self._merging = None
        self._merge_after = now + MERGE_RETRY_S

    # ------------------------------------------------------------------ watching

    def _watch(self, now: float) -> None:
        """Stalls and lags: a lane with records waiting (held, or on the broker) that applied
        nothing since the last look is stalled since then."""
        lags: dict[TP, int] = {}
        for track in self.tracks:
            lane = track.lane
            waiting = 0
            for name in lane.inputs():
                tp = tp_of(name)
                lag = track.source.lag(tp)
                lags[tp] = min(lag, lags.get(tp, lag))
                waiting += lag
            progress = (lane.engine.events, lane.held_back())
            if progress[0] != track.progress[0] or not (waiting or progress[1]):
                track.progressed = now
            track.progress = progress
            stalled = now - track.progressed
            for p in lane.held.held:
                self._stalled[p] = stalled
                self.metrics.partition_stalled(p, stalled)
            if stalled * 1000 > self.config.stall_ms:
                if not track.stall_reported:
                    track.stall_reported = True
                    bound = lane.sequencer.bound()
                    log.error("partition(s) %s have applied nothing for %.0f s while %d records wait (%d held, %d on "
                              "the broker); waiting for %s", sorted(lane.held.held), stalled, waiting + progress[1],
                              progress[1], waiting, "no input (all idle)" if bound is None else
                              f"{bound[0]} (its newest event time {bound[1]})")
            elif track.stall_reported:
                track.stall_reported = False
                log.warning("partition(s) %s move again", sorted(lane.held.held))
        self.metrics.set_lags(lags)
        self._ready = bool(self.tracks) and not any(s * 1000 > self.config.stall_ms for s in self._stalled.values())

