"""A lane: one engine, the sequencer in front of it, and the account partitions it holds.

A worker drives one lane for the partitions it has caught up and one more per partition it is
taking over while that one catches up (``worker.py``). Every lane reads every market input and
its own partitions' account inputs; the sequencer merges them in the one deterministic order
(``detect/sequencer.py``), so a lane applies, for its accounts, exactly what the in-process run
applies.

Cuts. A lane told to stop at the tick boundary ``K`` (``cut_at``) releases only events of
sequence time before ``K``; once nothing before ``K`` can still come (``released_before``) it
closes the tick (``Engine.close_tick``) and *parks* there. The first event after such a cut is at
or after ``K`` in event time (an event's sequence time exceeds its own time only when an earlier
event of its input was newer, and that one would come first), so closing the tick there is what
that event would have done: parking changes no output. A parked lane can be checkpointed, and two
lanes parked at the same ``K`` have applied the same market records, so one can take the other's
accounts over (``absorb``).

``released`` says, per input, the last record applied and the newest event time the input had
shown there: a lane restored from a checkpoint reads on from the next offset with that newest
time, so every later record takes the place it had in the uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pipelines.detect.sequencer import Sequencer
from pipelines.engine.engine import Engine, EngineOutput, EngineParams
from pipelines.engine.partitions import HeldPartitions, drop_partition, export_partition, import_partition
from pipelines.engine.shard import ACCOUNT_TOPICS, MARKET_TOPICS, Message
from pipelines.engine.snapshot import Checkpoint, MarketSnapshot, PartitionSnapshot, Released
from pipelines.policy.signing import SigningKey

MARKET_INPUTS: tuple[str, ...] = tuple(f"{spec.name}/{i}" for spec in MARKET_TOPICS for i in range(spec.partitions))
NOTHING = Released(-1, -(2**63))  # an input nothing was read from yet
TAKEN, AGAIN, LATE = "taken", "again", "late"


def account_inputs(partition: int) -> tuple[str, ...]:
    """The account inputs of an account partition: ``backstop.positions/p``, ``backstop.collateral/p``."""
    return tuple(f"{topic}/{partition}" for topic in ACCOUNT_TOPICS)


class Lane:
    def __init__(self, engine: Engine, partitions: int, held: Iterable[int],
                 released: dict[str, Released] | None = None) -> None:
        self.engine = engine
        self.held = HeldPartitions(partitions)
        self.sequencer = Sequencer(engine.params.detectors.allowed_lateness_ms)
        self.released: dict[str, Released] = {}
        self.taken: dict[str, int] = {}  # per input: the offset of the last record pushed
        self.frontier = -(2**63)  # the newest sequence time applied
        self.applied = 0  # records applied
        self.cut: int | None = None
        self.parked = False
        self._add_inputs(MARKET_INPUTS, released or {})
        for partition in held:
            self.held.add(partition)
            self._add_inputs(account_inputs(partition), released or {})

    @classmethod
    def fresh(cls, key: SigningKey, params: EngineParams, partitions: int, held: Iterable[int]) -> Lane:
        """A lane that starts from the first record of every input."""
        return cls(Engine(key, params), partitions, held)

    @classmethod
    def restore(cls, key: SigningKey, params: EngineParams, partitions: int,
                checkpoints: Sequence[Checkpoint]) -> Lane:
        """A lane holding the checkpoints' partitions, at their common boundary (no tick pending);
        the checkpoints hold the same market (taken together by one lane)."""
        market = checkpoints[0].market
        if any(c.market.boundary_ms != market.boundary_ms or c.market.inputs != market.inputs for c in checkpoints):
            raise ValueError("checkpoints of different market states cannot share a lane")
        accounts = [account for c in checkpoints for account in c.partition.accounts]
        released = dict(market.inputs)
        for c in checkpoints:
            released.update(c.partition.inputs)
        lane = cls(Engine.restore(key, params, market.market, accounts), partitions,
                   [c.partition.partition for c in checkpoints], released)
        lane.frontier = market.boundary_ms - 1
        return lane

    # ------------------------------------------------------------------ inputs

    def inputs(self) -> list[str]:
        """Every input the lane reads."""
        return [*MARKET_INPUTS, *(name for p in sorted(self.held.held) for name in account_inputs(p))]

    def reads(self, name: str) -> bool:
        return name in self.released

    def next_offset(self, name: str) -> int:
        """Where to read ``name`` from: after the last record taken."""
        return self.taken[name] + 1

    def _add_inputs(self, names: Iterable[str], released: dict[str, Released]) -> None:
        for name in names:
            mark = released.get(name, NOTHING)
            self.released[name] = mark
            self.taken[name] = mark.offset
            self.sequencer.add_input(name, mark.newest_ms)

    def push(self, message: Message) -> str:
        """Queue a record read from one of the lane's inputs: ``TAKEN``; ``AGAIN`` for one taken
        before (read again after a seek); ``LATE`` for one older than its input's newest by more
        than the allowed lateness (the sequencer refuses it, in every run alike)."""
        if message.offset <= self.taken[message.input]:
            return AGAIN
        self.taken[message.input] = message.offset
        return TAKEN if self.sequencer.push(message.input, message.value["event_time_ms"], message) else LATE

    def skip(self, name: str, offset: int) -> None:
        """A record of ``name`` was read and refused (dead-lettered): it is not to be taken again."""
        self.taken[name] = max(self.taken[name], offset)

    def idle(self, name: str) -> None:
        self.sequencer.idle(name)

    def wake(self, name: str) -> None:
        self.sequencer.wake(name)

    # ------------------------------------------------------------------ running

    def release(self, limit: int | None = None) -> EngineOutput:
        """Apply what the sequencer can release (before the cut, if one is set), at most ``limit``."""
        if self.parked:
            return EngineOutput()
        ready: list[Message] = self.sequencer.pop_ready(limit, self.cut)
        self.applied += len(ready)
        if not ready:
            return EngineOutput()
        last: dict[str, Message] = {}
        newest: dict[str, int] = {}
        for m in ready:
            t = m.value["event_time_ms"]
            if t > newest.get(m.input, t - 1):
                newest[m.input] = t
            last[m.input] = m
        released = self.released
        for name, m in last.items():
            mark = max(released[name].newest_ms, newest[name])
            released[name] = Released(m.offset, mark)
            if mark > self.frontier:
                self.frontier = mark
        return self.held.keep(self.engine.on_events((m.record, m.value, m.ref) for m in ready))

    def held_back(self) -> int:
        """Events read and not applied yet."""
        return len(self.sequencer)

    def cut_at(self, boundary: int) -> None:
        """Stop before the tick boundary ``boundary`` (a multiple of the revaluation interval
        after everything applied) and park there once nothing before it can still come."""
        interval = self.engine.params.revaluation_interval_ms
        if boundary % interval or boundary <= self.frontier:
            raise ValueError(f"cut at {boundary}: not a tick boundary after {self.frontier} (interval {interval})")
        self.cut, self.parked = boundary, False

    def next_boundary(self, after: int | None = None) -> int:
        """The first tick boundary after ``after`` (default: after everything applied)."""
        interval = self.engine.params.revaluation_interval_ms
        return (max(self.frontier, -1 if after is None else after) // interval + 1) * interval

    def park(self) -> EngineOutput | None:
        """Close the tick at the cut if the lane has reached it: the outputs of closing it, or
        None while events before the cut may still come."""
        if self.cut is None or self.parked or not self.sequencer.released_before(self.cut):
            return None
        self.parked = True
        return self.held.keep(self.engine.close_tick(self.cut))

    def resume(self) -> None:
        self.cut, self.parked = None, False

    # ------------------------------------------------------------------ state

    def checkpoints(self) -> list[Checkpoint]:
        """Each held partition with the market, at the boundary the lane is parked at."""
        if not self.parked or self.cut is None:
            raise ValueError("checkpoints are taken at a cut, parked")
        market = MarketSnapshot(self.cut, self.engine.market_state(),
                                {name: self.released[name] for name in MARKET_INPUTS})
        accounts: dict[int, list[dict]] = {p: [] for p in self.held.held}
        for state in self.engine.export_accounts(self.engine.held_accounts()):  # account order, as each partition's
            accounts[self.held.partition_of_account(state["account"])].append(state)
        return [Checkpoint(PartitionSnapshot(p, self.held.count, self.cut, accounts[p],
                                             {name: self.released[name] for name in account_inputs(p)}), market)
                for p in sorted(self.held.held)]

    def market_released(self) -> dict[str, Released]:
        return {name: self.released[name] for name in MARKET_INPUTS}

    def absorb(self, other: Lane) -> None:
        """Take over every partition of ``other``, both parked at the same cut having applied the
        same market records; ``other`` is then empty. Records ``other`` read past the cut and had
        not applied are for this lane to read again (``next_offset``)."""
        if not (self.parked and other.parked and self.cut == other.cut):
            raise ValueError(f"absorb: both lanes must be parked at one cut ({self.cut}, {other.cut})")
        if self.market_released() != other.market_released():
            raise ValueError("absorb: the lanes applied different market records")
        for partition in sorted(other.held.held):
            state = export_partition(other.engine, other.held, partition)
            names = account_inputs(partition)
            marks = {name: other.released[name] for name in names}
            other.give_up(partition)
            import_partition(self.engine, self.held, partition, state)
            self._add_inputs(names, marks)

    def give_up(self, partition: int) -> None:
        """Forget ``partition``: its accounts, its inputs and their records still queued."""
        names = account_inputs(partition)
        drop_partition(self.engine, self.held, partition)
        self.sequencer.drop(set(names))
        for name in names:
            self.released.pop(name, None)
            self.taken.pop(name, None)
