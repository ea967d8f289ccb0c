"""In-process replay: a recording through the same core with no broker.

``load(path)`` reads a replay file and decodes every value through the real codec;
``replay(path)`` runs it through the in-process cluster (``run_shards``: a ``Sequencer`` +
``Engine`` per shard, market records to every shard, refs ``topic:partition:offset`` exactly as
the stream workers name them), so its breaches and actions are the ones the Kafka path produces
from the same file. One shard by default: outputs do not depend on the grouping, and the
market work is done once instead of once per partition. ``replay_dicts`` skips decoding (already-decoded events) for
benchmarks and backtests; the closed loop lives in ``pipelines.backtest.simulate``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pipelines.engine.engine import EngineOutput, EngineParams
from pipelines.engine.shard import Message, run_shards, shard_of
from pipelines.events.codec import Codec, default_codec
from pipelines.policy.signing import SigningKey
from pipelines.replay.reading import replay_records
from pipelines.topics import ACCOUNT_PARTITIONS

DEFAULT_KEY = SigningKey("replay", b"backstop-replay-signing-key")


def load(path: str | Path, codec: Codec | None = None, prefix: str = "") -> Iterator[tuple[str, int, int, str, dict[str, Any]]]:
    """(topic without prefix, partition, offset, record, value) of every message, in file order; a
    file that is missing or not a replay file is a ``UserError``."""
    codec = codec or default_codec()
    for r in replay_records(path):
        topic = r["topic"][len(prefix):] if prefix and r["topic"].startswith(prefix) else r["topic"]
        decoded = codec.decode(r["value"])
        yield topic, r["partition"], r["offset"], decoded.record, decoded.value


def messages(rows: Iterable[tuple[str, int, int, str, dict[str, Any]]], partitions: int = ACCOUNT_PARTITIONS
             ) -> Iterator[tuple[int | None, Message]]:
    names: dict[tuple[str, int], tuple[str, str]] = {}  # per topic-partition: the input, the refs' prefix
    for topic, partition, offset, record, value in rows:
        target = shard_of(record, value, partitions)
        name = names.get((topic, partition))
        if name is None:
            name = names[(topic, partition)] = (f"{topic}/{partition}", f"{topic}:{partition}:")
        yield target, Message(name[0], offset, name[1] + str(offset), record, value)


def replay(path: str | Path, *, key: SigningKey = DEFAULT_KEY, params: EngineParams | None = None,
           partitions: int = 1, codec: Codec | None = None, prefix: str = "") -> EngineOutput:
    """Breaches, actions and exposures of a recording, through the in-process cluster — by
    default one shard holding every account, which gives the outputs of any partitioning."""
    return run_shards(messages(load(path, codec, prefix), partitions), partitions, key, params)


def replay_dicts(rows: Iterable[tuple[str, int, int, str, dict[str, Any]]], *, key: SigningKey = DEFAULT_KEY,
                 params: EngineParams | None = None, partitions: int = 1) -> EngineOutput:
    return run_shards(messages(rows, partitions), partitions, key, params)


def fingerprint(output: EngineOutput) -> tuple[list[str], list[str]]:
    """Breach ids and action ids in output order: what the parity test compares."""
    return [b.breach_id for b in output.breaches], [a["action_id"] for a in output.actions]
