"""The compiled revaluation kernels against their numpy reference: the same risk, bit for bit,
on random books, and the same breaches and actions on bundled scenario replays."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.engine.engine import Engine, EngineParams
from pipelines.policy.ladder import times_to_breach_ms
from pipelines.policy.signing import SigningKey
from pipelines.replay.inprocess import fingerprint, load, replay_dicts
from pipelines.risk.adaptive import AdaptiveParams, MarketConditions
from pipelines.risk.book import Book, BookRisk, ResidentRisk, margin_ratio, revalue_book
from pipelines.risk.instruments import InstrumentTable, parse_instrument
from pipelines.risk.kernels import pricing
from pipelines.risk.kernels import revalue as kernel
from pipelines.risk.margin import MarginConfig, MarginParams
from pipelines.risk.market import MarketState, UnderlyingMarket
from pipelines.scenarios import library
from pipelines.scenarios.generate import generate, write_recording
from tests.kit.crash import PERP, crash_events

NOW_MS = 1_795_000_000_000  # 2026-11-18
UNDERLYINGS = ("BTC", "ETH", "SOL")
EXPIRIES = ("27NOV26", "25DEC26", "26MAR27")
# one underlying with a narrower grid than the others: padded scenario columns
NARROW = MarginConfig(per_underlying={"ETH": MarginParams(moves=(-0.1, 0.0, 0.1), vol_unchanged=False, extended=())})


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal bit for bit: values (NaN equal to NaN), shapes, dtypes and the signs of zeros."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind != "f":
        return bool(np.array_equal(a, b))
    return bool(np.array_equal(a, b, equal_nan=True) and np.array_equal(np.signbit(a), np.signbit(b)))


def risk_differences(x: BookRisk, y: BookRisk) -> list[str]:
    return [f.name for f in dataclasses.fields(x)
            if isinstance(getattr(x, f.name), np.ndarray) and not same(getattr(x, f.name), getattr(y, f.name))]


def instrument_names(underlying: str, draw: st.DrawFn) -> list[str]:
    names = [f"{underlying}-PERPETUAL"] if draw(st.booleans()) else []
    for expiry in draw(st.lists(st.sampled_from(EXPIRIES), max_size=2, unique=True)):
        names.append(f"{underlying}-{expiry}")
        for strike in draw(st.lists(st.sampled_from([50, 80, 100, 120, 200]), max_size=3, unique=True)):
            names.append(f"{underlying}-{expiry}-{strike * 100}-{draw(st.sampled_from('CP'))}")
    return names or [f"{underlying}-PERPETUAL"]


@st.composite
def books(draw: st.DrawFn) -> tuple[Book, MarketState, MarketConditions]:
    """A random book (options, futures and perpetuals on 1-3 underlyings, linear or inverse
    (coin-settled), of contract size 1 or not, netted duplicates, flat legs, positions at mark or
    at a price, zero and negative collateral) and its market (an expiry in the past or the next
    hour among them)."""
    unds = UNDERLYINGS[: draw(st.integers(1, 3))]
    names = sorted({n for u in unds for n in instrument_names(u, draw)})
    table = InstrumentTable.of(dataclasses.replace(parse_instrument(n), inverse=draw(st.booleans()),
                                                   contract_size=draw(st.sampled_from([1.0, 0.1, 10.0])))
                               for n in names)
    n_acc = draw(st.integers(1, 6))
    n_pos = draw(st.integers(0, 4 * n_acc))
    qty_values = st.one_of(st.sampled_from([0.0, 1.0, -1.0, 1e-9]), st.floats(-500, 500, allow_nan=False))
    account_idx = draw(st.lists(st.integers(0, n_acc - 1), min_size=n_pos, max_size=n_pos))
    instrument_idx = draw(st.lists(st.integers(0, len(table) - 1), min_size=n_pos, max_size=n_pos))
    qty = draw(st.lists(qty_values, min_size=n_pos, max_size=n_pos))
    avg = draw(st.lists(st.one_of(st.just(math.nan), st.floats(0.01, 300, allow_nan=False)), min_size=n_pos,
                        max_size=n_pos))
    collateral = draw(st.lists(st.one_of(st.sampled_from([0.0, -1e3]), st.floats(-1e5, 1e6)), min_size=n_acc,
                               max_size=n_acc))
    book = Book.from_arrays([f"acc-{i}" for i in range(n_acc)], np.array(collateral), table,
                            np.array(account_idx, dtype=np.int64), np.array(instrument_idx, dtype=np.int64),
                            np.array(qty), np.array(avg))
    time_ms = draw(st.sampled_from([NOW_MS, NOW_MS + 10 * 86_400_000 - 3_600_000, NOW_MS + 40 * 86_400_000]))
    index = st.floats(1.0, 300.0)
    market = MarketState(time_ms, {u: UnderlyingMarket(draw(index), draw(st.floats(0.05, 3.0)),
                                                       draw(st.sampled_from([0.0, 0.05, -0.01])))
                                   for u in unds})
    maybe = st.one_of(st.just(math.nan), st.just(math.inf), st.just(0.0), st.floats(1.0, 1e7))
    conditions = MarketConditions({u: draw(maybe) for u in unds}, {u: draw(maybe) for u in unds})
    return book, market, conditions


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(books(), st.sampled_from([None, AdaptiveParams(), AdaptiveParams(participation=0.0, max_multiplier=1.0)]),
       st.sampled_from([MarginConfig(), NARROW]))
def test_compiled_revaluation_is_the_numpy_reference_bit_for_bit(case, adaptive, config) -> None:
    book, market, conditions = case
    numpy_risk = revalue_book(book, market, config, adaptive, conditions, compiled=False)
    compiled_risk = revalue_book(book, market, config, adaptive, conditions, compiled=True)
    assert risk_differences(numpy_risk, compiled_risk) == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(books(), st.data())
def test_revaluing_some_accounts_gives_their_full_revaluation_and_nan_elsewhere(case, data) -> None:
    book, market, conditions = case
    n_acc = len(book.accounts)
    picked = np.array(sorted(data.draw(st.sets(st.integers(0, n_acc - 1)))), dtype=np.int64)
    others = np.setdiff1d(np.arange(n_acc), picked)
    full = revalue_book(book, market, adaptive=AdaptiveParams(), conditions=conditions, compiled=False)
    for compiled in (False, True):
        part = revalue_book(book, market, adaptive=AdaptiveParams(), conditions=conditions, compiled=compiled,
                            accounts=picked)
        for name in ("equity", "maintenance", "initial", "margin_ratio", "delta", "worst_scenario", "adaptive_addon"):
            got, want = getattr(part, name), getattr(full, name)
            assert same(got[picked], want[picked]), name
            blank = -1 if name == "worst_scenario" else np.nan
            assert same(got[others], np.full_like(want[others], blank)), name


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(books(), st.lists(st.floats(0.5, 2.0), min_size=1, max_size=3), st.data())
def test_a_resident_revaluation_is_each_markets_reference_in_one_rewritten_risk(case, moves, data) -> None:
    """Revalued through one ``ResidentRisk`` on market after market (some accounts or all), a book
    gets each market's numpy reference, bit for bit, in the same ``BookRisk`` rewritten; a book
    with other accounts gets its own."""
    book, market, conditions = case
    resident, first = ResidentRisk(), None
    for move in (1.0, *moves):
        on = MarketState(market.time_ms, {u: dataclasses.replace(m, index=m.index * move)
                                          for u, m in market.underlyings.items()})
        picked = np.array(sorted(data.draw(st.sets(st.integers(0, len(book.accounts) - 1)))), dtype=np.int64)
        rows = data.draw(st.sampled_from([None, picked]))
        risk = revalue_book(book, on, adaptive=AdaptiveParams(), conditions=conditions, accounts=rows,
                            resident=resident)
        reference = revalue_book(book, on, adaptive=AdaptiveParams(), conditions=conditions, compiled=False,
                                 accounts=rows)
        assert risk_differences(reference, risk) == []
        first = risk if first is None else first
        assert risk is first
    other = dataclasses.replace(book, accounts=tuple(list(book.accounts)))
    assert revalue_book(other, market, resident=resident) is not first


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.floats(), st.sampled_from([0.0, -0.0, math.inf, -math.inf, math.nan])),
                          st.one_of(st.floats(), st.sampled_from([0.0, -0.0, math.inf, -math.inf, math.nan]))),
                min_size=1, max_size=20))
def test_the_scalar_margin_ratio_kernel_is_the_numpy_margin_ratio(pairs) -> None:
    maintenance, equity = (np.array(column, dtype=np.float64) for column in zip(*pairs))
    with np.errstate(all="ignore"):
        want = margin_ratio(maintenance, equity)
    got = np.array([kernel.margin_ratio_of(m, e) for m, e in zip(maintenance, equity)])
    assert same(got, want)


def test_row_sums_over_many_underlyings_follow_numpys_pairwise_order() -> None:
    """Past 8 and past 128 terms numpy no longer sums left to right; the kernel's sums match."""
    rng = np.random.default_rng(7)
    for n in (0, 1, 3, 7, 8, 9, 17, 128, 129, 300, 1_000):
        values = rng.normal(size=n) * 10.0 ** rng.integers(-8, 8, size=n)
        assert kernel._pairwise_sum(values, 0, n) == values.sum(), n


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.floats(-1e3, 1e3),
                                    st.sampled_from([0.0, -0.0, 1.0, math.nan, -math.nan, math.inf, -math.inf])),
                          st.sampled_from([0.0, 1.0, 0.5, 0.04])), max_size=40))
def test_the_worst_scenario_is_numpys_argmin_and_its_loss_the_references(cases) -> None:
    """The first NaN if any, else the first minimum, and ``margin.row_margin``'s loss from it
    (a NaN loss whatever its sign bit: numpy's ``min`` keeps none in particular); 0 and 0.0
    without scenarios."""
    pnl, weight = (np.array(column, dtype=np.float64) for column in zip(*cases)) if cases else (np.zeros(0),) * 2
    worst, lowest = kernel._first_argmin(pnl, weight, len(pnl))
    with np.errstate(invalid="ignore"):  # inf x 0
        weighted = pnl * weight
    want = (int(np.argmin(weighted)), np.maximum(-weighted.min(), 0.0)) if len(pnl) else (0, 0.0)
    loss = np.maximum(-lowest, 0.0)
    assert worst == want[0] and (same(loss, want[1]) or np.isnan(loss) and np.isnan(want[1]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(*[st.one_of(st.floats(-1e6, 1e6), st.sampled_from([0.0, -0.0, 1e-20, -1e-20, math.nan,
                                                                               math.inf, -math.inf]))] * 3),
                min_size=1, max_size=20))
def test_time_to_breach_kernel_is_the_ladders_reference(cases) -> None:
    slack, a, b = (np.array(column) for column in zip(*cases))
    want = times_to_breach_ms(slack, a, b)
    got = np.array([kernel.time_to_breach(*case) for case in cases])
    assert same(got, want)


def replay_rows(name: str, tmp_path) -> list:
    path = tmp_path / f"{name}.avro"
    write_recording(generate(library.get(name)), path)
    return list(load(path))


@pytest.mark.parametrize("name", ["may-2021", "black-thursday-2020"])
def test_scenario_replays_give_the_same_breaches_actions_and_exposures_compiled_or_not(name, tmp_path) -> None:
    rows = replay_rows(name, tmp_path)
    compiled = replay_dicts(rows, params=EngineParams(compiled=True))
    reference = replay_dicts(rows, params=EngineParams(compiled=False))
    assert compiled.actions, "the scenario must exercise the ladder"
    assert fingerprint(compiled) == fingerprint(reference)
    assert compiled.exposures == reference.exposures


def specialisations() -> dict[str, int]:
    """Compiled signatures of every kernel of the revaluation (``kernels.revalue``, ``kernels.pricing``)."""
    return {f"{module.__name__}.{k.__name__}": len(k.signatures) for module in (kernel, pricing)
            for k in vars(module).values() if hasattr(k, "signatures") and callable(k)}


def test_warm_compiles_every_kernel_a_replay_calls(tmp_path) -> None:
    """After ``warm`` a replay adds no compiled specialisation: no event pays compilation."""
    kernel.warm()
    before = specialisations()
    replay_dicts(replay_rows("may-2021", tmp_path), params=EngineParams(compiled=True))
    assert specialisations() == before


def test_a_book_without_positions_or_collateral_needs_no_other_specialisation() -> None:
    """``np.bincount`` over nothing is int64: such a book must still reach the kernel as floats."""
    kernel.warm()
    before = specialisations()
    table = InstrumentTable.of([])
    book = Book.from_arrays(["a"], np.zeros(1, dtype=np.int64), table, np.zeros(0, dtype=np.int64),
                            np.zeros(0, dtype=np.int64), np.zeros(0))
    assert book.qty.dtype == book.cost_qty.dtype == book.cost.dtype == np.float64
    book = dataclasses.replace(book, collateral=np.bincount(np.zeros(0, dtype=np.int64), minlength=1))
    for adaptive in (None, AdaptiveParams()):
        risk = revalue_book(book, MarketState(NOW_MS, {}), adaptive=adaptive)
        assert risk.equity.tolist() == [0.0] and risk.margin_ratio.tolist() == [0.0]
    assert specialisations() == before


def test_a_book_rebuilt_after_every_account_sent_an_exposure_needs_no_other_specialisation() -> None:
    """Exposure times of a rebuilt book where every account has sent one are still floats."""
    kernel.warm()
    before = specialisations()
    engine = Engine(SigningKey("test", b"kernel-test-signing-key-0123"), EngineParams(compiled=True))
    events = crash_events()
    for n, (record, value) in enumerate(events):
        engine.on_event(record, value, f"e{n}")
    t = events[-1][1]["event_time_ms"] + 1000
    engine.on_event("PositionUpdate", {"account": "whale-safe", "instrument": PERP, "quantity": 2.0,
                                       "average_price": 50_000.0, "sequence": 9, "event_time_ms": t}, "rebuild")
    engine.on_event("IndexPrice", {"underlying": "BTC", "index_name": "btc_usd", "price": 50_000.0,
                                   "event_time_ms": t + 1000}, "tick")
    engine.flush()
    assert specialisations() == before
