"""Liquidation planning in a crash: every distressed account planned together vs one at a time.

    .venv/bin/python bench/bench_liquidation.py [--quick] [--accounts N] [--out F]

The profile of the in-process engine on a crash (bench/run.py's "profile" section) showed
the Greek-aware liquidation planner, run account by account, as most of its time. The engine
now plans every account a revaluation will liquidate in one vectorised call
(``plan_liquidations``). This measures both on the same book and targets, same run: the
synthetic book of ``bench/synthetic.py`` after a 6 % fall, every account above its target ratio
planned back to it. The plans are checked equal before any figure is reported.
Writes bench/results/liquidation.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from synthetic import book_events, market_events  # noqa: E402

from pipelines.engine.engine import Engine  # noqa: E402
from pipelines.policy.signing import SigningKey  # noqa: E402
from pipelines.risk.liquidation_order import plan_liquidation, plan_liquidations  # noqa: E402


def crash_book(accounts: int):  # noqa: ANN201
    """The engine's book and market after the synthetic fall, revalued."""
    engine = Engine(SigningKey("bench", b"bench-signing-key-000"))
    for i, (record, value) in enumerate(book_events(accounts, 1_000) + list(market_events(10))):
        engine.on_event(record, value, str(i))
    revalued = engine.revaluation()
    return engine, revalued.book, revalued.risk, revalued.conditions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 accounts")
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--out", default=str(Path(__file__).with_name("results") / "liquidation.json"))
    args = parser.parse_args()
    engine, book, risk, conditions = crash_book(2_000 if args.quick else args.accounts)
    targets = {i: engine.ladder.target_ratio_of(float(risk.maintenance[i]), float(risk.initial[i]))
               for i in range(len(book.accounts))}
    distressed = [i for i in range(len(book.accounts)) if risk.margin_ratio[i] > targets[i]]
    kw = {"adaptive": engine.params.adaptive, "conditions": conditions}
    start = time.perf_counter()
    together = plan_liquidations(book, risk, distressed, [targets[i] for i in distressed], **kw)
    batch_s = time.perf_counter() - start
    start = time.perf_counter()
    alone = [plan_liquidation(book, risk, i, targets[i], **kw) for i in distressed]
    alone_s = time.perf_counter() - start
    if together != alone:
        raise SystemExit("plans differ between batched and one-at-a-time planning")
    result = {"benchmark": "liquidation planning", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "accounts": len(book.accounts), "distressed_accounts": len(distressed),
              "orders": sum(len(p.orders) for p in together),
              "together_plans_per_s": len(distressed) / batch_s, "alone_plans_per_s": len(distressed) / alone_s,
              "together_vs_alone": alone_s / batch_s}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{len(distressed):,} distressed of {len(book.accounts):,} accounts: together "
          f"{result['together_plans_per_s']:,.0f} plans/s, one at a time {result['alone_plans_per_s']:,.0f} plans/s "
          f"(x{result['together_vs_alone']:.1f}) -> {out}")


if __name__ == "__main__":
    main()
