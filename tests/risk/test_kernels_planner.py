"""The compiled greedy liquidation search against its numpy reference: the same plans, to the bit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.errors import UserError
from pipelines.risk.adaptive import AdaptiveParams, MarketConditions
from pipelines.risk.book import Book, BookRisk, revalue_book
from pipelines.risk.instruments import InstrumentTable, parse_instrument
from pipelines.risk.kernels import planner
from pipelines.risk.liquidation_order import LiquidationParams, LiquidationPlan, plan_liquidations
from pipelines.risk.market import MarketState, UnderlyingMarket
from tests.kit.markets import NOW_MS

INDEX = {"BTC": 60_000.0, "ETH": 2_400.0, "SOL": 150.0}
EXPIRIES = ("27NOV26", "25DEC26", "26MAR27")


@pytest.fixture(scope="module", autouse=True)
def warmed() -> None:
    planner.warm()


def instrument_names(underlying: str) -> list[str]:
    """A perpetual, a dated future and calls and puts around the index on three expiries."""
    index = INDEX[underlying]
    strikes = [f"{index * m:.0f}" for m in (0.7, 0.9, 1.0, 1.1, 1.4)]
    return [f"{underlying}-PERPETUAL", f"{underlying}-{EXPIRIES[1]}"] + [
        f"{underlying}-{e}-{k}-{kind}" for e in EXPIRIES for k in strikes for kind in "CP"]


@st.composite
def crash_books(draw: st.DrawFn) -> tuple[Book, BookRisk, dict]:
    """A random book of options and futures on one to three underlyings, revalued (with or
    without the adaptive add-on), and a random batch of its accounts with random targets."""
    underlyings = draw(st.permutations(sorted(INDEX)))[:draw(st.integers(1, 3))]
    names = [n for u in underlyings for n in instrument_names(u)]
    chosen = draw(st.lists(st.sampled_from(names), min_size=2 * len(underlyings), max_size=14, unique=True))
    sizes = draw(st.lists(st.sampled_from([1.0, 0.1, 10.0]), min_size=len(chosen), max_size=len(chosen)))
    table = InstrumentTable.of(parse_instrument(n, s) for n, s in zip(chosen, sizes))
    n_accounts = draw(st.integers(1, 6))
    qty = st.one_of(st.integers(-100, 100).map(float), st.floats(-100, 100),
                    st.sampled_from([0.0, 1e-13, -3e-12, 1e5]))
    legs = st.lists(st.tuples(st.integers(0, len(chosen) - 1), qty), min_size=0, max_size=8)
    positions = [(a, k, q) for a in range(n_accounts) for k, q in draw(legs)]
    collateral = draw(st.lists(st.integers(-10, 400).map(lambda k: k * 1_000.0), min_size=n_accounts,
                               max_size=n_accounts))
    book = Book.from_arrays([f"a{i}" for i in range(n_accounts)], np.array(collateral), table,
                            np.array([p[0] for p in positions], dtype=np.int64),
                            np.array([p[1] for p in positions], dtype=np.int64), np.array([p[2] for p in positions]))
    market = MarketState(NOW_MS, {u: UnderlyingMarket(INDEX[u] * draw(st.floats(0.6, 1.2)), draw(st.floats(0.2, 1.5)))
                                  for u in underlyings})
    adaptive = draw(st.sampled_from([None, AdaptiveParams(), AdaptiveParams(participation=0.0, max_multiplier=1.5)]))
    vol_or_missing = st.one_of(st.floats(0.0, 3.0), st.just(float("nan")))
    depth_or_missing = st.one_of(st.floats(1e4, 1e8), st.sampled_from([0.0, float("inf"), float("nan")]))
    conditions = MarketConditions({u: draw(vol_or_missing) for u in underlyings},
                                  {u: draw(depth_or_missing) for u in underlyings})
    risk = revalue_book(book, market, adaptive=adaptive, conditions=conditions)
    picked = draw(st.permutations(range(n_accounts)))[:draw(st.integers(1, n_accounts))]
    targets = draw(st.lists(st.floats(0.05, 1.0), min_size=len(picked), max_size=len(picked)))
    params = LiquidationParams(chunk_fraction=draw(st.sampled_from([0.2, 1.0, 0.05, 0.33])),
                               max_steps=draw(st.sampled_from([10_000, 1, 3])))
    return book, risk, {"accounts": list(picked), "target_ratios": targets, "params": params, "adaptive": adaptive,
                        "conditions": conditions}


def both(book: Book, risk: BookRisk, **kw: object) -> tuple[list[LiquidationPlan], list[LiquidationPlan]]:
    return plan_liquidations(book, risk, compiled=True, **kw), plan_liquidations(book, risk, compiled=False, **kw)


def assert_same_bits(compiled: list[LiquidationPlan], reference: list[LiquidationPlan]) -> None:
    """Equal plans of the same types whose every float is the same float: ``repr`` tells -0.0 from
    0.0, which ``==`` does not."""
    assert compiled == reference
    assert repr(compiled) == repr(reference)
    assert [type(order) for p in compiled for order in p.orders] == [type(o) for p in reference for o in p.orders]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(crash_books())
def test_compiled_plans_equal_the_numpy_plans_on_random_books(case: tuple[Book, BookRisk, dict]) -> None:
    book, risk, kw = case
    assert_same_bits(*both(book, risk, **kw))


def crash(n_accounts: int, legs: int) -> tuple[Book, BookRisk, MarketConditions]:
    """Short-gamma accounts over BTC and ETH options and perpetuals after a fall, under-collateralised."""
    rng = np.random.default_rng(7)
    names = instrument_names("BTC") + instrument_names("ETH")
    table = InstrumentTable.parse(names)
    account = np.repeat(np.arange(n_accounts), legs)
    instrument = np.concatenate([rng.choice(len(names), legs, replace=False) for _ in range(n_accounts)])
    qty = -np.abs(rng.normal(0, 30, len(account)))
    book = Book.from_arrays([f"a{i}" for i in range(n_accounts)], rng.uniform(2e4, 2e5, n_accounts), table, account,
                            instrument, qty)
    market = MarketState(NOW_MS, {"BTC": UnderlyingMarket(48_000.0, 0.9), "ETH": UnderlyingMarket(1_900.0, 1.1)})
    conditions = MarketConditions({"BTC": 1.2}, {"BTC": 3e6, "ETH": 5e5})
    return book, revalue_book(book, market, adaptive=AdaptiveParams(), conditions=conditions), conditions


def test_long_searches_with_small_chunks_still_match() -> None:
    """Small chunks make hundreds of steps, merged into orders in the kernel as ``_plans_of``
    merges them in the reference, and more orders than the kernel's first order table holds."""
    book, risk, conditions = crash(8, 6)
    kw = {"accounts": list(range(8)), "target_ratios": [0.01] * 8, "params": LiquidationParams(chunk_fraction=0.01),
          "adaptive": AdaptiveParams(), "conditions": conditions}
    compiled, reference = both(book, risk, **kw)
    assert_same_bits(compiled, reference)
    assert sum(len(p.orders) for p in compiled) > max(16, 4 * 8 * 6)


def test_orders_merge_consecutive_steps_on_one_instrument_within_one_account() -> None:
    """``_ordered``: a step on the account's last order's instrument adds to it (the margin,
    equity and ratio after it replace the order's); any other step opens an order, the table
    doubling when full; an account's first step never merges into the previous account's."""
    orders, n = np.empty((1, planner.ORDER_FIELDS)), 0
    orders, n = planner._ordered(orders, n, 0, 3, -1.0, 2.0, 50.0, 100.0)
    orders, n = planner._ordered(orders, n, 0, 3, -0.5, 1.0, 40.0, 99.0)
    orders, n = planner._ordered(orders, n, 0, 4, 2.0, 0.5, 30.0, 0.0)
    orders, n = planner._ordered(orders, n, 3, 4, 1.0, 0.25, 10.0, -1.0)
    assert n == 3 and orders.shape == (4, planner.ORDER_FIELDS)
    assert orders[:n].tolist() == [[3, -1.5, 3.0, 40.0, 99.0, 40.0 / 99.0], [4, 2.0, 0.5, 30.0, 0.0, np.inf],
                                   [4, 1.0, 0.25, 10.0, -1.0, np.inf]]


def test_warm_compiles_the_kernel_the_planner_calls() -> None:
    """After ``warm`` no liquidation compiles anything: every call reuses its one signature, also
    with the read-only scenario weights ``revalue_book`` hands out."""
    book, risk, conditions = crash(3, 4)
    assert not risk.grid.weight.flags.writeable
    plan_liquidations(book, risk, [0, 2], [0.5, 0.5], adaptive=AdaptiveParams(), conditions=conditions)
    plan_liquidations(book, risk, [1], [0.5], slippage_per_unit=np.ones(len(book.instruments), dtype=np.float32))
    plan_liquidations(book, risk, np.array([2, 1]), np.array([0.4, 0.5]))
    assert len(planner._plan_batch.signatures) == 1


def test_books_without_instruments_and_empty_batches_plan_nothing_in_both() -> None:
    book = Book.from_arrays(["flat", "bankrupt"], np.array([1e5, -5.0]), InstrumentTable.of([]),
                            np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0))
    risk = revalue_book(book, MarketState(NOW_MS, {"BTC": UnderlyingMarket(INDEX["BTC"], 0.5)}))
    compiled, reference = both(book, risk, accounts=[0, 1], target_ratios=[0.5, 0.5])
    assert compiled == reference
    assert [(p.orders, p.reached, p.maintenance_after, p.equity_after) for p in compiled] == [
        ((), True, 0.0, 1e5), ((), True, 0.0, -5.0)]
    assert both(book, risk, accounts=[], target_ratios=[]) == ([], [])


@pytest.mark.parametrize(("accounts", "targets", "slippage", "error"), [
    ([0, 1], [0.5, float("nan")], None, "target_ratio: expected a positive number"),
    ([0], [0.0], None, "target_ratio: expected a positive number"),
    ([0, 3], [0.5, 0.5], None, "account index out of range"),
    ([-1], [0.5], None, "account index out of range"),
    ([1, 1], [0.5, 0.5], None, "each account once"),
    ([0, 1], [0.5], None, "one target per account"),
    ([0], [0.5], np.ones(2), "slippage_per_unit: expected one value per instrument"),
])
@pytest.mark.parametrize("compiled", [True, False])
def test_a_bad_batch_is_one_user_error_in_both(accounts: list[int], targets: list[float],
                                               slippage: np.ndarray | None, error: str, compiled: bool) -> None:
    book, risk, _ = crash(3, 4)
    with pytest.raises(UserError, match=error):
        plan_liquidations(book, risk, accounts, targets, slippage_per_unit=slippage, compiled=compiled)
