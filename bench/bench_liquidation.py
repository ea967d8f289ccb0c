"""Liquidation planning in a crash: every distressed account planned together vs one at a time,
and the compiled search (``kernels.planner``) against its numpy reference.

    .venv/bin/python bench/bench_liquidation.py [--quick] [--accounts N] [--repeats N] [--out F]

The profile of the in-process engine on a crash (bench/run.py's "profile" section) showed
the Greek-aware liquidation planner, run account by account, as most of its time. The engine
now plans every account a revaluation will liquidate in one vectorised call
(``plan_liquidations``). This measures both on the same book and targets, same run: the
synthetic book of ``bench/synthetic.py`` after a 6 % fall, every account above its target ratio
planned back to it. ``together_*`` and ``alone_*`` time the numpy reference (``compiled=False``),
``compiled_*`` the same calls compiled.

``may_2021_*``: the planner calls the engine makes replaying the may-2021 scenario (captured
from the replay, then timed one by one, numpy and compiled in turn; each call's best of
``--repeats``), per call in microseconds. ``*_search_us_per_call`` time the search without the
Python around it: the numpy reference's ``_greedy_search`` on inputs marshalled beforehand, the
compiled path's one kernel call (``planner._plan_batch``: legs, tables, search and merged
orders). The plans are checked equal before any figure is reported. Writes bench/results/liquidation.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository root

import pipelines.engine.engine as engine_module
from bench.synthetic import book_events, market_events
from pipelines.engine.engine import Engine
from pipelines.policy.signing import SigningKey
from pipelines.replay.inprocess import load, replay_dicts
from pipelines.risk import liquidation_order
from pipelines.risk.book import Book, BookRisk
from pipelines.risk.kernels import planner
from pipelines.risk.liquidation_order import LiquidationParams, LiquidationPlan, plan_liquidation, plan_liquidations
from pipelines.scenarios import library
from pipelines.scenarios.generate import generate, write_recording


def crash_book(accounts: int):
    """The engine's book and market after the synthetic fall, revalued."""
    engine = Engine(SigningKey("bench", b"bench-signing-key-000"))
    for i, (record, value) in enumerate(book_events(accounts, 1_000) + list(market_events(10))):
        engine.on_event(record, value, str(i))
    revalued = engine.revaluation()
    return engine, revalued.book, revalued.risk, revalued.conditions


def replay_calls(scenario: str) -> list[tuple]:
    """(book, risk, accounts, targets, keyword arguments) of every planner call the engine makes
    replaying ``scenario``, captured by wrapping the engine's three planner entry points."""
    calls: list[tuple] = []
    many, one, rounds = engine_module.plan_liquidations, engine_module.plan_liquidation, engine_module.plan_rounds

    def capture_many(book: Book, risk: BookRisk, accounts: list[int], targets: list[float],
                     **kw: object) -> list[LiquidationPlan]:
        calls.append((book, risk, list(accounts), list(targets), kw))
        return many(book, risk, accounts, targets, **kw)

    def capture_one(book: Book, risk: BookRisk, account: int, target: float, **kw: object) -> LiquidationPlan:
        calls.append((book, risk, [account], [target], kw))
        return one(book, risk, account, target, **kw)

    def capture_rounds(book: Book, risk: BookRisk, accounts: list[int], targets: list[float], check: object,
                       adaptive: object, conditions: object) -> tuple:
        calls.append((book, risk, list(accounts), list(targets), {"adaptive": adaptive, "conditions": conditions}))
        return rounds(book, risk, accounts, targets, check, adaptive, conditions)

    path = Path(tempfile.mkdtemp()) / "rec.avro"
    write_recording(generate(library.get(scenario)), path)
    engine_module.plan_liquidations, engine_module.plan_liquidation = capture_many, capture_one
    engine_module.plan_rounds = capture_rounds
    try:
        replay_dicts(list(load(path)))
    finally:
        engine_module.plan_liquidations, engine_module.plan_liquidation, engine_module.plan_rounds = many, one, rounds
    return [(book, risk, accounts, targets, {k: v for k, v in kw.items() if k != "compiled"})
            for book, risk, accounts, targets, kw in calls]


def best_of(repeats: int, run: Callable[[], object]) -> float:
    """The fastest of ``repeats`` runs, seconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def searches(book: Book, risk: BookRisk, accounts: list[int], targets: list[float],
             kw: dict) -> tuple[Callable[[], object], Callable[[], object]]:
    """The greedy search of one call alone, (numpy, compiled), on inputs marshalled beforehand."""
    lo = liquidation_order
    params = LiquidationParams()
    picked, goals = lo._checked_batch(accounts, targets, len(book.accounts))
    slip = lo.expected_slippage_per_unit(book, risk, params)
    legs = lo._legs_of(book, picked, params.chunk_fraction)
    rv, depth = kw["conditions"].arrays(book.instruments.underlyings)
    equity = risk.equity[picked].astype(float)
    pricing = lo._Pricing.of(risk, book, legs, slip, rv, depth, kw["adaptive"])
    slippage = (params.option_half_spread_vol_points, params.option_min_slippage_frac, params.linear_half_spread)
    compiled_inputs = planner.batch_inputs(planner.resident(book, risk.grid, risk.params), risk, accounts, targets,
                                           params.chunk_fraction, slippage, None, rv, depth, kw["adaptive"],
                                           params.max_steps)
    return (lambda: lo._greedy_search(legs, pricing, equity, goals, params.max_steps),
            lambda: planner._plan_batch(*compiled_inputs))


def replay_figures(scenario: str, repeats: int) -> dict[str, float]:
    """Per call, numpy against compiled, on the planner calls of a scenario's replay."""
    calls = replay_calls(scenario)
    numpy_s = compiled_s = numpy_search_s = compiled_search_s = 0.0
    for book, risk, accounts, targets, kw in calls:
        reference = plan_liquidations(book, risk, accounts, targets, compiled=False, **kw)
        if plan_liquidations(book, risk, accounts, targets, compiled=True, **kw) != reference:
            raise SystemExit(f"{scenario}: compiled and numpy plans differ")
        numpy_s += best_of(repeats, partial(plan_liquidations, book, risk, accounts, targets, compiled=False, **kw))
        compiled_s += best_of(repeats, partial(plan_liquidations, book, risk, accounts, targets, compiled=True, **kw))
        numpy_search, compiled_search = searches(book, risk, accounts, targets, kw)
        numpy_search_s += best_of(repeats, numpy_search)
        compiled_search_s += best_of(repeats, compiled_search)
    n = len(calls)
    return {"may_2021_calls": n, "may_2021_accounts_planned": sum(len(c[2]) for c in calls),
            "may_2021_numpy_us_per_call": numpy_s / n * 1e6, "may_2021_compiled_us_per_call": compiled_s / n * 1e6,
            "may_2021_compiled_vs_numpy": numpy_s / compiled_s,
            "may_2021_numpy_search_us_per_call": numpy_search_s / n * 1e6,
            "may_2021_compiled_search_us_per_call": compiled_search_s / n * 1e6,
            "may_2021_search_compiled_vs_numpy": numpy_search_s / compiled_search_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 accounts")
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, help="runs of each may-2021 call, its best counts (default 5, quick 1)")
    parser.add_argument("--out", default=str(Path(__file__).with_name("results") / "liquidation.json"))
    args = parser.parse_args()
    repeats = (1 if args.quick else 5) if args.repeats is None else args.repeats
    if repeats < 1:
        raise SystemExit("bench_liquidation: --repeats must be at least 1")
    planner.warm()
    engine, book, risk, conditions = crash_book(2_000 if args.quick else args.accounts)
    targets = {i: engine.ladder.target_ratio_of(float(risk.maintenance[i]), float(risk.initial[i]))
               for i in range(len(book.accounts))}
    distressed = [i for i in range(len(book.accounts)) if risk.margin_ratio[i] > targets[i]]
    figures, plans = {}, {}
    for compiled in (False, True):
        kw = {"adaptive": engine.params.adaptive, "conditions": conditions, "compiled": compiled}
        start = time.perf_counter()
        together = plan_liquidations(book, risk, distressed, [targets[i] for i in distressed], **kw)
        figures["together", compiled] = time.perf_counter() - start
        start = time.perf_counter()
        alone = [plan_liquidation(book, risk, i, targets[i], **kw) for i in distressed]
        figures["alone", compiled] = time.perf_counter() - start
        if together != alone:
            raise SystemExit("plans differ between batched and one-at-a-time planning")
        plans[compiled] = together
    if plans[True] != plans[False]:
        raise SystemExit("compiled and numpy plans differ")
    batch_s, alone_s = figures["together", False], figures["alone", False]
    result = {"benchmark": "liquidation planning", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "accounts": len(book.accounts), "distressed_accounts": len(distressed),
              "orders": sum(len(p.orders) for p in together),
              "together_plans_per_s": len(distressed) / batch_s, "alone_plans_per_s": len(distressed) / alone_s,
              "together_vs_alone": alone_s / batch_s,
              "compiled_together_plans_per_s": len(distressed) / figures["together", True],
              "compiled_alone_plans_per_s": len(distressed) / figures["alone", True],
              "compiled_vs_numpy_together": batch_s / figures["together", True],
              "compiled_vs_numpy_alone": alone_s / figures["alone", True],
              **replay_figures("may-2021", repeats)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{len(distressed):,} distressed of {len(book.accounts):,} accounts: together "
          f"{result['together_plans_per_s']:,.0f} plans/s, one at a time {result['alone_plans_per_s']:,.0f} plans/s "
          f"(x{result['together_vs_alone']:.1f}) -> {out}")
    print(f"compiled: together {result['compiled_together_plans_per_s']:,.0f} plans/s "
          f"(x{result['compiled_vs_numpy_together']:.1f} numpy), one at a time "
          f"{result['compiled_alone_plans_per_s']:,.0f} plans/s (x{result['compiled_vs_numpy_alone']:.1f} numpy)")
    print(f"may-2021, {result['may_2021_calls']} planner calls: numpy {result['may_2021_numpy_us_per_call']:,.0f} us, "
          f"compiled {result['may_2021_compiled_us_per_call']:,.0f} us per call "
          f"(x{result['may_2021_compiled_vs_numpy']:.1f}); search alone numpy "
          f"{result['may_2021_numpy_search_us_per_call']:,.0f} us, compiled "
          f"{result['may_2021_compiled_search_us_per_call']:,.1f} us "
          f"(x{result['may_2021_search_compiled_vs_numpy']:.0f})")


if __name__ == "__main__":
    main()
