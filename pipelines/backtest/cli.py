"""``backstop backtest --scenario NAME`` and ``backstop backtest --sweep T1,T2,...``."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from pipelines import arguments
from pipelines.backtest.run import compare, sweep
from pipelines.errors import UserError
from pipelines.scenarios import library


DEFAULT_PLOT = "frontier.png"
#: rows of the with/without table: label, result key, format
ROWS = (("bad debt (USD)", "bad_debt_usd", ",.2f"), ("insurance fund draw (USD)", "insurance_fund_draw_usd", ",.2f"),
        ("ADL haircut (USD)", "adl_haircut_usd", ",.2f"), ("slippage (USD)", "slippage_usd", ",.2f"),
        ("fees (USD)", "fees_usd", ",.2f"), ("liquidations", "liquidations", ",d"),
        ("capital efficiency", "capital_efficiency", ".3f"))


def register(subparsers: argparse._SubParsersAction) -> None:
    bt = subparsers.add_parser("backtest", help="a scenario with and without the backstop; threshold sweeps")
    bt.add_argument("--scenario", action="append", choices=library.names() + ["all"],
                    help="scenario name (repeatable; 'all' for every bundled scenario)")
    bt.add_argument("--seed", type=arguments.seed, help="random seed (default: each scenario's own)")
    bt.add_argument("--trigger", type=arguments.ratio,
                    help="also run the backstop at this margin-trigger ratio (MM / equity, above 0), e.g. 1.1")
    bt.add_argument("--sweep", metavar="T1,T2,...", type=arguments.ratios,
                    help="margin-trigger ratios to sweep (each above 0): draws the solvency-efficiency frontier")
    bt.add_argument("--plot", metavar="PNG", type=arguments.output_file,
                    help=f"frontier plot file (only with --sweep; default {DEFAULT_PLOT})")
    bt.add_argument("--json", action="store_true", help="machine-readable JSON")
    bt.add_argument("--jobs", metavar="N", type=arguments.positive_int,
                    help="worker processes for the runs (default: the usable cores; 1: in this process)")
    bt.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    bt.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    jobs = args.jobs or len(os.sched_getaffinity(0))  # by default the cores this process may use
    names = args.scenario or [library.DEFAULT]
    if "all" in names:
        names = library.names()
    scenarios = [library.get(name) for name in names]
    progress = False if args.no_progress else None
    if args.plot and not args.sweep:
        raise UserError("--plot draws the frontier of a --sweep; give --sweep T1,T2,... too")
    if args.sweep:
        from pipelines.backtest.plot import frontier_plot

        plot = Path(args.plot or DEFAULT_PLOT)
        curves = sweep(scenarios, args.sweep, args.seed, jobs=jobs, progress=progress)
        frontier_plot(curves, plot)
        if args.json:
            print(json.dumps({"plot": str(plot), "curves": curves}, indent=2))
        else:
            for name, points in curves.items():
                print(name)
                for p in points:
                    print(f"  {p['label']:<14} bad debt ${p['bad_debt_usd']:>14,.2f}   capital efficiency "
                          f"{p['capital_efficiency']:.3f}")
            print(f"frontier plot: {plot}")
        return 0
    params = None if args.trigger is None else {"margin_trigger_ratio": args.trigger}
    results = compare(scenarios, args.seed, params=params, jobs=jobs, progress=progress)
    if args.json:
        print(json.dumps(results if len(results) > 1 else results[0], indent=2))
        return 0
    for r in results:
        w, wo = r["with_backstop"], r["without_backstop"]
        print(f"{r['scenario']} (seed {r['seed']}, {r['accounts']} accounts)")
        print(f"  {'':<26}{'with backstop':>18}{'without':>18}")
        for label, key, fmt in ROWS:
            print(f"  {label:<26}{w[key]:>18{fmt}}{wo[key]:>18{fmt}}")
        bankrupt_with, bankrupt_without = len(w["bankrupt_accounts"]), len(wo["bankrupt_accounts"])
        print(f"  {'bankrupt accounts':<26}{bankrupt_with:>18,d}{bankrupt_without:>18,d}")
        print(f"  accounts saved: {len(r['accounts_saved']):,d}")
        if "alternative" in r:
            a = r["alternative"]
            print(f"  with {_params_text(a['params'])}: bad debt {a['bad_debt_usd']:,.2f} USD, "
                  f"liquidations {a['liquidations']:,d}")
    return 0


def _params_text(params: dict[str, float]) -> str:
    """``{"margin_trigger_ratio": 1.1}`` -> ``margin trigger ratio 1.1``."""
    return ", ".join(f"{name.replace('_', ' ')} {value:g}" for name, value in params.items())
