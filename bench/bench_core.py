"""The engine core against issue 21's targets, each figure beside its reference in the same run.

    .venv/bin/python bench/bench_core.py [--quick] [--only PART,...] [--jobs N] [--out F]

- ``per_tick``: the may-2021 scenario through one ``Engine``; engine CPU time over the replay
  divided by its revaluation ticks (the 250 ms event-time intervals holding a record that
  moves a price or an account), and the part of it spent in ``Engine._revalue``.
- ``replay``: every bundled scenario through ``replay_dicts``; its event-time span over the
  replay's wall time (x real time).
- ``backtest`` and ``sweep``: ``backstop backtest --scenario all`` (and with ``--sweep`` of 20
  trigger ratios) as a subprocess, wall time, with ``--jobs 1`` and ``--jobs <cores>``.
- ``margin``: ``revalue_book`` of 10,000 accounts x 20 positions (the venue feed's opening book)
  on a 21-move x 3-vol grid (63 scenarios).
- ``venue``: the venue-scale feed of ``bench/venue_feed.py`` through ``replay_dicts``, events/s.

The in-process figures run twice, ``EngineParams(compiled=False)`` (the numpy reference) and
``compiled=True``, and check both give the same breach and action ids; the compiled kernels
are compiled (``warm()``) before anything is timed. Each in-process figure is the best of
two runs (one with ``--quick``, and one for the venue feed). Backtest and sweep compare
``--jobs 1`` with ``--jobs <cores>`` when the CLI has ``--jobs`` (else the serial run alone).
What a build of the engine lacks is reported as missing, not measured. Writes
bench/results/core.json (stamped with the machine); with ``--only``, the parts not chosen keep
their figures there, and each part records the run (date, commit, kernels) that measured it.
Not a test: nothing here asserts a time; the report judges the targets.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import json
import os
import pkgutil
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO))  # run as a script: the repository root, for `bench.*`

import numpy as np  # noqa: E402

from bench import venue_feed  # noqa: E402
from bench.run import machine  # noqa: E402
from pipelines.detect.sequencer import Sequencer  # noqa: E402
from pipelines.engine.engine import Engine, EngineOutput, EngineParams  # noqa: E402
from pipelines.policy.signing import SigningKey  # noqa: E402
from pipelines.replay.inprocess import fingerprint, replay_dicts  # noqa: E402
from pipelines.risk.book import revalue_book  # noqa: E402
from pipelines.risk.margin import MarginConfig, MarginParams  # noqa: E402
from pipelines.scenarios import library  # noqa: E402
from pipelines.scenarios.generate import generate  # noqa: E402

PARTS = ("per_tick", "replay", "backtest", "sweep", "margin", "venue")
VARIANTS = (("reference", False), ("compiled", True))  # name, EngineParams.compiled
KEY = SigningKey("bench", b"bench-signing-key-000")
MOVES = {"IndexPrice", "VolatilityUpdate", "MarkPrice", "PositionUpdate", "CollateralUpdate"}  # depth moves no price
SWEEP_TRIGGERS = tuple(round(0.6 + 0.05 * k, 2) for k in range(20))
Row = venue_feed.Row


@dataclasses.dataclass(frozen=True)
class Sizes:
    repeat: int
    replay_repeat: int  # a replay's runs, both ways: a quarter second each compiled, and as noisy as any other
    scenarios: tuple[str, ...]  # replayed for x real time
    backtest: tuple[str, ...]  # --scenario arguments
    sweep_triggers: tuple[float, ...]
    margin_accounts: int
    venue: venue_feed.FeedSpec


FULL = Sizes(2, 5, tuple(library.names()), ("all",), SWEEP_TRIGGERS, 10_000, venue_feed.FeedSpec())
QUICK = Sizes(1, 1, ("may-2021", "aug-2024"), ("may-2021", "aug-2024"), SWEEP_TRIGGERS[8:10], 1_000,
              venue_feed.FeedSpec(accounts=1_000, seconds=1.0))


# ---------------------------------------------------------------------------- helpers

def kernel_modules() -> list[str]:
    """The compiled kernels this build of the risk core has (``pipelines.risk.kernels.*``)."""
    package = importlib.import_module("pipelines.risk.kernels")
    return sorted(m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_"))


def warm_kernels() -> float:
    """Compile every kernel ahead of the timings (each module's ``warm()``); the seconds it took."""
    started = time.perf_counter()
    for name in kernel_modules():
        warm = getattr(importlib.import_module(f"pipelines.risk.kernels.{name}"), "warm", None)
        if warm is not None:
            warm()
    return time.perf_counter() - started


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    """Best wall seconds, best CPU seconds (this process) and the last result of ``repeat`` calls."""
    wall = cpu = float("inf")
    result = None
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        result = fn()
        cpu = min(cpu, time.process_time() - c)
        wall = min(wall, time.perf_counter() - w)
    return wall, cpu, result


def scenario_rows(name: str) -> list[Row]:
    return list(venue_feed.rows(generate(library.get(name)).events))


def span_s(rows: list[Row]) -> float:
    times = [value["event_time_ms"] for *_, value in rows]
    return (max(times) - min(times)) / 1000


def revaluation_ticks(rows: list[Row], interval_ms: int) -> int:
    """The event-time intervals the engine revalues: each holding a record that moves a price or an account."""
    return len({value["event_time_ms"] // interval_ms for _, _, _, record, value in rows if record in MOVES})


def same(outputs: list[Any]) -> bool:
    """Whether every variant gave the reference's breach and action ids, in order."""
    return all(fingerprint(o) == fingerprint(outputs[0]) for o in outputs[1:])


# ---------------------------------------------------------------------------- the targets

def replay_engine(ordered: list[tuple[str, dict[str, Any]]], params: EngineParams
                  ) -> tuple[float, float, float, EngineOutput]:
    """``ordered`` through one engine: wall and CPU seconds, the CPU seconds of ``Engine._revalue``, the outputs."""
    engine = Engine(KEY, params)
    inner = engine._revalue
    revalue = 0.0

    def timed_revalue(time_ms: int) -> EngineOutput:
        nonlocal revalue
        started = time.process_time()
        try:
            return inner(time_ms)
        finally:
            revalue += time.process_time() - started

    engine._revalue = timed_revalue  # type: ignore[method-assign]
    output = EngineOutput()
    wall, cpu = time.perf_counter(), time.process_time()
    for i, (record, value) in enumerate(ordered):
        output.extend(engine.on_event(record, value, str(i)))
    output.extend(engine.flush())
    return time.perf_counter() - wall, time.process_time() - cpu, revalue, output


def per_tick(sizes: Sizes) -> dict[str, Any]:
    rows = scenario_rows("may-2021")
    sequencer = Sequencer(0)
    for topic, partition, _, record, value in rows:
        sequencer.push(f"{topic}/{partition}", value["event_time_ms"], (record, value))
    for name in {f"{r[0]}/{r[1]}" for r in rows}:
        sequencer.close(name)
    ordered = sequencer.pop_ready()
    ticks = revaluation_ticks(rows, EngineParams().revaluation_interval_ms)
    out: dict[str, Any] = {"scenario": "may-2021", "events": len(ordered), "ticks": ticks}
    outputs = []
    for variant, compiled in VARIANTS:
        runs = [replay_engine(ordered, EngineParams(compiled=compiled)) for _ in range(sizes.repeat)]
        wall, cpu, revalue, output = min(runs, key=lambda r: r[1])  # the run with the least CPU
        outputs.append(output)
        out[variant] = {"ms_per_tick": cpu / ticks * 1e3, "wall_ms_per_tick": wall / ticks * 1e3,
                        "revalue_ms_per_tick": revalue / ticks * 1e3, "events_per_s": len(ordered) / wall}
    out["same_outputs"] = same(outputs)
    return out


def replay(sizes: Sizes) -> dict[str, Any]:
    scenarios = []
    for name in sizes.scenarios:
        rows = scenario_rows(name)
        point: dict[str, Any] = {"scenario": name, "events": len(rows), "span_s": span_s(rows)}
        outputs = []
        for variant, compiled in VARIANTS:
            wall, cpu, result = timed(partial(replay_dicts, rows, params=EngineParams(compiled=compiled)),
                                      sizes.replay_repeat)
            outputs.append(result)
            point[variant] = {"seconds": wall, "cpu_seconds": cpu, "x_real_time": point["span_s"] / wall}
        point["same_outputs"] = same(outputs)
        scenarios.append(point)
        print(f"  replay {name}: x{point['reference']['x_real_time']:,.0f} reference, "
              f"x{point['compiled']['x_real_time']:,.0f} compiled real time", flush=True)
    return {"scenarios": scenarios, "repeat": sizes.replay_repeat}


def backstop_command() -> list[str]:
    script = Path(sys.executable).with_name("backstop")
    return [str(script)] if script.exists() else [sys.executable, "-m", "pipelines.cli"]


def has_jobs_flag() -> bool:
    proc = subprocess.run([*backstop_command(), "backtest", "--help"], capture_output=True, text=True, cwd=REPO)
    return "--jobs" in proc.stdout


def cli_runs(arguments: list[str], jobs: int, serial: bool) -> dict[str, Any]:
    """``backstop backtest <arguments>`` on ``jobs`` processes and (``serial``) on one, when
    ``--jobs`` exists (else its one way): wall time, and the serial run's CPU time (the
    subprocess's, from RUSAGE_CHILDREN; a pool's workers are the fork server's children, whose
    usage never reaches this process, so a parallel run has none). Each runs in a scratch
    folder (a sweep's plot goes there)."""
    with_jobs = has_jobs_flag()
    out: dict[str, Any] = {"command": "backstop backtest " + " ".join(arguments), "jobs_flag": with_jobs}
    runs = [("serial", ["--jobs", "1"] if with_jobs else [])] if serial or not with_jobs else []
    runs += [("parallel", ["--jobs", str(jobs)])] if with_jobs else []
    for name, extra in runs:
        command = [*backstop_command(), "backtest", *arguments, *extra, "--json", "--no-progress"]
        with tempfile.TemporaryDirectory() as scratch:
            started, children = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
            proc = subprocess.run(command, capture_output=True, text=True, cwd=scratch)
            seconds = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            out[name] = {"error": f"exit {proc.returncode}: {last}"}
        else:
            jobs_used = int(extra[1]) if extra else 1
            out[name] = {"seconds": seconds, "jobs": jobs_used}
            if jobs_used == 1:
                out[name]["cpu_seconds"] = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
        print(f"  {out['command']} {' '.join(extra)}: {out[name]}", flush=True)
    return out


def scenario_arguments(sizes: Sizes) -> list[str]:
    return [a for name in sizes.backtest for a in ("--scenario", name)]


def backtest(sizes: Sizes, jobs: int, serial: bool) -> dict[str, Any]:
    return cli_runs(scenario_arguments(sizes), jobs, serial)


def sweep(sizes: Sizes, jobs: int, serial: bool) -> dict[str, Any]:
    triggers = ",".join(f"{t:g}" for t in sizes.sweep_triggers)
    return {"points": len(sizes.sweep_triggers),
            **cli_runs(scenario_arguments(sizes) + ["--sweep", triggers, "--plot", "frontier.png"], jobs, serial)}


def margin(sizes: Sizes) -> dict[str, Any]:
    """``revalue_book`` of the venue feed's opening book, 20 positions per account, on a 21 x 3
    grid: with ``compiled=False`` and ``True`` when it takes the switch, else the one path it has."""
    spec = venue_feed.FeedSpec(accounts=sizes.margin_accounts, positions_per_account=20)
    chain = venue_feed.option_chain(spec.options)
    book, market = venue_feed.opening(spec, chain).book(), venue_feed.opening_market(chain)
    grid = MarginConfig(MarginParams(moves=tuple(np.round(np.linspace(-0.2, 0.2, 21), 4)), extended=()))
    switch = "compiled" in inspect.signature(revalue_book).parameters
    out: dict[str, Any] = {"accounts": spec.accounts, "positions": len(book.qty),
                           "instruments": len(book.instruments), "compiled_switch": switch}
    results = []
    for variant, compiled in VARIANTS if switch else VARIANTS[:1]:
        options = {"compiled": compiled} if switch else {}
        revalue_book(book, market, grid, **options)  # the kernels' first call, untimed
        wall, cpu, risk = timed(partial(revalue_book, book, market, grid, **options), sizes.repeat)
        out[variant] = {"ms": wall * 1e3, "cpu_ms": cpu * 1e3}
        out["scenarios"] = int(risk.grid.count.max())
        results.append(risk)
    out["same_margin"] = all(np.array_equal(r.maintenance, results[0].maintenance, equal_nan=True) for r in results)
    return out


def venue(sizes: Sizes) -> dict[str, Any]:
    spec = sizes.venue
    events = venue_feed.feed(spec)
    rows = list(venue_feed.rows(events))
    market = sum(1 for _, record, _ in events if record not in ("PositionUpdate", "CollateralUpdate"))
    out: dict[str, Any] = {"accounts": spec.accounts, "positions_per_account": spec.positions_per_account,
                           "options": spec.options, "seconds": spec.seconds, "events": len(rows),
                           "market_events_per_s_of_feed": market / spec.seconds}
    outputs = []
    for variant, compiled in VARIANTS:
        wall, cpu, result = timed(partial(replay_dicts, rows, params=EngineParams(compiled=compiled)), 1)
        outputs.append(result)
        out[variant] = {"seconds": wall, "events_per_s": len(rows) / wall, "cpu_events_per_s": len(rows) / cpu}
        print(f"  venue {variant}: {len(rows) / wall:,.0f} events/s", flush=True)
    out["same_outputs"] = same(outputs)
    out["breaches"] = dict(sorted(Counter(b.kind.value for b in outputs[0].breaches).items()))
    out["actions"] = dict(sorted(Counter(a.action_type.value for a in outputs[0].actions).items()))
    return out


def git_commit() -> str:
    """HEAD's short id, marked when the engine measured is not that commit's (uncommitted changes in pipelines/)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
    changed = subprocess.run(["git", "status", "--porcelain", "--", "pipelines"], capture_output=True, text=True,
                             cwd=REPO)
    return head.stdout.strip() + (" with uncommitted changes in pipelines/" if changed.stdout.strip() else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small loads, two scenarios: a smoke run")
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(PARTS)}")
    parser.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)),
                        help="processes of the parallel backtest and sweep (default: the usable cores)")
    parser.add_argument("--no-serial", action="store_true",
                        help="skip the --jobs 1 reference of backtest and sweep (the report says it is missing)")
    parser.add_argument("--out", help="results file (default bench/results/core.json; "
                                      "--quick writes none unless given)")
    args = parser.parse_args()
    chosen = PARTS if not args.only else tuple(p.strip() for p in args.only.split(","))
    unknown = set(chosen) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s): {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    sizes = QUICK if args.quick else FULL
    out = Path(args.out or BENCH / "results" / "core.json")
    # a part not chosen keeps its last figures (each part says which run measured it)
    result = {k: v for k, v in json.loads(out.read_text()).items() if k in PARTS} if args.only and out.exists() else {}
    run = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "commit": git_commit(), "quick": args.quick,
           "repeat": sizes.repeat, "kernels": kernel_modules(), "warm_seconds": warm_kernels()}
    parts: dict[str, Callable[[], dict[str, Any]]] = {
        "per_tick": lambda: per_tick(sizes), "replay": lambda: replay(sizes),
        "backtest": lambda: backtest(sizes, args.jobs, not args.no_serial),
        "sweep": lambda: sweep(sizes, args.jobs, not args.no_serial),
        "margin": lambda: margin(sizes), "venue": lambda: venue(sizes)}
    for part in chosen:
        started = time.perf_counter()
        print(f"{part} ...", flush=True)
        load = os.getloadavg()[0]
        result[part] = {"run": run, **parts[part](), "load": [load, os.getloadavg()[0]]}
        print(f"{part} done in {time.perf_counter() - started:.0f} s", flush=True)
    result = {part: result[part] for part in PARTS if part in result}
    print(json.dumps(result, indent=2))
    if args.quick and not args.out:
        print("--quick: results not written")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**result, "machine": machine()}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
