"""One partition's worth of the cluster in-process: a ``Sequencer`` in front of an ``Engine``.

``run_shards`` — the in-process oracle the stream workers are held to — keeps one ``Shard`` per
account partition and pushes the messages a worker reads — named by the same inputs, referenced
by the same source coordinates — so both produce the same breaches and actions.

Inputs of shard *p*: the account topics' partition *p* (``positions/p``, ``collateral/p``) and
every market source topic-partition (market records reach every shard). A redelivered message
(offset at or below the last one taken from its input) is dropped.
"""

from __future__ import annotations

import contextlib
import gc
import operator
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

from pipelines.detect.sequencer import Sequencer
from pipelines.engine.engine import Engine, EngineOutput, EngineParams
from pipelines.engine.shards import ACCOUNT_RECORDS, MarketOwner, keep_for_shard, partition_for
from pipelines.policy.signing import SigningKey
from pipelines.topics import CATALOGUE

MARKET_TOPICS = tuple(spec for spec in CATALOGUE if spec.name == "backstop.instruments" or
                      spec.name.startswith("backstop.market."))
ACCOUNT_TOPICS = ("backstop.positions", "backstop.collateral")  # read by each shard directly, partition p
_RECORD_VALUE_REF = operator.attrgetter("record", "value", "ref")  # a Message as Engine.on_events takes it


class Message(NamedTuple):
    """A decoded input message as a shard sees it."""

    input: str  # "backstop.positions/3", or the market source "backstop.market.index/0"
    offset: int  # position within that input (source offset for market records)
    ref: str  # "topic:partition:offset" of the original event, for breach triggers
    record: str
    value: Mapping[str, Any]


def shard_inputs(partition: int) -> list[str]:
    """Every input shard ``partition`` waits for, known up front: an input that has not spoken
    yet must hold the others back, or its first events would be placed after later ones."""
    return ([f"{topic}/{partition}" for topic in ACCOUNT_TOPICS]
            + [f"{spec.name}/{i}" for spec in MARKET_TOPICS for i in range(spec.partitions)])


class Shard:
    def __init__(self, partition: int, partitions: int, key: SigningKey, params: EngineParams | None = None) -> None:
        self.partition = partition
        self.partitions = partitions
        self.owner = MarketOwner(partition, partitions)
        self.engine = Engine(key, params, self.owner if partitions > 1 else None)
        self.sequencer = Sequencer(self.engine.params.detectors.allowed_lateness_ms)
        for name in shard_inputs(partition):
            self.sequencer.add_input(name)
        self.inputs = shard_inputs(partition)
        self.offsets: dict[str, int] = {}
        self.redelivered = 0

    def push(self, message: Message) -> bool:
        """Queue a message; False if it was already taken (a redelivery) or is late."""
        if message.offset <= self.offsets.get(message.input, -1):
            self.redelivered += 1
            return False
        self.offsets[message.input] = message.offset
        return self.sequencer.push(message.input, message.value["event_time_ms"], message)

    def advance(self, limit: int | None = None) -> EngineOutput:
        """Run every message the sequencer can release through the engine (at most ``limit``)."""
        ready = self.sequencer.pop_ready(limit)
        if not ready:
            return EngineOutput()
        return keep_for_shard(self.owner, self.engine.on_events(map(_RECORD_VALUE_REF, ready)))

    def idle_all(self) -> None:
        """Every input has gone quiet: stop waiting for any of them, so ``advance`` releases
        everything queued. Revaluation still waits for the next event-time tick (the engine's own
        schedule), so a pause in the stream never adds a revaluation that an uninterrupted run
        would not have made."""
        self.sequencer.idle_all()  # also inputs first seen in messages, beyond ``self.inputs``

    def drain(self) -> EngineOutput:
        """``idle_all``, then everything queued through the engine (a replay's end)."""
        self.idle_all()
        return self.advance()


def shard_of(record: str, value: Mapping[str, Any], partitions: int) -> int | None:
    """The shard an account record belongs to; None for market records (they go to all)."""
    if record not in ACCOUNT_RECORDS:
        return None
    return partition_for(value["account"], partitions) if partitions > 1 else 0  # one shard: no hash


def run_shards(messages: Iterable[tuple[int | None, Message]], partitions: int, key: SigningKey,
               params: EngineParams | None = None) -> EngineOutput:
    """The cluster in-process: ``(shard or None for all, message)`` pairs in any order that keeps
    each input's own order; every shard is drained at the end. With every message at hand, each
    shard first declares every input it will hear from, so no input's early events can be
    overtaken by another's — whatever order the pairs come in.

    Outputs do not depend on how accounts are grouped into shards (an account's outputs depend
    on the market and that account alone; market-wide outputs are reported by one owner), so
    ``partitions=1`` — one shard holding everything — gives the cluster's outputs at a twelfth
    of the market work; ``tests/engine/test_shards.py`` holds it to that. Python's cyclic garbage
    collector is paused for the run, and left as it was found (``cyclic_gc_paused``)."""
    with cyclic_gc_paused():
        return _run_shards(list(messages), partitions, key, params)


@contextlib.contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector (reference counting still frees nearly everything:
    the engine makes almost no cycles), for a run that holds a whole feed in memory: every full
    pass of the collector walks all of it, and the passes grow with the feed."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _run_shards(messages: list[tuple[int | None, Message]], partitions: int, key: SigningKey,
                params: EngineParams | None) -> EngineOutput:
    """Each message pushed to its shards, and each shard advanced after each push, so the shards'
    outputs interleave as a cluster's would; one shard takes every message first and is drained
    once: its outputs are the engine's in sequencer order, wherever the releases fall
    (``Engine.on_events``), and one run of everything costs the least."""
    if partitions == 1:
        shard = Shard(0, 1, key, params)
        push = shard.push
        for _, message in messages:
            push(message)
        return shard.drain()
    shards = [Shard(p, partitions, key, params) for p in range(partitions)]
    for target, message in messages:
        for shard in (shards if target is None else (shards[target],)):
            shard.sequencer.add_input(message.input)
    out = EngineOutput()
    for target, message in messages:
        for shard in (shards if target is None else (shards[target],)):
            shard.push(message)
            out.extend(shard.advance())
    for shard in shards:
        out.extend(shard.drain())
    return out
