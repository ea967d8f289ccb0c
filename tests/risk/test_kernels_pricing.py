"""The compiled pricing stages (``kernels.pricing``) against the numpy reference, bit for bit:
market inputs, unit Greeks (Black-76), units, USD marks and the scenario PnL matrix on random
tables and markets (expired and expiring options, inverse instruments, futures, perpetuals,
instrument vol overrides, rates of both signs, narrow grids)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.special import ndtr

from pipelines.risk.adaptive import MarketConditions
from pipelines.risk.book import Book, revalue_book
from pipelines.risk.instruments import InstrumentTable, parse_instrument
from pipelines.risk.kernels import pricing
from pipelines.risk.margin import MarginConfig, MarginParams, scenario_matrix
from pipelines.risk.market import MarketState, UnderlyingMarket
from pipelines.risk.valuation import unit_greeks, units_per_contract, usd_marks
from tests.risk.test_kernels_revalue import same

NOW_MS = 1_795_000_000_000  # 2026-11-18
DAY_MS = 86_400_000
UNDERLYINGS = ("BTC", "ETH", "SOL")
EXPIRIES = ("18NOV26", "19NOV26", "27NOV26", "25DEC26", "26MAR27", "31DEC27")  # 18NOV26: expired at 08:00
# one underlying with a narrower grid than the others: padding columns
NARROW = MarginConfig(per_underlying={"ETH": MarginParams(moves=(-0.1, 0.0, 0.1), vol_unchanged=False, extended=())})


def instrument_names(underlying: str, draw: st.DrawFn) -> list[str]:
    names = [f"{underlying}-PERPETUAL"] if draw(st.booleans()) else []
    for expiry in draw(st.lists(st.sampled_from(EXPIRIES), max_size=3, unique=True)):
        if draw(st.booleans()):
            names.append(f"{underlying}-{expiry}")
        for strike in draw(st.lists(st.sampled_from([1, 50, 80, 100, 120, 200, 5000]), max_size=3, unique=True)):
            names.append(f"{underlying}-{expiry}-{strike * 100}-{draw(st.sampled_from('CP'))}")
    return names or [f"{underlying}-PERPETUAL"]


@st.composite
def priced_books(draw: st.DrawFn) -> tuple[Book, MarketState]:
    """A one-position-per-instrument book on a random table (linear or inverse, contract sizes)
    and its market: the time anywhere from before the first expiry to after some, index and vol
    across their range, rates of both signs, overrides on some instruments (and on unknown ones)."""
    unds = UNDERLYINGS[: draw(st.integers(1, 3))]
    names = sorted({n for u in unds for n in instrument_names(u, draw)})
    table = InstrumentTable.of(dataclasses.replace(parse_instrument(n), inverse=draw(st.booleans()),
                                                   contract_size=draw(st.sampled_from([1.0, 0.1, 10.0])))
                               for n in names)
    time_ms = NOW_MS + draw(st.sampled_from([0, 8 * 3_600_000 - 1, 8 * 3_600_000, DAY_MS, 9 * DAY_MS - 1]))
    market = MarketState(time_ms, {u: UnderlyingMarket(draw(st.floats(0.5, 1e6)), draw(st.floats(0.01, 5.0)),
                                                       draw(st.sampled_from([0.0, 0.05, -0.01, 0.3])))
                                   for u in unds},
                         {n: draw(st.floats(0.01, 5.0)) for n in draw(st.lists(st.sampled_from([*names, "X-1"])))})
    n = len(table)
    book = Book.from_arrays(["a"], np.zeros(1), table, np.zeros(n, dtype=np.int64), np.arange(n), np.ones(n))
    return book, market


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(priced_books(), st.sampled_from([MarginConfig(), NARROW]))
def test_compiled_pricing_is_the_numpy_reference_bit_for_bit(case, config) -> None:
    book, market = case
    table = book.instruments
    risk = revalue_book(book, market, config, conditions=MarketConditions(), compiled=True)
    inp = market.inputs(table)
    unit = unit_greeks(table, inp)
    units = units_per_contract(table, inp)
    pnl, _ = scenario_matrix(table, inp, config, unit.price)
    expected = {
        **{f"inputs.{f.name}": getattr(inp, f.name) for f in dataclasses.fields(inp)},
        **{f"unit.{f.name}": getattr(unit, f.name) for f in dataclasses.fields(unit)},
        "units": units, "marks": usd_marks(table, inp, unit, units), "scenario_pnl": pnl,
    }
    got = {
        **{f"inputs.{f.name}": getattr(risk.inputs, f.name) for f in dataclasses.fields(risk.inputs)},
        **{f"unit.{f.name}": getattr(risk.unit, f.name) for f in dataclasses.fields(risk.unit)},
        "units": risk.units, "marks": risk.marks, "scenario_pnl": risk.scenario_pnl,
    }
    assert [name for name in expected if not same(got[name], expected[name])] == []


def test_an_instrument_override_prices_at_its_vol_and_others_at_their_underlyings() -> None:
    table = InstrumentTable.parse(["BTC-25DEC26-100000-C", "BTC-25DEC26-90000-P"])
    book = Book.from_arrays(["a"], np.zeros(1), table, np.zeros(2, dtype=np.int64), np.arange(2), np.ones(2))
    plain = MarketState(NOW_MS, {"BTC": UnderlyingMarket(95_000.0, 0.5)})
    overridden = MarketState(NOW_MS, plain.underlyings, {"BTC-25DEC26-100000-C": 0.8})
    before, after = (revalue_book(book, m, compiled=True) for m in (plain, overridden))
    assert after.inputs.vol.tolist() == [0.8, 0.5]
    assert after.unit.price[0] > before.unit.price[0] and after.unit.price[1] == before.unit.price[1]


def test_a_table_whose_layout_is_cached_prices_each_market_afresh() -> None:
    """The work arrays live between ticks: a second market gives its own prices, and the first
    call's results are not overwritten by it."""
    table = InstrumentTable.parse(["ETH-25DEC26-3000-C", "ETH-PERPETUAL"])
    book = Book.from_arrays(["a"], np.zeros(1), table, np.zeros(2, dtype=np.int64), np.arange(2), np.ones(2))
    first = revalue_book(book, MarketState(NOW_MS, {"ETH": UnderlyingMarket(3_000.0, 0.6)}))
    kept = first.unit.price.copy(), first.scenario_pnl.copy()
    second = revalue_book(book, MarketState(NOW_MS, {"ETH": UnderlyingMarket(2_000.0, 0.9)}))
    assert same(first.unit.price, kept[0]) and same(first.scenario_pnl, kept[1])
    reference = revalue_book(book, MarketState(NOW_MS, {"ETH": UnderlyingMarket(2_000.0, 0.9)}), compiled=False)
    assert same(second.unit.price, reference.unit.price) and not math.isclose(second.unit.price[0], kept[0][0])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-700.0, 700.0), min_size=1, max_size=300), st.data())
def test_numpys_transcendentals_give_a_value_the_same_bits_wherever_it_sits_in_a_packed_array(values, data) -> None:
    """The premise of the packed stages: exp, log, power and ndtr of an element do not depend on
    the array around it (its length, its position, a second row)."""
    packed = np.array(values)
    k = data.draw(st.integers(0, len(values) - 1))
    positive = np.abs(packed) + 1e-300
    exponent = packed / 100.0
    for whole, alone in ((np.exp(packed), np.exp(packed[k:k + 1])), (np.log(positive), np.log(positive[k:k + 1])),
                         (np.power(positive, exponent), np.power(positive[k:k + 1], exponent[k:k + 1])),
                         (ndtr(packed / 50.0), ndtr(packed[k:k + 1] / 50.0))):
        assert same(whole[k:k + 1], alone)
    rows = np.stack([packed, packed[::-1]])
    assert same(np.exp(rows)[0], np.exp(packed)) and same(ndtr(rows)[1], ndtr(packed[::-1]))


def test_layouts_are_kept_for_the_tables_priced_last() -> None:
    config = MarginConfig()
    tables = [InstrumentTable.of([parse_instrument("BTC-PERPETUAL"), parse_instrument(f"ETH-{k}JAN27-2000-C")])
              for k in range(1, pricing.MAX_LAYOUTS + 2)]
    first = pricing.layout(tables[0], config)
    for table in tables[1:-1]:
        pricing.layout(table, config)
    assert pricing.layout(tables[0], config) is first  # used again: now the most recent
    pricing.layout(tables[-1], config)  # one over the bound: the least recently used goes
    assert pricing.layout(tables[0], config) is first
    assert len(pricing._LAYOUTS) <= pricing.MAX_LAYOUTS
