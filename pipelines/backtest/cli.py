"""``backstop backtest --scenario NAME`` and ``backstop backtest --sweep T1,T2,...``."""

from __future__ import annotations

import argparse
import json
import os

from pipelines.backtest.run import compare, sweep
from pipelines.errors import UserError
from pipelines.scenarios import library


def register(subparsers: argparse._SubParsersAction) -> None:
    bt = subparsers.add_parser("backtest", help="a scenario with and without the backstop; threshold sweeps")
    bt.add_argument("--scenario", action="append", choices=library.names() + ["all"],
                    help="scenario name (repeatable; 'all' for every bundled scenario)")
    bt.add_argument("--seed", type=int, help="random seed (default: each scenario's own)")
    bt.add_argument("--trigger", type=float, help="also run the backstop at this margin-trigger ratio (MM / equity)")
    bt.add_argument("--sweep", metavar="T1,T2,...",
                    help="margin-trigger ratios to sweep: draws the solvency-efficiency frontier")
    bt.add_argument("--plot", metavar="PNG", default="frontier.png", help="frontier plot file (with --sweep)")
    bt.add_argument("--json", action="store_true", help="machine-readable JSON")
    bt.add_argument("--jobs", metavar="N",
                    help="worker processes for the runs (default: the usable cores; 1: in this process)")
    bt.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    bt.set_defaults(func=run)


def jobs_from(flag: str | None) -> int:
    """``--jobs``: a whole number of worker processes, at least 1; by default the cores this process may use."""
    if flag is None:
        return len(os.sched_getaffinity(0))
    try:
        jobs = int(flag)
    except ValueError:
        raise UserError(f"--jobs takes a whole number of worker processes, e.g. 2 (got {flag!r})") from None
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1 (got {jobs})")
    return jobs


def run(args: argparse.Namespace) -> int:
    jobs = jobs_from(args.jobs)
    names = args.scenario or [library.DEFAULT]
    if "all" in names:
        names = library.names()
    scenarios = [library.get(name) for name in names]
    progress = False if args.no_progress else None
    if args.sweep:
        try:
            triggers = [float(x) for x in args.sweep.split(",") if x.strip()]
        except ValueError:
            raise UserError(f"--sweep takes comma-separated ratios, e.g. 0.8,1.0,1.2 (got {args.sweep!r})") from None
        from pipelines.backtest.plot import frontier_plot

        curves = sweep(scenarios, triggers, args.seed, jobs=jobs, progress=progress)
        frontier_plot(curves, args.plot)
        if args.json:
            print(json.dumps({"plot": args.plot, "curves": curves}, indent=2))
        else:
            for name, points in curves.items():
                print(name)
                for p in points:
                    print(f"  {p['label']:<14} bad debt ${p['bad_debt_usd']:>14,.2f}   capital efficiency "
                          f"{p['capital_efficiency']:.3f}")
            print(f"frontier plot: {args.plot}")
        return 0
    results = compare(scenarios, args.seed, params={"margin_trigger_ratio": args.trigger} if args.trigger else None,
                      jobs=jobs, progress=progress)
    if args.json:
        print(json.dumps(results if len(results) > 1 else results[0], indent=2))
        return 0
    for r in results:
        w, wo = r["with_backstop"], r["without_backstop"]
        print(f"{r['scenario']} (seed {r['seed']}, {r['accounts']} accounts)")
        print(f"  {'':<24}{'with backstop':>18}{'without':>18}")
        for label, key in (("bad debt (USD)", "bad_debt_usd"), ("insurance fund draw", "insurance_fund_draw_usd"),
                           ("ADL haircut", "adl_haircut_usd"), ("slippage (USD)", "slippage_usd"),
                           ("fees (USD)", "fees_usd"), ("liquidations", "liquidations"),
                           ("capital efficiency", "capital_efficiency")):
            print(f"  {label:<24}{w[key]:>18,.2f}{wo[key]:>18,.2f}")
        print(f"  {'bankrupt accounts':<24}{len(w['bankrupt_accounts']):>18}{len(wo['bankrupt_accounts']):>18}")
        print(f"  accounts saved: {len(r['accounts_saved'])}")
        if "alternative" in r:
            a = r["alternative"]
            print(f"  alternative {a['params']}: bad debt {a['bad_debt_usd']:,.2f}, liquidations {a['liquidations']}")
    return 0
