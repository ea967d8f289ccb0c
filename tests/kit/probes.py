"""Helpers of the ops tests: free ports, plain HTTP GETs, scraping and reading Prometheus samples."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

T = TypeVar("T")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def get(port: int, path: str) -> tuple[int, str]:
    """(status, body) of ``GET http://127.0.0.1:port/path``; (0, reason) when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, keyed by sample name and sorted labels."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape(port: int) -> Samples:
    """The samples ``/metrics`` serves now."""
    status, body = get(port, "/metrics")
    assert status == 200, body
    return parse(body)


def samples(registry: CollectorRegistry) -> Samples:
    """The samples of an in-process registry, as ``/metrics`` would serve them."""
    return parse(generate_latest(registry).decode())


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


def series(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {ls: v for (n, ls), v in samples.items() if n == name}


def json_lines(path: Path) -> list[dict]:
    """Every line of a log file, each of which must be one JSON object with the four fixed fields."""
    records = []
    for line in path.read_text().splitlines():
        record = json.loads(line)  # a line that is not JSON fails the test here
        assert {"ts", "level", "logger", "msg"} <= set(record), record
        records.append(record)
    return records


def wait_for(condition: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.2) -> T:
    """Poll ``condition`` until it returns something truthy, which is returned."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> int:
    """Signal the process group and wait; the exit code (SIGKILL after 60 s without one)."""
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode
