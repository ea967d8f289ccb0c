"""bench/backtest_timeline.py stamps each process of a parallel backtest and sums up its critical path."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_timeline_has_every_task_in_one_of_two_workers_and_the_critical_path() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "backtest_timeline.py"), "--scenario",
                           "deribit-coin-2021", "--scenario", "aug-2024", "--jobs", "2"], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    stamps = re.findall(r"^ *[\d.]+ s  (parent|worker \d+) +CPU +[\d.]+ s  (.*)$", proc.stdout, re.MULTILINE)
    events = [event for _, event in stamps]
    assert events[0] == "start" and events[-1] == "output written"
    workers = {who for who, event in stamps if event == "worker start"}
    assert len(workers) == 2
    for scenario in ("deribit-coin-2021", "aug-2024"):
        task = f"{scenario} with backstop; {scenario} without backstop"
        ran = [who for who, event in stamps if event in (f"task start {task}", f"task end {task}")]
        assert len(ran) == 2 and ran[0] == ran[1] and ran[0] in workers
    summary = proc.stdout.splitlines()[-4:]
    assert summary[0].startswith("parent: ") and summary[-1].startswith("wall ")
    assert sorted(line.split(":")[0] for line in summary[1:3]) == sorted(workers)


def test_the_critical_path_names_a_worker_that_got_no_task() -> None:
    spec = importlib.util.spec_from_file_location("backtest_timeline", REPO / "bench" / "backtest_timeline.py")
    backtest_timeline = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(backtest_timeline)
    rows = [(0.0, 1, 0.1, "start"), (0.5, 2, 0.0, "worker start"), (0.6, 3, 0.0, "worker start"),
            (0.7, 2, 0.1, "task start a"), (1.5, 2, 0.9, "task end a"), (1.6, 1, 0.2, "output written")]
    lines = backtest_timeline.summary(rows, 0.0, 2.0, parent=1)
    assert lines[1] == ("worker 2: start-up 0.100 s CPU, runs 0.800 s CPU in 1 tasks, 0.100 s off a CPU; "
                        "last task ends at 1.500 s")
    assert lines[2] == "worker 3: no task"
