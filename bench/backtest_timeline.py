"""Where the wall time of ``backstop backtest`` goes: a timeline of its processes.

    .venv/bin/python bench/backtest_timeline.py [BACKTEST ARGUMENTS]    (default: --scenario all --jobs 2)

Runs the command in a child process (its output discarded) whose functions are wrapped to stamp
``time.perf_counter()`` (one clock for every process on Linux) and the process's CPU time
(``time.process_time()``) at: the command's start, its parser built (the command's imports
done), the compiled kernels loaded, each worker's start, each task's start and end in its
worker, the results merged, the output written; the exit is the child's end. Prints each
stamp from the command's launch, then the critical path in CPU terms: the parent's CPU before
its workers start, each worker's start-up and runs CPU and the seconds it was not on a CPU
(waiting for one on a loaded machine, or for work), and the parent's CPU after the last result.
The workers fork from the parent and inherit its wrappers (``pipelines.backtest.run``). Not a
test: nothing here asserts a time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT = ["--scenario", "all", "--jobs", "2"]


def stamp(log: Path, event: str) -> None:
    """Appends one stamp of this process to ``log``: clock, pid, CPU, event."""
    with log.open("a") as f:
        f.write(f"{time.perf_counter():.6f} {os.getpid()} {time.process_time():.6f} {event}\n")


def wrapped(log: Path, fn: Callable[..., Any], before: str | None, after: str | None,
            label: Callable[..., str] = lambda *a: "") -> Callable[..., Any]:
    """``fn`` stamping ``before`` and ``after`` (each followed by ``label(*args)``), named as ``fn``
    so that a pool pickles it by the module attribute it replaces."""
    def call(*args: Any, **kwargs: Any) -> Any:
        if before:
            stamp(log, f"{before} {label(*args)}".strip())
        out = fn(*args, **kwargs)
        if after:
            stamp(log, f"{after} {label(*args)}".strip())
        return out

    call.__module__, call.__qualname__, call.__name__ = fn.__module__, fn.__qualname__, fn.__name__
    return call


def first_call_stamped(log: Path, fn: Callable[[], None], event: str) -> Callable[[], None]:
    """``fn`` stamping ``event`` after its first call in each process (an engine calls it at each run)."""
    stamped: set[int] = set()

    def call() -> None:
        fn()
        if os.getpid() not in stamped:
            stamped.add(os.getpid())
            stamp(log, event)

    return call


def child(log: Path, arguments: list[str]) -> int:
    """``backstop backtest ARGUMENTS`` in this process, stamped."""
    stamp(log, "start")
    import pipelines.cli as cli
    from pipelines.backtest import run
    from pipelines.risk import kernels

    cli.build_parser = wrapped(log, cli.build_parser, None, "parser built (imports done)")
    kernels.warm = first_call_stamped(log, kernels.warm, "kernels loaded")
    run.run_all = wrapped(log, run.run_all, "runs start", "results merged")
    run._start_worker = wrapped(log, run._start_worker, "worker start", None)
    run.run_task = wrapped(log, run.run_task, "task start", "task end", label=str)
    sys.argv = ["backstop", "backtest", *arguments]
    sys.stdout = open(os.devnull, "w")
    code = cli.main()
    sys.stdout.flush()
    stamp(log, "output written")
    return code


def read(log: Path) -> list[tuple[float, int, float, str]]:
    rows = []
    for line in log.read_text().splitlines():
        clock, pid, cpu, event = line.split(" ", 3)
        rows.append((float(clock), int(pid), float(cpu), event))
    return sorted(rows)


def summary(rows: list[tuple[float, int, float, str]], launched: float, ended: float, parent: int) -> list[str]:
    """The critical path in CPU terms (see the module's docstring)."""
    mine = [r for r in rows if r[1] == parent]
    cpu_at = {event.split(" (")[0]: cpu for _, _, cpu, event in mine}
    before = max((cpu for _, _, cpu, event in mine if event in ("kernels loaded", "runs start")), default=0.0)
    lines = [f"parent: {cpu_at.get('parser built', 0):.3f} s CPU to its imports, {before:.3f} s before the workers "
             f"start; {cpu_at['output written'] - cpu_at.get('results merged', 0):.3f} s after the last result; "
             f"exit {ended - max(r[0] for r in mine):.3f} s wall"]
    for pid in dict.fromkeys(r[1] for r in rows if r[1] != parent):
        own = [r for r in rows if r[1] == pid]
        tasks = [r for r in own if r[3].startswith("task ")]
        if not tasks:
            lines.append(f"worker {pid}: no task")
            continue
        first, last = tasks[0], tasks[-1]
        idle = (last[0] - own[0][0]) - (last[2] - own[0][2])
        lines.append(f"worker {pid}: start-up {first[2]:.3f} s CPU, runs {last[2] - first[2]:.3f} s CPU in "
                     f"{len(tasks) // 2} tasks, {idle:.3f} s off a CPU; last task ends at {last[0] - launched:.3f} s")
    lines.append(f"wall {ended - launched:.3f} s")
    return lines


def main(arguments: list[str]) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        log = Path(scratch) / "timeline"
        launched = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--child", str(log), *arguments], cwd=scratch,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        ended = time.perf_counter()
        if proc.returncode:
            print(f"backstop backtest {' '.join(arguments)}: exit {proc.returncode}", file=sys.stderr)
            return proc.returncode
        rows = read(log)
    parent = rows[0][1]
    for clock, pid, cpu, event in rows:
        who = "parent" if pid == parent else f"worker {pid}"
        print(f"{clock - launched:8.3f} s  {who:<13} CPU {cpu:7.3f} s  {event}")
    print("\n".join(summary(rows, launched, ended, parent)))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        sys.path.insert(0, str(REPO))
        sys.exit(child(Path(sys.argv[2]), sys.argv[3:]))
    sys.exit(main(sys.argv[1:] or DEFAULT))
