"""Every benchmark, one command: figures beside their baselines, written to BENCHMARKS.md.

    .venv/bin/python bench/run.py                      # all of them (needs `infra/local up`), ~30 min
    .venv/bin/python bench/run.py --quick              # small loads, results under .backstop/bench-quick/
    .venv/bin/python bench/run.py --only codec,replay  # some; the report uses the others' last results
    .venv/bin/python bench/run.py --render-only        # the report again from bench/results/*.json

Each benchmark is a script of its own in ``bench/`` (run alone, it prints its figures) that
writes ``<results>/<name>.json``; this runs them one after the other, each in a fresh process,
and renders the report from the JSON files. Benchmarks that need Kafka or ClickHouse fail with
the reason when the service is not there: a report with a missing baseline is not written.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO))  # run as a script: the repository root, for `bench.*`

from bench.report import render  # noqa: E402

# name, script, services it needs; in the order they run (cheap and self-contained first)
BENCHMARKS: list[tuple[str, str, tuple[str, ...]]] = [
    ("codec", "bench_codec.py", ()),
    ("risk", "bench_risk.py", ()),
    ("liquidation", "bench_liquidation.py", ()),
    ("replay", "bench_replay.py", ()),
    ("snapshot", "bench_snapshot.py", ()),
    ("core", "bench_core.py", ()),
    ("audit", "bench_audit.py", ("kafka", "clickhouse")),
    ("executor", "bench_executor.py", ("kafka",)),
    ("worker", "bench_worker.py", ("kafka",)),
    ("scaling", "bench_scaling.py", ("kafka",)),
]
# results kept and reported, their script gone: the framework benchmark (issue 20) compared
# faust-streaming, which has left the project (bench/bench_framework.py until commit 584cb2e)
RECORDED: tuple[str, ...] = ("framework",)


def reachable(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=3):
            return True
    except OSError:
        return False


def machine() -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    memory = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal")), "0") if Path("/proc/meminfo").exists() else "0"
    return {"cpu": cpu, "cores": str(os.cpu_count()), "memory_gb": f"{int(memory) / 1024 / 1024:.0f}",
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small loads, a smoke run (minutes)")
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(n for n, _, _ in BENCHMARKS)}")
    parser.add_argument("--results", help="folder for the JSON results and plots (default bench/results; "
                                          "with --quick .backstop/bench-quick)")
    parser.add_argument("--report",
                        help="markdown report (default BENCHMARKS.md; with --quick <results>/BENCHMARKS.md)")
    parser.add_argument("--render-only", action="store_true",
                        help="measure nothing: render the report from the results already in the folder")
    parser.add_argument("--bootstrap", default=os.environ.get("BACKSTOP_KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument("--clickhouse", default="127.0.0.1:9000", help="ClickHouse native host:port")
    args = parser.parse_args()
    names = [n for n, _, _ in BENCHMARKS]
    chosen = names if not args.only else [n.strip() for n in args.only.split(",")]
    unknown = set(chosen) - set(names)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}; choose from {', '.join(names)}")
    results = Path(args.results) if args.results else (REPO / ".backstop" / "bench-quick" if args.quick
                                                       else BENCH / "results")
    report = Path(args.report) if args.report else (results / "BENCHMARKS.md" if args.quick else REPO / "BENCHMARKS.md")
    results.mkdir(parents=True, exist_ok=True)
    if args.render_only:
        chosen = []
    address = {"kafka": args.bootstrap.split(",")[0], "clickhouse": args.clickhouse}
    missing = sorted({s for n, _, needs in BENCHMARKS if n in chosen for s in needs if not reachable(address[s])})
    if missing:
        raise SystemExit(f"bench: {' and '.join(missing)} not reachable at "
                         f"{', '.join(address[s] for s in missing)}; start them with `infra/local up` "
                         f"(or choose benchmarks with --only)")
    started = time.monotonic()
    for k, (name, script, needs) in enumerate(b for b in BENCHMARKS if b[0] in chosen):
        command = [sys.executable, str(BENCH / script), "--out", str(results / f"{name}.json")]
        command += ["--quick"] if args.quick else []
        command += ["--bootstrap", args.bootstrap] if "kafka" in needs else []
        command += ["--clickhouse", args.clickhouse] if "clickhouse" in needs else []
        print(f"[{k + 1}/{len(chosen)}] {name} ({script}) ...", flush=True)
        t = time.monotonic()
        proc = subprocess.run(command, cwd=REPO, check=False)
        if proc.returncode:
            raise SystemExit(f"bench: {name} failed (exit {proc.returncode}); rerun it alone: {' '.join(command[1:])}")
        out = results / f"{name}.json"  # stamped with its machine: a later partial run must not relabel it
        out.write_text(json.dumps({**json.loads(out.read_text()), "machine": machine()}, indent=2) + "\n")
        print(f"[{k + 1}/{len(chosen)}] {name} done in {time.monotonic() - t:.0f} s", flush=True)
    loaded = {n: json.loads((results / f"{n}.json").read_text()) for n in (*names, *RECORDED)
              if (results / f"{n}.json").exists()}
    rerun = "bench/run.py" + (" --quick" if args.quick else "")
    # the time of the newest measurement, so that re-rendering does not restamp old figures
    newest = max((results / f"{n}.json").stat().st_mtime for n in loaded) if loaded else time.time()
    text = render(loaded, datetime.datetime.fromtimestamp(newest, datetime.UTC), rerun,
                  os.path.relpath(results, report.parent))
    report.write_text(text)
    print(f"{len(chosen)} benchmark(s) in {time.monotonic() - started:.0f} s -> {report}")


if __name__ == "__main__":
    main()
