"""Backtests over worker processes: the same results as in-process, one progress bar, one-line errors."""

import contextlib
import copy
import dataclasses
import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent import futures
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from pipelines.backtest.run import (
    Run,
    Task,
    _interrupts_held,
    compare,
    parallel_map,
    prepared,
    run_one,
    simulate,
    sweep,
    sweep_thresholds,
    tasks,
)
from pipelines.cli import main
from pipelines.errors import UserError
from pipelines.scenarios import library
from pipelines.scenarios.generate import generate

REPO = str(Path(__file__).resolve().parents[2])


def backtest_json(capsys, *flags: str) -> tuple[object, str]:
    assert main(["backtest", *flags, "--json"]) == 0
    captured = capsys.readouterr()
    return json.loads(captured.out), captured.err


def test_parallel_compare_matches_in_process_and_is_silent_off_a_terminal(capsys):
    flags = ("--scenario", "october-2025", "--scenario", "aug-2024", "--trigger", "1.1")
    serial, serial_err = backtest_json(capsys, *flags, "--jobs", "1")
    parallel, parallel_err = backtest_json(capsys, *flags, "--jobs", "2")
    assert [r["scenario"] for r in serial] == ["october-2025", "aug-2024"]
    for r in serial:  # each run's result in its place
        runs = (r["without_backstop"], r["with_backstop"], r["alternative"])
        expected = [(r["scenario"], False), (r["scenario"], True), (r["scenario"], True)]
        assert [(run["scenario"], run["with_backstop"]) for run in runs] == expected
    assert serial[0]["with_backstop"]["actions"] != serial[0]["alternative"]["actions"]
    assert parallel == serial
    assert serial_err == parallel_err == ""


def test_parallel_sweep_matches_in_process_with_one_bar_when_forced(capsys):
    scenarios = [library.get("october-2025")]
    serial = sweep(scenarios, [0.9, 1.2], jobs=1, progress=False)
    assert capsys.readouterr().err == ""
    parallel = sweep(scenarios, [0.9, 1.2], jobs=2, progress=True)
    err = capsys.readouterr().err
    assert parallel == serial
    assert [p["trigger"] for p in serial["october-2025"]] == [None, 0.9, 1.2]
    assert err.count("\n") == 1 and err.endswith("] 3/3\n")
    assert "] 0/3" in err


def test_progress_bar_on_a_terminal_unless_no_progress(capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    flags = ("--scenario", "october-2025", "--jobs", "1")
    assert main(["backtest", *flags, "--no-progress"]) == 0
    assert capsys.readouterr().err == ""
    assert main(["backtest", *flags]) == 0
    assert capsys.readouterr().err.endswith("] 2/2\n")


@pytest.mark.parametrize("jobs", ["0", "-2", "two", "1.5", ""])
def test_bad_jobs_flag_is_a_one_line_error(capsys, jobs):
    with pytest.raises(SystemExit) as exited:
        main(["backtest", "--scenario", "october-2025", "--jobs", jobs])
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "argument --jobs: expected a whole number of at least 1" in captured.err


def test_a_run_that_raises_in_a_worker_names_the_run():
    broken = dataclasses.replace(library.get("october-2025"), step_s=0)  # generating it divides by zero
    with pytest.raises(UserError, match=r"^october-2025 with(out)? backstop: failed with ZeroDivisionError: "):
        compare([broken], jobs=2, progress=False)


def exit_at_once(item: object) -> int:
    os._exit(3)


def test_a_worker_that_dies_ends_the_call_with_an_error():
    with pytest.raises(UserError, match="a worker process died"):
        parallel_map(exit_at_once, [1, 2, 3], jobs=2)


DIE_WITH_SIGPIPE_LETHAL = """import signal, sys
signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # as the CLI has it
from pipelines.backtest.run import parallel_map
from pipelines.errors import UserError
from tests.backtest.test_parallel import exit_at_once
try:
    parallel_map(exit_at_once, list(range(200)), jobs=2)
except UserError as exc:
    sys.exit(f"error: {exc}")
"""


def test_workers_that_die_with_items_queued_are_an_error_even_where_a_broken_pipe_kills():
    for _ in range(3):  # the pool writes to the dead workers' queue in about half of the runs
        proc = subprocess.run([sys.executable, "-c", DIE_WITH_SIGPIPE_LETHAL], capture_output=True, text=True,
                              cwd=REPO, env={**os.environ, "PYTHONPATH": REPO}, timeout=300)
        assert (proc.returncode, proc.stderr) == (1, "error: 0: a worker process died (killed, or out of memory?)\n")


def test_a_worker_that_dies_while_items_are_still_submitted_ends_the_call_with_an_error(monkeypatch):
    submit, first = ProcessPoolExecutor.submit, []

    def submit_once_the_first_item_ended(pool, fn, item):
        if first:
            futures.wait(first)  # its worker died: the pool is broken and this submit raises
        first.append(submit(pool, fn, item))
        return first[-1]

    monkeypatch.setattr(ProcessPoolExecutor, "submit", submit_once_the_first_item_ended)
    with pytest.raises(UserError, match=r"^0: a worker process died"):
        parallel_map(exit_at_once, [0, 1, 2], jobs=2)


def test_a_task_whose_worker_dies_is_named_by_its_runs():
    task = Task((Run(library.get("may-2021"), None, True), Run(library.get("may-2021"), None, False)))
    with pytest.raises(UserError, match=r"^may-2021 with backstop; may-2021 without backstop: a worker process died"):
        parallel_map(exit_at_once, [task, task], jobs=2)


def double(item: int) -> int:
    return 2 * item


def forked_with_frozen_objects(item: int) -> tuple[int, int]:
    """The worker's parent and its frozen objects."""
    return os.getppid(), gc.get_freeze_count()


def test_workers_fork_from_this_process_with_its_objects_frozen_and_it_gets_them_back():
    before = gc.get_freeze_count()
    seen = parallel_map(forked_with_frozen_objects, [1, 2, 3], jobs=2)
    assert all(parent == os.getpid() and frozen > before for parent, frozen in seen)
    assert gc.get_freeze_count() == before


def test_a_callers_frozen_objects_stay_frozen():
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        assert parallel_map(double, [1, 2], jobs=2) == [2, 4]
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()


def parent(item: int) -> int:
    return os.getppid()


def test_a_process_running_threads_gets_its_workers_from_a_fork_server_with_the_same_results():
    threads = threading.active_count()
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert parallel_map(double, list(range(5)), jobs=2) == [2 * i for i in range(5)]
        parents = set(parallel_map(parent, [1, 2, 3], jobs=2))
    finally:
        stop.set()
        thread.join()
    assert len(parents) == 1 and os.getpid() not in parents  # the server's children
    assert threading.active_count() == threads


def test_ctrl_c_while_the_workers_start_is_raised_once_they_have():
    started, handler = [], signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with _interrupts_held():
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # the interpreter runs a Python handler between instructions
                started.append(os.getpid())
    assert len(started) == 1000
    assert signal.getsignal(signal.SIGINT) is handler
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])


def test_parallel_map_keeps_the_order_of_its_items():
    done = []
    assert parallel_map(double, list(range(7)), jobs=2, on_done=done.append) == [2 * i for i in range(7)]
    assert sorted(done) == list(range(7))


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


PARENT_THREAD = "import threading\nthreading.Thread(target=time.sleep, args=(600,), daemon=True).start()\n"


@pytest.mark.parametrize(("thread", "processes"), [("", 2), (PARENT_THREAD, 4)], ids=["forked", "fork-server"])
def test_workers_exit_when_the_parent_is_killed(thread, processes):
    """Forked from the parent (2 workers), or from a fork server when the parent runs a thread
    (the server, its 2 workers and the resource tracker)."""
    parent = subprocess.Popen([sys.executable, "-c", "import time\nfrom pipelines.backtest.run import parallel_map\n"
                               f"{thread}parallel_map(time.sleep, [600] * 3, jobs=2)"], stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            workers = descendants(parent.pid)
            if len(workers) >= processes:
                break
            time.sleep(0.1)
        assert len(workers) >= processes
    finally:
        parent.kill()
        parent.wait()
    try:
        for _ in range(600):
            left = {pid for pid in workers if os.path.exists(f"/proc/{pid}") and _state(pid) != "Z"}
            if not left:
                break
            time.sleep(0.1)
        assert not left
    finally:  # a failure must not leave the workers it found sleeping for ten minutes behind it
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def test_the_runs_of_a_scenario_share_its_prepared_events_and_only_read_them():
    scenario = library.get("october-2025")
    generated, events = prepared(scenario, None)
    unchanged = copy.deepcopy(events)
    first = run_one(Run(scenario, None, True)).result.summary()
    assert prepared(scenario, None)[1] is events
    assert events == unchanged
    assert run_one(Run(scenario, None, True)).result.summary() == first
    assert first == simulate(generate(scenario), with_backstop=True, progress=False).summary()


def test_tasks_keep_a_scenarios_runs_together_with_the_backstop_first_and_hold_every_run_once():
    october, aug = library.get("october-2025"), library.get("aug-2024")
    runs = [Run(october, None, False), Run(october, None, True), Run(aug, None, False), Run(aug, None, True),
            Run(aug, 7, False), Run(aug, 7, True)]
    batches = tasks(runs, jobs=2)
    assert sorted(i for batch in batches for i in batch) == list(range(len(runs)))
    assert sorted(map(sorted, batches)) == [[0, 1], [2, 3], [4, 5]]
    assert all(runs[batch[0]].with_backstop and not runs[batch[1]].with_backstop for batch in batches)


def test_tasks_of_scenarios_with_fewer_index_ticks_go_last():
    coin, october = library.get("deribit-coin-2021"), library.get("october-2025")
    assert len(coin.underlyings) < len(october.underlyings) and coin.duration_s == october.duration_s
    runs = [Run(coin, None, True), Run(coin, None, False), Run(october, None, True), Run(october, None, False)]
    assert tasks(runs, jobs=2) == [[2, 3], [0, 1]]


def test_tasks_split_a_scenarios_many_runs_to_give_every_process_work():
    october = library.get("october-2025")
    runs = [Run(october, None, False)] + [Run(october, None, True, sweep_thresholds(t)) for t in range(1, 21)]
    batches = tasks(runs, jobs=2)
    assert [len(batch) for batch in batches] == [3] * 7  # 4 tasks or more a process, of 3 runs
    assert sorted(i for batch in batches for i in batch) == list(range(len(runs)))
    assert batches[-1][-1] == 0  # the run without the backstop, last of the shortest task


def test_ctrl_c_ends_the_command_and_its_workers_with_exit_130_and_no_traceback(tmp_path):
    command = [sys.executable, "-m", "pipelines.cli", "backtest", "--scenario", "all", "--jobs", "2", "--no-progress"]
    # Ctrl-C's default action, as a terminal's foreground job has it: a job started with `&` by a
    # shell without job control (a CI script's) inherits SIGINT ignored, and so would this command
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": REPO}, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        for _ in range(600):  # its 2 workers running
            workers = descendants(proc.pid)
            if len(workers) >= 2:
                break
            time.sleep(0.1)
        assert len(workers) >= 2
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal sends it: to the whole process group
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert (proc.returncode, out, err) == (130, "", "")
    assert not {pid for pid in workers if os.path.exists(f"/proc/{pid}") and _state(pid) != "Z"}
