#!/usr/bin/env python3
"""Risk-core throughput: option revaluations per second and whole-book scenario margin.

    .venv/bin/python bench/bench_risk.py [--quick]

1. Revaluations per second, on the same random inputs, in one run: Backstop's vectorised
   Black-76 (price only, and price + 4 Greeks), py_vollib_vectorized's ``vectorized_black``,
   and a QuantLib ``BlackCalculator`` loop (on a subset; the rate is per option). py_vollib_vectorized
   needs a small shim to compile under current numba (see ``py_vollib_vectorized_with_numba_fix``).
2. Scenario margin of 10,000 accounts x 20 positions over a 21-move x 3-vol grid (63 scenarios)
   with ``revalue_book`` (the stream workers' batch call), plus the default Deribit/Paradex grid
   and the adaptive add-on.

Pinned to one core (and BLAS threads set to 1): the targets are per core. Figures are the best
of ``--repeat`` runs. Writes bench/results/risk.json (``--quick`` writes nothing unless ``--out``).
Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipelines.risk.adaptive import AdaptiveParams, MarketConditions  # noqa: E402
from pipelines.risk.black76 import black76_greeks, black76_price  # noqa: E402
from pipelines.risk.book import Book, revalue_book  # noqa: E402
from pipelines.risk.instruments import Instrument, InstrumentTable, Kind, expiry_ms_of  # noqa: E402
from pipelines.risk.margin import MarginConfig, MarginParams  # noqa: E402
from pipelines.risk.market import MarketState, UnderlyingMarket  # noqa: E402

NOW_MS = 1_795_435_200_000  # 2026-11-23T12:00:00Z


def pin_one_core() -> int | None:
    try:
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return cpu
    except (AttributeError, OSError):
        return None


def best_of(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def option_inputs(n: int, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    s = rng.uniform(1_000.0, 100_000.0, n)
    t = rng.uniform(1 / 365, 2.0, n)
    vol = rng.uniform(0.2, 1.5, n)
    rate = rng.uniform(0.0, 0.1, n)
    k = s * np.exp(rng.uniform(-0.5, 0.5, n))
    return {"s": s, "k": k, "t": t, "vol": vol, "rate": rate, "call": rng.random(n) < 0.5}


def py_vollib_vectorized_with_numba_fix():
    """py_vollib_vectorized 0.1.1 does not compile with the installed numba and its dependencies:
    (1) two of its jitted functions (``black``, ``normalised_black_call``) call themselves and
    numba fails with "cannot type infer runaway recursion" (as in vollib/py_vollib#35); both
    recurse exactly once (in-the-money is mapped to out-of-the-money), so non-recursive copies
    with the same arithmetic are swapped in; (2) its helpers call Cody's ``norm_cdf`` /
    ``erfcx_cody``, now in the pure-Python ``cody_special`` package (and ``erfcx_cody`` is not
    even imported), so those functions are jitted in place and handed to the helpers. All
    before anything is compiled; the rest of the library (Jaeckel's "Let's be rational"
    normalised Black) runs unchanged, and its prices are checked against ours."""
    import importlib
    import inspect

    import numba
    import py_vollib_vectorized
    from py_vollib_vectorized import _model_calls as mc
    from py_vollib_vectorized.util import greeks_helpers as gh

    if getattr(mc, "_backstop_patched", False):
        return py_vollib_vectorized
    # (the package re-exports a function named erf_cody over its submodule: import by path)
    erf = importlib.import_module("cody_special.erf_cody")
    nd = importlib.import_module("cody_special.normaldistribution")
    for module in (erf, nd):
        if module is nd:
            nd.erfc_cody = erf.erfc_cody
        for name, fn in list(vars(module).items()):
            if inspect.isfunction(fn) and fn.__module__ == module.__name__:
                setattr(module, name, numba.njit(fn))
    gh.norm_cdf, gh.erfcx_cody = nd.norm_cdf, erf.erfcx_cody
    mc.norm_cdf = nd.norm_cdf
    intrinsic_call = mc._normalised_intrinsic_call
    asymptotic = mc._asymptotic_expansion_of_normalized_black_call
    small_t = mc._small_t_expansion_of_normalized_black_call
    by_cdf, by_erfcx = mc._normalized_black_call_using_norm_cdf, mc._normalised_black_call_using_erfcx
    cutoff, eta = mc.DENORMALIZATION_CUTOFF, mc.asymptotic_expansion_accuracy_threshold
    tau = mc.small_t_expansion_of_normalized_black_threshold

    @numba.njit
    def normalised_black_call(x, s):
        extra = 0.0
        if x > 0:
            extra = intrinsic_call(x)
            x = -x
        ax = np.abs(x)
        if s <= ax * cutoff:
            return extra + intrinsic_call(x)
        if x < s * eta and 0.5 * s * s + x < s * (tau + eta):
            return extra + asymptotic(x / s, 0.5 * s)
        if 0.5 * s < tau:
            return extra + small_t(x / s, 0.5 * s)
        if x + 0.5 * s * s > s * 0.85:
            return extra + by_cdf(x, s)
        return extra + by_erfcx(x / s, 0.5 * s)

    mc.normalised_black_call = normalised_black_call
    normalised_black = mc.normalised_black

    @numba.njit
    def black(F, K, sigma, T, q):
        intrinsic = np.abs(np.maximum((K - F if q < 0 else F - K), 0.0))
        if q * (F - K) > 0:
            q = -q
            inner = np.abs(np.maximum((K - F if q < 0 else F - K), 0.0))
            return intrinsic + np.maximum(inner, (np.sqrt(F) * np.sqrt(K)) * normalised_black(np.log(F / K),
                                                                                          sigma * np.sqrt(T), q))
        return np.maximum(intrinsic, (np.sqrt(F) * np.sqrt(K)) * normalised_black(np.log(F / K), sigma * np.sqrt(T), q))

    mc.black = black
    mc._backstop_patched = True
    return py_vollib_vectorized


def bench_revaluation(n: int, n_quantlib: int, repeat: int) -> dict[str, object]:
    import QuantLib as ql

    pvv = py_vollib_vectorized_with_numba_fix()
    o = option_inputs(n)
    flags = np.where(o["call"], "c", "p")

    def py_vollib() -> np.ndarray:  # Black-Scholes on the index with rate r == Black-76 on F = S e^{rT}
        return np.asarray(pvv.vectorized_black_scholes(flags, o["s"], o["k"], o["t"], o["rate"], o["vol"],
                                                       return_as="numpy"), dtype=np.float64).ravel()

    theirs = py_vollib()  # also compiles: JIT time is not counted
    ours_price = best_of(lambda: black76_price(o["s"], o["k"], o["t"], o["vol"], o["rate"], o["call"]), repeat)
    ours_greeks = best_of(lambda: black76_greeks(o["s"], o["k"], o["t"], o["vol"], o["rate"], o["call"]), repeat)
    pv = best_of(py_vollib, repeat)
    ours = black76_price(o["s"], o["k"], o["t"], o["vol"], o["rate"], o["call"])
    m = n_quantlib
    call, put = ql.Option.Call, ql.Option.Put

    def quantlib_loop() -> list[float]:
        out = []
        for s, k, t, v, r, c in zip(o["s"][:m], o["k"][:m], o["t"][:m], o["vol"][:m], o["rate"][:m], o["call"][:m]):
            df = float(np.exp(-r * t))
            calc = ql.BlackCalculator(ql.PlainVanillaPayoff(call if c else put, float(k)), float(s) / df,
                                      float(v * np.sqrt(t)), df)
            out.append(calc.value())
        return out

    ql_time = best_of(quantlib_loop, max(1, repeat // 2))
    ql_prices = np.array(quantlib_loop())
    rates = {"backstop_price": n / ours_price, "backstop_price_and_greeks": n / ours_greeks,
             "py_vollib_vectorized_price": n / pv, "quantlib_loop_price": m / ql_time}
    return {
        "options": n, "quantlib_options": m,
        "per_second": rates,
        "ratios": {"backstop_vs_py_vollib_vectorized": rates["backstop_price"] / rates["py_vollib_vectorized_price"],
                   "backstop_vs_quantlib_loop": rates["backstop_price"] / rates["quantlib_loop_price"],
                   "backstop_greeks_vs_quantlib_loop_price": rates["backstop_price_and_greeks"]
                   / rates["quantlib_loop_price"]},
        # Differences relative to the price, for prices above 1e-6 of the index (below that, the
        # libraries' normal-CDF tails differ in relative terms while the USD amounts are nil).
        "max_rel_diff_vs_py_vollib_vectorized": rel_diff(ours, theirs, o["s"]),
        "max_rel_diff_vs_quantlib": rel_diff(ours[:m], ql_prices, o["s"][:m]),
        "target_per_second": 1_000_000,
    }


def rel_diff(ours: np.ndarray, ref: np.ndarray, index: np.ndarray) -> float:
    keep = ref > 1e-6 * index
    return float(np.max(np.abs(ours[keep] - ref[keep]) / ref[keep]))


def universe() -> InstrumentTable:
    """BTC and ETH: perpetual, 8 futures and 8 expiries x 21 strikes x call/put each (692 instruments)."""
    expiries = ["27NOV26", "4DEC26", "11DEC26", "25DEC26", "29JAN27", "26FEB27", "26MAR27", "25JUN27"]
    items: list[Instrument] = []
    for und, spot in (("BTC", 60_000.0), ("ETH", 2_400.0)):
        items.append(Instrument(f"{und}-PERPETUAL", Kind.PERPETUAL, und))
        for e in expiries:
            items.append(Instrument(f"{und}-{e}", Kind.FUTURE, und, expiry_ms_of(e)))
            for k in np.round(spot * np.linspace(0.6, 1.6, 21), -1 if und == "ETH" else -3):
                for c in (True, False):
                    items.append(Instrument(f"{und}-{e}-{int(k)}-{'C' if c else 'P'}", Kind.OPTION, und,
                                            expiry_ms_of(e), float(k), c))
    return InstrumentTable.of(items)


def random_book(table: InstrumentTable, accounts: int, per_account: int, seed: int = 2) -> tuple[dict, Book]:
    rng = np.random.default_rng(seed)
    n = accounts * per_account
    acc = np.repeat(np.arange(accounts), per_account)
    ins = rng.integers(0, len(table), n)
    qty = np.round(rng.normal(0, 5, n), 1)
    avg = np.full(n, np.nan)
    collateral = rng.uniform(5e4, 5e6, accounts)
    args = dict(accounts=[f"acct-{a}" for a in range(accounts)], collateral=collateral, instruments=table,
                account_idx=acc, instrument_idx=ins, qty=qty, avg_price=avg)
    return args, Book.from_arrays(**args)


def bench_book(accounts: int, per_account: int, repeat: int) -> dict[str, object]:
    table = universe()
    market = MarketState(NOW_MS, {"BTC": UnderlyingMarket(60_000.0, 0.55, 0.0), "ETH": UnderlyingMarket(2_400.0, 0.7)})
    args, book = random_book(table, accounts, per_account)
    grid_21x3 = MarginConfig(MarginParams(moves=tuple(np.round(np.linspace(-0.2, 0.2, 21), 4)), extended=()))
    build = best_of(lambda: Book.from_arrays(**args), repeat)
    t_21x3 = best_of(lambda: revalue_book(book, market, grid_21x3), repeat)
    t_default = best_of(lambda: revalue_book(book, market), repeat)
    cond = MarketConditions({"BTC": 0.8, "ETH": 0.9}, {"BTC": 5e6, "ETH": 2e6})
    t_adaptive = best_of(lambda: revalue_book(book, market, grid_21x3, AdaptiveParams(), cond), repeat)
    risk = revalue_book(book, market, grid_21x3)
    return {
        "accounts": accounts, "positions_per_account": per_account, "instruments": len(table),
        "scenarios_21x3": int(risk.grid.count.max()),
        "seconds": {"book_build": build, "margin_21x3": t_21x3, "margin_default_grid_27_plus_8": t_default,
                    "margin_21x3_adaptive": t_adaptive, "build_plus_margin_21x3": build + t_21x3},
        "accounts_per_second_21x3": accounts / t_21x3,
        "position_scenario_revaluations_per_second_21x3": accounts * per_account * 63 / t_21x3,
        "liquidatable_accounts": int(risk.liquidatable.sum()),
        "target_seconds": 1.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out",
                        help="results file (default bench/results/risk.json; --quick writes none unless given)")
    args = parser.parse_args()
    cpu = pin_one_core()
    n, n_ql, accounts = (100_000, 5_000, 1_000) if args.quick else (1_000_000, 50_000, 10_000)
    repeat = 2 if args.quick else args.repeat
    reval = bench_revaluation(n, n_ql, repeat)
    book = bench_book(accounts, 20, repeat)
    rates = reval["per_second"]
    print(f"one core (cpu {cpu}), python {platform.python_version()}, numpy {np.__version__}"
          + ("  [--quick]" if args.quick else ""))
    print(f"option revaluations per second ({n:,} options; QuantLib on {n_ql:,}):")
    for name, rate in rates.items():
        print(f"  {name:<28}{rate:>16,.0f} /s")
    for name, ratio in reval["ratios"].items():
        print(f"  ratio {name:<40}{ratio:>8.1f}x")
    print(f"  max rel diff vs py_vollib_vectorized {reval['max_rel_diff_vs_py_vollib_vectorized']:.1e}, "
          f"max rel diff vs QuantLib {reval['max_rel_diff_vs_quantlib']:.1e}")
    s = book["seconds"]
    print(f"whole-book margin: {accounts:,} accounts x 20 positions, {book['instruments']} instruments:")
    print(f"  21 x 3 grid (63 scenarios)      {s['margin_21x3']:.3f} s   (+ book build {s['book_build']:.3f} s)")
    print(f"  default grid (27 + 8 extended)  {s['margin_default_grid_27_plus_8']:.3f} s")
    print(f"  21 x 3 grid + adaptive add-on   {s['margin_21x3_adaptive']:.3f} s")
    print(f"  targets: >= 1,000,000 revaluations/s -> {rates['backstop_price']:,.0f} "
          f"({'met' if rates['backstop_price'] >= 1e6 else 'MISSED'}); margin run < 1 s -> "
          f"{s['build_plus_margin_21x3']:.3f} s incl. build ({'met' if s['build_plus_margin_21x3'] < 1 else 'MISSED'})")
    result = {"quick": args.quick, "cpu": cpu, "python": platform.python_version(), "numpy": np.__version__,
              "machine": platform.machine(), "revaluation": reval, "book_margin": book}
    if args.quick and not args.out:
        print("--quick: results not written")
        return 0
    out = Path(args.out or REPO / "bench" / "results" / "risk.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
