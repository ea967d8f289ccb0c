"""Scaling curves: throughput and peak memory as the book grows, and as worker processes are added.

    .venv/bin/python bench/bench_scaling.py [--quick] [--no-workers] [--bootstrap host:port] [--out F]

Accounts (1k -> 10k -> 100k, over 1,000 options) and instruments (100 -> 1,000 -> 10,000
options, 10k accounts): the synthetic book of ``bench/synthetic.py`` loaded into one engine,
in-process, then 10 s of event time of a falling market (246 market events; 41 revaluations
of every account). Each point runs in a child process of its own, so its peak RSS is its own.
Per point: load events/s (positions and collateral), market events/s, account revaluations/s
(accounts x revaluations / market seconds), actions and peak RSS.

Workers (1 -> 2 -> 4 ``backstop worker`` processes in one group, on the real broker): the worker
benchmark's venue feed (``bench_worker.bench_workers``) over fresh topics per point.

Writes bench/results/scaling.json and a plot per curve beside it (scaling_*.png).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MARKET_SECONDS = 10


def point(accounts: int, options: int, seconds: int) -> dict:
    """One point of the book curves, in this process (run it in a child: peak RSS is per process)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository root
    from bench.synthetic import book_events, market_events
    from pipelines.engine.engine import Engine
    from pipelines.policy.signing import SigningKey

    book, market = book_events(accounts, options), list(market_events(seconds))
    engine = Engine(SigningKey("bench", b"bench-signing-key-000"))
    start = time.perf_counter()
    for i, (record, value) in enumerate(book):
        engine.on_event(record, value, f"b{i}")
    load_s = time.perf_counter() - start
    actions = breaches = 0
    start = time.perf_counter()
    for i, (record, value) in enumerate(market):
        out = engine.on_event(record, value, f"m{i}")
        actions, breaches = actions + len(out.actions), breaches + len(out.breaches)
    out = engine.flush()
    actions, breaches = actions + len(out.actions), breaches + len(out.breaches)
    market_s = time.perf_counter() - start
    interval = engine.params.revaluation_interval_ms
    revaluations = len({value["event_time_ms"] // interval for _, value in market})
    return {"accounts": accounts, "options": options, "positions": len(book) - accounts,
            "load_events": len(book), "load_events_per_s": len(book) / load_s,
            "market_events": len(market), "market_events_per_s": len(market) / market_s,
            "revaluations": revaluations, "account_revaluations_per_s": accounts * revaluations / market_s,
            "actions": actions, "breaches": breaches,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_point(accounts: int, options: int, seconds: int) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--point", str(accounts), str(options), str(seconds)],
                          capture_output=True, text=True, cwd=REPO, check=False)
    if proc.returncode:
        raise SystemExit(f"scaling point {accounts} accounts / {options} options failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"  {accounts:>7,} accounts {options:>6,} options: {result['market_events_per_s']:8,.0f} market events/s, "
          f"{result['account_revaluations_per_s']:12,.0f} account revaluations/s, "
          f"peak {result['peak_rss_mb']:6,.0f} MB", flush=True)
    return result


def workers_curve(bootstrap: str, counts: list[int], accounts: int, seconds: float) -> list[dict]:
    """The venue feed (``accounts`` accounts, ``seconds`` of market) through 1, 2, 4 worker
    processes (``bench_worker.bench_workers``): every worker reads every market record and its
    share of the accounts; the cluster's input rate is the sum of the workers' applied rates."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench import venue_feed
    from bench.bench_worker import bench_workers, wire

    tmp = REPO / ".backstop" / "bench-scaling"
    tmp.mkdir(parents=True, exist_ok=True)
    messages = wire(venue_feed.feed(venue_feed.FeedSpec(accounts=accounts, seconds=seconds)))
    out = []
    for n in counts:
        result = bench_workers(bootstrap, messages, n, tmp)
        workers = result["per_worker"]
        out.append({"workers": n, "events_per_s": sum(w["events_per_s"] for w in workers),
                    "peak_rss_mb": [w["peak_rss_mb"] for w in workers], "load": result["load"]})
        print(f"  {n} worker(s): {out[-1]['events_per_s']:8,.0f} input events/s in all, peak RSS "
              f"{sum(out[-1]['peak_rss_mb']):,.0f} MB in all", flush=True)
    return out


def plot(results: dict, folder: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    curves = [("accounts", "accounts", results["accounts"]), ("instruments", "options", results["instruments"])]
    for name, key, points in curves:
        fig, left = plt.subplots(figsize=(6.4, 4))
        x = [p[key] for p in points]
        left.plot(x, [p["account_revaluations_per_s"] for p in points], "o-", color="tab:blue")
        left.set_xscale("log")
        left.set_yscale("log")
        left.set_xlabel(key)
        left.set_ylabel("account revaluations / s", color="tab:blue")
        right = left.twinx()
        right.plot(x, [p["peak_rss_mb"] for p in points], "s--", color="tab:red")
        right.set_ylabel("peak RSS (MB)", color="tab:red")
        left.set_title(f"In-process engine as {key} grow (one core)")
        fig.tight_layout()
        path = folder / f"scaling_{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path.name)
    if results.get("workers"):
        points = results["workers"]
        fig, ax = plt.subplots(figsize=(6.4, 4))
        x = [p["workers"] for p in points]
        ax.plot(x, [p["events_per_s"] for p in points], "o-", label="input events/s")
        ax.plot(x, [points[0]["events_per_s"] * n for n in x], ":", color="grey", label="linear from 1 worker")
        ax.set_xticks(x)
        ax.set_xlabel(f"worker processes ({os.cpu_count()} cores on this machine)")
        ax.set_ylabel("input events / s")
        ax.set_title("Stream workers on the real broker")
        ax.legend(loc="upper left")
        right = ax.twinx()
        right.plot(x, [sum(p["peak_rss_mb"]) for p in points], "s--", color="tab:red")
        right.set_ylabel("peak RSS of all workers (MB)", color="tab:red")
        fig.tight_layout()
        path = folder / "scaling_workers.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path.name)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller books and loads")
    parser.add_argument("--no-workers", action="store_true", help="only the in-process curves (no broker)")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "scaling.json"))
    parser.add_argument("--point", nargs=3, type=int, metavar=("ACCOUNTS", "OPTIONS", "SECONDS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.point:
        print(json.dumps(point(*args.point)))
        return
    accounts_axis, options_axis = ([500, 2_000, 8_000], [50, 200, 800]) if args.quick \
        else ([1_000, 10_000, 100_000], [100, 1_000, 10_000])
    fixed_options, fixed_accounts = options_axis[1], accounts_axis[1]
    seconds = 2 if args.quick else MARKET_SECONDS
    print("accounts grow", flush=True)
    by_accounts = [run_point(a, fixed_options, seconds) for a in accounts_axis]
    print("instruments grow", flush=True)
    by_options = [run_point(fixed_accounts, k, seconds) for k in options_axis]
    results = {"benchmark": "scaling", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "cpus": os.cpu_count(), "market_seconds": seconds, "accounts": by_accounts, "instruments": by_options}
    if not args.no_workers:
        print("worker processes grow", flush=True)
        results["workers"] = workers_curve(args.bootstrap, [1, 2, 4], *((1_000, 2.0) if args.quick else (10_000, 5.0)))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results["plots"] = plot(results, out.parent)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
