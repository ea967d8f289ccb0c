"""The account partitions one engine holds, and their state moved in and out of it.

A worker process runs one ``Engine`` for every account partition it holds: the market side is
applied once, and one revaluation pass per tick covers all of its accounts. The engine itself
knows accounts, not partitions; ``HeldPartitions`` says which accounts and which market subjects
are the engine's to report, and ``export_partition`` / ``drop_partition`` / ``import_partition``
move one partition's accounts between engines at a tick boundary (``Engine.close_tick``).

Invariant: an account's outputs depend on the market and that account alone, so an engine that
holds any set of partitions reports, for them, exactly what one engine holding every account
reports; market-wide outputs (index moves, halts, IV and mark breaches) are kept only by the
engine holding the partition their underlying is keyed to (``partition_for``), so a cluster
reports each once. ``tests/engine/test_partitions.py`` holds a cluster with moves and crashes
to that.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pipelines.engine.engine import Engine, EngineOutput
from pipelines.engine.shards import keep_reported, market_subject, partition_for


class HeldPartitions:
    """Which of ``count`` account partitions an engine holds; what it reports follows."""

    def __init__(self, count: int, held: Iterable[int] = ()) -> None:
        self.count = count
        self.held: set[int] = set(held)
        self._subject_partition: dict[str, int] = {}  # murmur2 in Python costs more than the lookup
        self._account_partition: dict[str, int] = {}

    def add(self, partition: int) -> None:
        self.held.add(partition)

    def remove(self, partition: int) -> None:
        self.held.discard(partition)

    def partition_of_account(self, account: str) -> int:
        found = self._account_partition.get(account)
        if found is None:
            found = self._account_partition[account] = partition_for(account, self.count)
        return found

    def reports(self, subject: str) -> bool:
        """Whether a market-wide output about ``subject`` (an underlying, ``BTC/pyth``, an
        instrument) is this engine's to report: it holds the underlying's partition."""
        found = self._subject_partition.get(subject)
        if found is None:
            found = self._subject_partition[subject] = partition_for(market_subject(subject), self.count)
        return found in self.held

    def keep(self, output: EngineOutput) -> EngineOutput:
        """``output`` without the market-wide outputs another engine reports."""
        return keep_reported(output, self.reports)


def partition_accounts(engine: Engine, held: HeldPartitions, partition: int) -> list[str]:
    """The accounts of ``partition`` the engine holds state for, in account order."""
    return sorted(a for a in engine.held_accounts() if held.partition_of_account(a) == partition)


def export_partition(engine: Engine, held: HeldPartitions, partition: int) -> list[dict[str, Any]]:
    """The state of one partition's accounts (``Engine.export_accounts``); at a tick boundary."""
    return engine.export_accounts(partition_accounts(engine, held, partition))


def drop_partition(engine: Engine, held: HeldPartitions, partition: int) -> None:
    """The engine gives ``partition`` up: its accounts are forgotten, its subjects no longer reported."""
    engine.drop_accounts(partition_accounts(engine, held, partition))
    held.remove(partition)


def import_partition(engine: Engine, held: HeldPartitions, partition: int, accounts: list[dict[str, Any]]) -> None:
    """The engine takes ``partition`` over with the state another engine exported at the same
    tick boundary of the same market."""
    strays = [s["account"] for s in accounts if held.partition_of_account(s["account"]) != partition]
    if strays:
        raise ValueError(f"accounts of another partition in partition {partition}'s state: {', '.join(strays[:5])}")
    engine.import_accounts(accounts)
    held.add(partition)
