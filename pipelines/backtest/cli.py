"""``backstop backtest --scenario NAME``, ``--sweep T1,T2,...`` and ``--calibrate --bad-debt-budget B``."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from pipelines import arguments
from pipelines.backtest import calibrate
from pipelines.backtest.run import compare, sweep
from pipelines.errors import UserError
from pipelines.scenarios import library
from pipelines.scenarios.library import Scenario

DEFAULT_PLOT = "frontier.png"
DEFAULT_CONFIG = "calibrated.toml"
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
                    help=f"frontier plot file (with --sweep, default {DEFAULT_PLOT}; with --calibrate, the chosen "
                         "trigger ringed)")
    bt.add_argument("--calibrate", action="store_true",
                    help="choose the most capital-efficient trigger of the sweep (--sweep, default "
                         f"{','.join(f'{t:g}' for t in calibrate.DEFAULT_TRIGGERS)}) within --bad-debt-budget on every "
                         "calibration scenario (default --scenario all) and write it as a settings file (--out)")
    bt.add_argument("--bad-debt-budget", metavar="BUDGET", type=calibrate.budget,
                    help="with --calibrate: most bad debt allowed per scenario, 0, USD (25000) or a share of the "
                         "scenario's open interest (0.5%%oi)")
    bt.add_argument("--held-out", metavar="NAME,...|none", type=held_out_names,
                    help="with --calibrate: scenarios left out of the choice and reported apart (default: the most "
                         "recent quarter by incident date)")
    bt.add_argument("--out", metavar="TOML", type=arguments.output_file,
                    help=f"with --calibrate: the settings file to write (default {DEFAULT_CONFIG}); "
                         "run backstop --config FILE worker")
    bt.add_argument("--json", action="store_true", help="machine-readable JSON")
    bt.add_argument("--jobs", metavar="N", type=arguments.positive_int,
                    help="worker processes for the runs (default: the usable cores; 1: in this process)")
    bt.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    bt.set_defaults(func=run)


def held_out_names(text: str) -> list[str]:
    """An argparse ``type``: comma-separated scenario names, or ``none``."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if items == ["none"]:
        return []
    unknown = [item for item in items if item not in library.names()]
    if not items or unknown:
        raise argparse.ArgumentTypeError(f"expected scenario names ({', '.join(library.names())}) or none, "
                                         f"got {text!r}")
    return items


def _check_flags(args: argparse.Namespace) -> None:
    """Flags that only go with others: a one-line ``UserError`` naming the missing one."""
    only_calibrate = [flag for flag, given in (("--bad-debt-budget", args.bad_debt_budget is not None),
                                               ("--held-out", args.held_out is not None), ("--out", args.out))
                      if given and not args.calibrate]
    if only_calibrate:
        raise UserError(f"{only_calibrate[0]} goes with --calibrate")
    if args.calibrate and args.bad_debt_budget is None:
        raise UserError("--calibrate needs --bad-debt-budget (0, USD, or a share of open interest such as 0.5%oi)")
    if args.calibrate and args.trigger is not None:
        raise UserError("--calibrate chooses the trigger; give the triggers to try with --sweep, not --trigger")
    if args.plot and not (args.sweep or args.calibrate):
        raise UserError("--plot draws the frontier of a --sweep; give --sweep T1,T2,... too")


def run(args: argparse.Namespace) -> int:
    _check_flags(args)
    jobs = args.jobs or len(os.sched_getaffinity(0))  # by default the cores this process may use
    names = args.scenario or (["all"] if args.calibrate else [library.DEFAULT])
    if "all" in names:
        names = library.names()
    scenarios = [library.get(name) for name in dict.fromkeys(names)]
    progress = False if args.no_progress else None
    if args.calibrate:
        return run_calibrate(args, scenarios, jobs, progress)
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


def run_calibrate(args: argparse.Namespace, scenarios: list[Scenario], jobs: int, progress: bool | None) -> int:
    """``--calibrate``: choose, write the settings file (and the plot), report."""
    held_out = calibrate.default_held_out(scenarios) if args.held_out is None else args.held_out
    triggers = args.sweep or list(calibrate.DEFAULT_TRIGGERS)
    calibrate.check_triggers(triggers)
    result = calibrate.calibrate(scenarios, held_out, triggers, args.bad_debt_budget, args.seed, jobs=jobs,
                                 progress=progress)
    summary = result.summary()
    out = calibrate.write_config(args.out or DEFAULT_CONFIG, summary["engine"], _config_comments(result, args.seed))
    plot = None
    if args.plot:
        from pipelines.backtest.plot import frontier_plot

        held = {f"{name} (held out)": points for name, points in result.held_out.items()}
        plot = str(frontier_plot({**result.calibration, **held}, args.plot, chosen=result.choice.trigger))
    if args.json:
        curves = {**result.calibration, **result.held_out}
        print(json.dumps({**summary, "config": str(out), "plot": plot, "curves": curves}, indent=2))
        return 0
    print(f"calibrated: trigger {result.choice.trigger:g}, mean capital efficiency "
          f"{result.choice.mean_capital_efficiency:.3f} over {len(result.calibration)} calibration scenario(s), "
          f"bad-debt budget {result.budget}")
    if len(set(triggers)) > 1 and result.choice.trigger == max(triggers):
        print("  (the highest trigger swept: a --sweep reaching higher may find a more efficient point)")
    _print_rows("calibration scenarios", summary["calibration"])
    if summary["held_out"]:
        _print_rows(f"held out (at trigger {result.choice.trigger:g}; not used to choose)", summary["held_out"])
    print(f"settings: {out} (backstop --config {out} worker)")
    if plot:
        print(f"frontier plot: {plot}")
    return 0


def _print_rows(title: str, rows: list[dict]) -> None:
    print(title)
    print(f"  {'scenario':<22}{'bad debt (USD)':>16}{'budget (USD)':>16}{'capital efficiency':>20}")
    for r in rows:
        mark = "" if r["within_budget"] else "  over budget"
        print(f"  {r['scenario']:<22}{r['bad_debt_usd']:>16,.2f}{r['budget_usd']:>16,.2f}"
              f"{r['capital_efficiency']:>20.3f}{mark}")


def _config_comments(result: calibrate.Calibration, seed: int | None) -> list[str]:
    """The settings file's header: how its values were chosen."""
    seeds = "each scenario's own seed" if seed is None else f"seed {seed}"
    return [f"backstop backtest --calibrate: trigger {result.choice.trigger:g} is the most capital-efficient "
            f"swept trigger (mean {result.choice.mean_capital_efficiency:.3f})",
            f"with bad debt within {result.budget} on {', '.join(result.calibration)} ({seeds})",
            f"held out: {', '.join(result.held_out) or 'none'}"]
