"""Run scenarios with and without the backstop, and sweeps over thresholds.

Every simulation of a command is one ``Run``; ``run_all`` runs them in this process (``jobs=1``,
the reference) or over one pool of worker processes, and returns the same results in the same
order whatever ``jobs`` is: each run is deterministic and independent of the others.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import math
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.connection import Connection
from typing import Any, NamedTuple, TypeVar

from pipelines.backtest.simulate import Result, Simulation, VenueSetup, sequence_events
from pipelines.detect.detectors import DetectorParams
from pipelines.engine.engine import EngineParams
from pipelines.errors import UserError
from pipelines.execution.waterfall import LiquidityProvider
from pipelines.policy.ladder import LadderParams
from pipelines.risk import kernels
from pipelines.scenarios import library
from pipelines.scenarios.generate import Generated, generate
from pipelines.scenarios.library import Scenario

Item = TypeVar("Item")
Out = TypeVar("Out")


def venue_for(scenario: Scenario) -> VenueSetup:
    lps = tuple(LiquidityProvider(f"lp-{i + 1}", scenario.lp_capacity_usd / scenario.lp_count,
                                  scenario.lp_per_minute_usd / scenario.lp_count, 0.01 + 0.005 * i)
                for i in range(scenario.lp_count))
    return VenueSetup(scenario.insurance_fund_usd, lps, scenario.option_depth_share)


def engine_params(generated: Generated, **thresholds: float) -> EngineParams:
    """``threshold_params(**thresholds)`` with ``generated``'s hedged accounts."""
    return dataclasses.replace(threshold_params(**thresholds), hedged_accounts=generated.hedged)


def threshold_params(*, margin_trigger_ratio: float = 1.0, liquidation_ratio: float = 1.5, reduce_ratio: float = 0.9,
                     call_ratio: float = 0.8) -> EngineParams:
    """The engine at these thresholds, with clear and release levels derived from them."""
    return EngineParams(detectors=DetectorParams(margin_trigger_ratio=margin_trigger_ratio,
                                                 margin_clear_ratio=min(0.95, margin_trigger_ratio * 0.95),
                                                 liquidation_ratio=liquidation_ratio),
                        ladder=LadderParams(call_ratio=min(call_ratio, reduce_ratio), reduce_ratio=reduce_ratio,
                                            release_ratio=min(0.7, call_ratio * 0.875)))


class Progress:
    """A one-line progress bar on stderr (only when it is a terminal, or when forced)."""

    def __init__(self, label: str, total: int, enabled: bool | None = None) -> None:
        self.label, self.total = label, max(total, 1)
        self.enabled = sys.stderr.isatty() if enabled is None else enabled

    def __call__(self, done: int) -> None:
        if self.enabled:
            width = 30
            filled = int(width * min(done, self.total) / self.total)
            sys.stderr.write(f"\r{self.label:<28} [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total}")
            sys.stderr.flush()

    def close(self, complete: bool = True) -> None:
        """Ends the bar's line, drawn full first if ``complete`` (else as far as it got)."""
        if self.enabled:
            if complete:
                self(self.total)
            sys.stderr.write("\n")


def simulate(generated: Generated, *, with_backstop: bool, params: EngineParams | None = None,
             on_output: Callable[[str, Any], None] | None = None, progress: bool | None = None) -> Result:
    return simulate_events(generated, sequence_events(generated.events), with_backstop=with_backstop, params=params,
                           on_output=on_output, progress=progress)


def simulate_events(generated: Generated, events: Sequence[tuple[str, str, Mapping[str, Any], str]], *,
                    with_backstop: bool, params: EngineParams | None = None,
                    on_output: Callable[[str, Any], None] | None = None, progress: bool | None = None) -> Result:
    """``generated`` run on ``events``, its events in sequencer order (``sequence_events``), which
    the run only reads."""
    sim = Simulation(generated.scenario.name, venue_for(generated.scenario), with_backstop=with_backstop,
                     params=params or engine_params(generated), on_output=on_output)
    label = f"{generated.scenario.name} {'with' if with_backstop else 'without'}"
    bar = Progress(label, len(events), progress)

    def tick(n: int) -> None:
        bar(n)

    # the opening notional, once every account has its positions (the setup events come first)
    result = sim.run(_with_opening(events, sim), progress=tick)
    bar.close()
    return result


def _with_opening(events, sim: Simulation):
    t_open = None
    for event in events:
        yield event
        if t_open is None and event[1] == "PositionUpdate":
            t_open = event[2]["event_time_ms"]
        elif t_open is not None and not sim.result.initial_notional_usd and event[2]["event_time_ms"] > t_open + 1000:
            sim.result.initial_notional_usd = sim.opening_notional()


@dataclasses.dataclass(frozen=True)
class Run:
    """One simulation: ``scenario`` with or without the backstop, the backstop at the default
    thresholds or at ``thresholds`` (keyword arguments of ``engine_params``). Small to send to a
    worker process: the worker generates the scenario's events itself."""

    scenario: Scenario
    seed: int | None
    with_backstop: bool
    thresholds: tuple[tuple[str, float], ...] = ()

    def __str__(self) -> str:
        at = "".join(f" {name}={value:g}" for name, value in self.thresholds)
        return f"{self.scenario.name} {'with' if self.with_backstop else 'without'} backstop{at}"


class Outcome(NamedTuple):
    """A run's result, with the seed and account count its scenario was generated with."""

    seed: int
    accounts: int
    result: Result


def run_one(run: Run) -> Outcome:
    generated, events = prepared(run.scenario, run.seed)
    params = engine_params(generated, **dict(run.thresholds))
    result = simulate_events(generated, events, with_backstop=run.with_backstop, params=params, progress=False)
    return Outcome(generated.seed, len(generated.accounts), result)


@functools.lru_cache(maxsize=len(library.SCENARIOS))
def prepared(scenario: Scenario, seed: int | None) -> tuple[Generated, list[tuple[str, str, Mapping[str, Any], str]]]:
    """``scenario`` generated at ``seed`` and its events in sequencer order, once per process for
    all of its runs there (the with and without runs, every sweep point): a run only reads them."""
    generated = generate(scenario, seed)
    return generated, sequence_events(generated.events)


def run_all(runs: Sequence[Run], jobs: int, progress: bool | None = None) -> list[Outcome]:
    """``runs``' outcomes, in the order of ``runs``, over ``jobs`` processes (1: this one), with one
    progress bar for all of them, runs done / runs (``progress``: True draws it, False never, None
    when stderr is a terminal). The runs go out in tasks (``tasks``): the runs of one scenario
    together, so that a process generates a scenario once and values its market ticks once for
    all of them (``simulate._shared_figures``)."""
    batches = tasks(runs, jobs)
    if jobs > 1 and len(batches) > 1:
        kernels.warm()  # once, before the workers fork from this process (``_pool_context``)
    bar = Progress("backtest runs", len(runs), progress)
    bar(0)
    finished = 0

    def task_done(i: int) -> None:
        nonlocal finished
        finished += len(batches[i])
        bar(finished)

    try:
        done = parallel_map(run_task, [Task(tuple(runs[i] for i in batch)) for batch in batches], jobs,
                            on_done=task_done)
    except BaseException:
        bar.close(complete=False)
        raise
    bar.close()
    by_index = {i: outcome for batch, outcomes in zip(batches, done) for i, outcome in zip(batch, outcomes)}
    return [by_index[i] for i in range(len(runs))]


def tasks(runs: Sequence[Run], jobs: int) -> list[list[int]]:
    """Indices of ``runs`` in tasks for ``jobs`` processes: the runs of one scenario and seed
    together, in chunks of at least two runs and small enough to give each process four tasks
    or more (the load balances on them). In a task the runs with the backstop come first, those
    without after (they reuse the valuations of the ticks, which takes most of their time).
    The longest tasks go first, so that fewer processes idle at the end: by their runs with the
    backstop (about twenty times as long as those without) times the scenario's index ticks
    (duration times underlyings), then by their runs. Every index is in exactly one task."""
    size = max(2, math.ceil(len(runs) / (4 * jobs)))
    by_scenario: dict[tuple[Scenario, int | None], list[int]] = {}
    for i, run in enumerate(runs):
        by_scenario.setdefault((run.scenario, run.seed), []).append(i)
    out = []
    for indices in by_scenario.values():
        ordered = sorted(indices, key=lambda i: not runs[i].with_backstop)
        out += [ordered[k:k + size] for k in range(0, len(ordered), size)]
    def length(task: list[int]) -> tuple[int, int]:
        scenario = runs[task[0]].scenario
        ticks = scenario.duration_s * len(scenario.underlyings)
        return sum(runs[i].with_backstop for i in task) * ticks, len(task)

    return sorted(out, key=length, reverse=True)


@dataclasses.dataclass(frozen=True)
class Task:
    """Runs one worker process does in order (``tasks``); named by its runs in an error."""

    runs: tuple[Run, ...]

    def __str__(self) -> str:
        return "; ".join(str(run) for run in self.runs)


def run_task(task: Task) -> list[Outcome]:
    """``run_one`` of each run, in order; a run that raises ends the task with a ``UserError``
    naming it."""
    return [_call(run_one, run) for run in task.runs]


def parallel_map(fn: Callable[[Item], Out], items: Sequence[Item], jobs: int,
                 on_done: Callable[[int], None] = lambda n: None) -> list[Out]:
    """``[fn(item) for item in items]`` over ``jobs`` worker processes (1: in this process, no pool),
    calling ``on_done(i)`` as item ``i`` finishes. An item that raises ends the call with a
    ``UserError`` naming it (``str(item)``) and the exception, in one line; so does a worker that
    dies (killed, out of memory). On that error, or an interrupt, the other workers are stopped
    mid-item and the items not started are dropped; Ctrl-C while the workers start ends the call
    with ``KeyboardInterrupt`` once they have (``_interrupts_held``). While the pool lives, the
    garbage collector leaves this process's objects alone (``gc.freeze``, as Python advises
    before forking), unless the caller has frozen objects itself (they stay as they are): a
    forked worker's collections then skip the objects it inherited (the engine, its compiled
    kernels), which each full collection would otherwise traverse (and copy, page by page)."""
    if jobs == 1 or len(items) <= 1:
        out = []
        for i, item in enumerate(items):
            out.append(_call(fn, item))
            on_done(i)
        return out
    with _sigpipe_blocked(), _frozen_unless_the_caller_froze():
        return _pool_map(fn, items, jobs, on_done)


def _pool_map(fn: Callable[[Item], Out], items: Sequence[Item], jobs: int,
              on_done: Callable[[int], None]) -> list[Out]:
    context = _pool_context()
    parent_alive, parent_writes = context.Pipe(duplex=False)
    pool = ProcessPoolExecutor(min(jobs, len(items)), mp_context=context, initializer=_start_worker,
                               initargs=(parent_alive, parent_writes))
    try:
        with _interrupts_held():
            futures = _submit_all(pool, fn, items)
        results: dict[int, Out] = {}
        for future in as_completed(futures):
            i = futures[future]
            if isinstance(future.exception(), BrokenProcessPool):
                raise _died(items[_first_unfinished(futures)])
            results[i] = _outcome(future, items[i])
            on_done(i)
    except BaseException:
        _stop_workers(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        parent_writes.close()
        parent_alive.close()
    return [results[i] for i in range(len(items))]


def _submit_all(pool: ProcessPoolExecutor, fn: Callable[[Item], Out], items: Sequence[Item]) -> dict[Future, int]:
    """Each item's future (the first submit starts the workers) and its index; if a worker dies
    meanwhile, those submitted so far: the pool fails each of them that is not done with
    ``BrokenProcessPool`` (``_first_unfinished``)."""
    futures: dict[Future, int] = {}
    with contextlib.suppress(BrokenProcessPool):
        for i, item in enumerate(items):
            futures[pool.submit(fn, item)] = i
    return futures


@contextlib.contextmanager
def _frozen_unless_the_caller_froze() -> Iterator[None]:
    """This process's objects frozen (``gc.freeze``) meanwhile and thawed after, when none were
    frozen before; else the frozen ones stay so and no other is frozen or thawed."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """Ctrl-C (SIGINT) held back meanwhile and raised as ``KeyboardInterrupt`` after, so that it
    never interrupts a fork: the hooks Python runs around it in both processes (logging's
    locks) would report it as ignored and drop it. SIGINT is blocked in this thread, and so in
    the processes it forks until ``_start_worker`` ignores it; in the main thread, the handler
    only notes a SIGINT that another thread (a native one: BLAS's) takes meanwhile."""
    noted = []
    main = threading.current_thread() is threading.main_thread()
    previous_handler = signal.signal(signal.SIGINT, lambda *_: noted.append(True)) if main else None
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        if main:
            signal.signal(signal.SIGINT, previous_handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)  # a pending SIGINT is handled here
    if noted:
        raise KeyboardInterrupt


@contextlib.contextmanager
def _sigpipe_blocked() -> Iterator[None]:
    """SIGPIPE blocked in this thread and in the threads and processes it starts meanwhile (the
    pool's): the pool's call queue writes to workers that an error, a death or Ctrl-C may have
    ended, and takes the broken pipe (EPIPE) as such; where SIGPIPE is not ignored (the CLI, so
    that ``backstop ... | head`` ends quietly) the signal would end this process instead. A
    pipe broken meanwhile in this thread stays pending and ends the process once unblocked."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGPIPE})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _call(fn: Callable[[Item], Out], item: Item) -> Out:
    try:
        return fn(item)
    except UserError:
        raise
    except Exception as exc:
        raise _failed(item, exc) from exc


def _outcome(future: Future, item: Any) -> Any:
    try:
        return future.result()
    except UserError:
        raise
    except Exception as exc:
        raise _failed(item, exc) from exc


def _first_unfinished(futures: dict[Future, int]) -> int:
    """The first index (in submission order, which is the workers' order) whose future a dead
    worker left unfinished: a broken pool fails every future not done with ``BrokenProcessPool``."""
    wait(futures)
    return min(i for future, i in futures.items() if isinstance(future.exception(), BrokenProcessPool))


def _died(item: Any) -> UserError:
    return UserError(f"{item}: a worker process died (killed, or out of memory?)")


def _failed(item: Any, exc: Exception) -> UserError:
    return UserError(f"{item}: failed with {type(exc).__name__}: {exc}")


def _pool_context() -> multiprocessing.context.BaseContext:
    """Worker processes are forked from this process while it runs no other Python thread: they
    start with what it has imported and loaded (the engine, the compiled kernels that ``run_all``
    loads first), in a few ms each. Native threads (the BLAS pool's) are fork-safe, as numpy
    forks with them everywhere; numba runs no thread of its own (no kernel is ``parallel``).
    A process running other Python threads (whose locks a fork would copy in whatever state they
    are in) gets its workers from a fork server instead: a fresh single-threaded process that
    imports this module once (about 0.65 s) and forks them."""
    if threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def _start_worker(parent_alive: Connection, parent_writes: Connection) -> None:
    """A worker leaves Ctrl-C (sent to the whole process group) to the parent, which stops the
    workers: it ignores SIGINT, then unblocks it (blocked since the fork, ``_interrupts_held``).
    SIGPIPE stays blocked in it (``_sigpipe_blocked``): a write to a closed pipe is an error
    (EPIPE), raised as ``BrokenPipeError``. It exits once the parent is gone (killed):
    ``parent_alive`` reads a pipe only the parent writes to (``parent_writes``, whose copy a
    forked worker inherits and closes here), closed when it dies. Without that, a worker waits
    for work forever, as it holds the write end of the pool's work queue itself."""
    parent_writes.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    threading.Thread(target=_exit_when_closed, args=(parent_alive,), daemon=True).start()


def _exit_when_closed(pipe: Connection) -> None:
    try:
        pipe.recv_bytes()
    except EOFError:
        pass
    os._exit(1)


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Terminates the pool's worker processes: ``ProcessPoolExecutor`` has no public way to before
    Python 3.14 (``terminate_workers()``)."""
    for process in list(pool._processes.values()):
        process.terminate()


def compare(scenarios: Sequence[Scenario], seed: int | None = None, *, params: dict[str, float] | None = None,
            jobs: int = 1, progress: bool | None = None) -> list[dict[str, Any]]:
    """Each scenario with vs without the backstop (and, with ``params``, the backstop at alternative
    thresholds), every run of every scenario in one ``run_all``."""
    alternative = tuple(sorted(params.items())) if params else None
    runs = []
    for scenario in scenarios:
        runs += [Run(scenario, seed, False), Run(scenario, seed, True)]
        if alternative is not None:
            runs.append(Run(scenario, seed, True, alternative))
    outcomes = run_all(runs, jobs, progress)
    per_scenario = 2 if alternative is None else 3
    out = []
    for k, scenario in enumerate(scenarios):
        without, with_, *alt = outcomes[k * per_scenario:(k + 1) * per_scenario]
        r = {"scenario": scenario.name, "seed": without.seed, "accounts": without.accounts,
             "with_backstop": with_.result.summary(), "without_backstop": without.result.summary(),
             "accounts_saved": sorted(without.result.bankrupt_accounts - with_.result.bankrupt_accounts)}
        if alt:
            r["alternative"] = {"params": params, **alt[0].result.summary()}
        out.append(r)
    return out


def sweep_thresholds(trigger: float) -> tuple[tuple[str, float], ...]:
    """The thresholds at one margin-trigger ratio (MM / equity that starts liquidation): the
    liquidation ratio and the ladder's call/reduce levels scale with it."""
    return (("margin_trigger_ratio", trigger), ("liquidation_ratio", 1.5 * trigger), ("reduce_ratio", 0.9 * trigger),
            ("call_ratio", 0.8 * trigger))


def sweep(scenarios: Sequence[Scenario], triggers: Sequence[float], seed: int | None = None, *, jobs: int = 1,
          progress: bool | None = None) -> dict[str, list[dict[str, Any]]]:
    """Per scenario, the backstop at each margin-trigger ratio (``sweep_thresholds``) plus the
    no-backstop point: capital efficiency vs bad debt. Every run in one ``run_all``."""
    runs = []
    for scenario in scenarios:
        runs.append(Run(scenario, seed, False))
        runs += [Run(scenario, seed, True, sweep_thresholds(trigger)) for trigger in triggers]
    outcomes = run_all(runs, jobs, progress)
    per_scenario = 1 + len(triggers)
    curves = {}
    for k, scenario in enumerate(scenarios):
        points = []
        for trigger, outcome in zip([None, *triggers], outcomes[k * per_scenario:(k + 1) * per_scenario]):
            r = outcome.result
            points.append({"label": "no backstop" if trigger is None else f"trigger {trigger:g}", "trigger": trigger,
                           "bad_debt_usd": r.bad_debt_usd, "capital_efficiency": r.capital_efficiency,
                           "liquidated_notional_usd": r.liquidated_notional_usd,
                           "initial_notional_usd": r.initial_notional_usd})
        curves[scenario.name] = points
    return curves
