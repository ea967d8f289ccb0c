"""In-process replay: a recording through the same core with no broker.

``load(path)`` reads a replay file and decodes every value through the real codec;
``replay(path)`` takes the records the worker's intake would take (``valid``: the others are the
worker's dead letters, counted by reason) through the in-process cluster (``run_shards``: a ``Sequencer`` +
``Engine`` per shard, market records to every shard, refs ``topic:partition:offset`` exactly as
the stream workers name them), so its breaches and actions are the ones the Kafka path produces
from the same file. One shard by default: outputs do not depend on the grouping, and the
market work is done once instead of once per partition; that shard's engine takes the feed in
its sequencer's order made in one pass (``sequenced``). ``replay_dicts`` skips decoding
(already-decoded events) for benchmarks and backtests; the closed loop lives in
``pipelines.backtest.simulate``.

``replay_with_venue(path)`` runs a scenario recording as ``backstop demo`` runs the scenario: the
closed loop through the scenario's simulated venue (fills fed back as position and collateral
updates), with the engine parameters of the demo and the delta-hedged accounts the recording's
header names. Its breaches and actions are the demo's, id for id.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pipelines.detect.sequencer import NEVER_MS, input_rank
from pipelines.engine.engine import Engine, EngineOutput, EngineParams
from pipelines.engine.shard import Message, cyclic_gc_paused, run_shards, shard_of
from pipelines.errors import UserError
from pipelines.events.codec import Codec, default_codec
from pipelines.events.validation import Validator
from pipelines.policy.signing import SigningKey
from pipelines.replay.reading import recorded_scenario, replay_records
from pipelines.topics import ACCOUNT_PARTITIONS

DEFAULT_KEY = SigningKey("replay", b"backstop-replay-signing-key")
# the intake's checks of values; event times are not judged (a recording is replayed long after)
RECORDED_VALUES = Validator(max_past_ms=2**62, max_future_ms=2**62)
Row = tuple[str, int, int, str, dict[str, Any]]


def load(path: str | Path, codec: Codec | None = None,
         prefix: str = "") -> Iterator[tuple[str, int, int, str, dict[str, Any]]]:
    """(topic without prefix, partition, offset, record, value) of every message, in file order; a
    file that is missing or not a replay file is a ``UserError``."""
    codec = codec or default_codec()
    for r in replay_records(path):
        topic = r["topic"][len(prefix):] if prefix and r["topic"].startswith(prefix) else r["topic"]
        decoded = codec.decode(r["value"])
        yield topic, r["partition"], r["offset"], decoded.record, decoded.value


def valid(rows: Iterable[Row], refused: Counter[str]) -> Iterator[Row]:
    """``rows`` the worker's intake would take, in order (a NaN, zero or negative price, a
    malformed name...: ``Validator``); each other one counted in ``refused`` as
    ``"<record>: <reason>"``, as the worker would dead-letter it."""
    for row in rows:
        record, value = row[3], row[4]
        reason = RECORDED_VALUES.reason(record, value, value.get("event_time_ms", 0))
        if reason is None:
            yield row
        else:
            refused[f"{record}: {reason}"] += 1


def _input_names(topic: str, partition: int) -> tuple[str, str]:
    """A topic partition's input name, as the stream workers name it (``topic/partition``), and
    the prefix of its records' refs (``topic:partition:``, the offset follows)."""
    return f"{topic}/{partition}", f"{topic}:{partition}:"


def messages(rows: Iterable[tuple[str, int, int, str, dict[str, Any]]], partitions: int = ACCOUNT_PARTITIONS
             ) -> Iterator[tuple[int | None, Message]]:
    names: dict[tuple[str, int], tuple[str, str]] = {}  # per topic-partition: the input, the refs' prefix
    for topic, partition, offset, record, value in rows:
        target = shard_of(record, value, partitions)
        name = names.get((topic, partition))
        if name is None:
            name = names[(topic, partition)] = _input_names(topic, partition)
        yield target, Message(name[0], offset, name[1] + str(offset), record, value)


def sequenced(rows: Iterable[Row], allowed_lateness_ms: int) -> list[tuple[str, dict[str, Any], str]]:
    """``(record, value, ref)`` of ``rows`` in the order one shard hands them to its engine once
    every input has ended — ``Shard.push`` of each of ``messages(rows, 1)``, then ``drain`` — in
    one pass and without the messages: a row at or below its input's last offset (a redelivery)
    or late for its input (``Sequencer.push``) is left out; the others come sorted by sequence
    time (their input's newest event time so far), input rank, then place among their input's
    rows taken. ``tests/replay/test_sequenced.py`` holds it to the shard."""
    inputs: dict[tuple[str, int], _Input] = {}
    entries: list[tuple[int, str, int, tuple[str, dict[str, Any], str]]] = []
    for topic, partition, offset, record, value in rows:
        source = inputs.get((topic, partition))
        if source is None:
            name, ref_prefix = _input_names(topic, partition)
            source = inputs[(topic, partition)] = _Input(input_rank(name), ref_prefix)
        if offset <= source.offset:
            continue
        source.offset = offset
        t = value["event_time_ms"]
        newest = source.newest
        if t < newest - allowed_lateness_ms:
            continue
        if t > newest:
            newest = source.newest = t
        entries.append((newest, source.rank, source.taken, (record, value, source.refs + str(offset))))
        source.taken += 1
    entries.sort()  # (rank, place) is unique: no two entries tie
    return [entry[3] for entry in entries]


@dataclasses.dataclass(slots=True)
class _Input:
    """One input of ``sequenced``: as ``Shard`` and its ``Sequencer`` keep it."""

    rank: str  # input_rank of its name, "topic/partition"
    refs: str  # its refs' prefix, "topic:partition:"
    offset: int = -1  # the last offset taken
    newest: int = NEVER_MS  # the newest event time taken
    taken: int = 0  # rows taken into the order


def _one_shard(rows: Iterable[Row], key: SigningKey, params: EngineParams | None) -> EngineOutput:
    """``run_shards(messages(rows, 1), 1, key, params)``: one engine fed ``sequenced(rows)``, the
    cyclic collector paused for the run as there."""
    with cyclic_gc_paused():
        engine = Engine(key, params)
        return engine.on_events(sequenced(rows, engine.params.detectors.allowed_lateness_ms))


def replay(path: str | Path, *, key: SigningKey = DEFAULT_KEY, params: EngineParams | None = None,
           partitions: int = 1, codec: Codec | None = None, prefix: str = "",
           refused: Counter[str] | None = None) -> EngineOutput:
    """Breaches, actions and exposures of a recording, through the in-process cluster — by
    default one shard holding every account, which gives the outputs of any partitioning. The
    records the intake refuses are left out and counted in ``refused`` (``valid``)."""
    rows = valid(load(path, codec, prefix), Counter() if refused is None else refused)
    if partitions == 1:
        return _one_shard(rows, key, params)
    return run_shards(messages(rows, partitions), partitions, key, params)


def replay_with_venue(path: str | Path, codec: Codec | None = None) -> EngineOutput:
    """Breaches, actions and exposures of the demo's closed loop over a scenario recording's events
    (see the module docstring); a recording without a scenario header is a ``UserError``."""
    from pipelines.backtest.run import engine_params, simulate
    from pipelines.scenarios import library
    from pipelines.scenarios.generate import Generated

    header = recorded_scenario(path)
    if header is None:
        raise UserError(f"replay file {path}: not a scenario recording (backstop scenarios record), so there is no "
                        "venue to replay it against; replay it without --venue")
    events = [(topic, record, value) for topic, _, _, record, value in load(path, codec)]
    start_ms = events[0][2]["event_time_ms"] if events else 0
    generated = Generated(library.get(header["scenario"]), header["seed"], start_ms, events, accounts=[])
    params = dataclasses.replace(engine_params(generated), hedged_accounts=frozenset(header["hedged_accounts"]))
    out = EngineOutput()
    collect = {"breach": out.breaches.append, "action": out.actions.append, "exposure": out.exposures.append}
    simulate(generated, with_backstop=True, params=params, progress=False,
             on_output=lambda kind, value: collect[kind](value) if kind in collect else None)
    return out


def replay_dicts(rows: Iterable[tuple[str, int, int, str, dict[str, Any]]], *, key: SigningKey = DEFAULT_KEY,
                 params: EngineParams | None = None, partitions: int = 1) -> EngineOutput:
    if partitions == 1:
        return _one_shard(rows, key, params)
    return run_shards(messages(rows, partitions), partitions, key, params)


def fingerprint(output: EngineOutput) -> tuple[list[str], list[str]]:
    """Breach ids and action ids in output order: what the parity test compares."""
    return [b.breach_id for b in output.breaches], [a.action_id for a in output.actions]
