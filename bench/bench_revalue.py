"""``revalue_book`` as the engine calls it on the may-2021 book, CPU per call.

    .venv/bin/python bench/bench_revalue.py [--repeat N] [--scenario NAME]

Replays the scenario through ``replay_dicts`` (compiled path) once, recording the arguments of
every ``revalue_book`` call the engine makes (36 accounts, 7 instruments, 2 underlyings, 35
scenarios on may-2021, the touched accounts of each tick); then replays those calls, compiled
and numpy, and prints the best of ``--repeat`` rounds as CPU µs per call (``time.process_time``
over all the calls of a round). Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the repository root

from bench.bench_core import scenario_rows, warm_kernels
from pipelines.engine import engine as engine_module
from pipelines.engine.engine import EngineParams
from pipelines.replay.inprocess import replay_dicts
from pipelines.risk.book import revalue_book


def recorded_calls(scenario: str) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """The (args, kwargs) of every ``revalue_book`` call of one compiled replay of ``scenario``."""
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def recording(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        return revalue_book(*args, **kwargs)

    engine_module.revalue_book = recording
    try:
        replay_dicts(scenario_rows(scenario), params=EngineParams(compiled=True))
    finally:
        engine_module.revalue_book = revalue_book
    return calls


def cpu_per_call(calls: list[tuple[tuple[Any, ...], dict[str, Any]]], compiled: bool, repeat: int) -> float:
    """Best CPU seconds per call over ``repeat`` rounds of every recorded call."""
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        for args, kwargs in calls:
            revalue_book(*args, **{**kwargs, "compiled": compiled})
        best = min(best, (time.process_time() - started) / len(calls))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--scenario", default="may-2021")
    args = parser.parse_args()
    warm_kernels()
    calls = recorded_calls(args.scenario)
    book = calls[0][0][0]
    print(f"{args.scenario}: {len(calls)} calls, {len(book.accounts)} accounts, {len(book.instruments)} instruments")
    for name, compiled in (("compiled", True), ("numpy", False)):
        print(f"{name:>9}: {cpu_per_call(calls, compiled, args.repeat) * 1e6:8.1f} µs CPU per call "
              f"(best of {args.repeat})")


if __name__ == "__main__":
    main()
