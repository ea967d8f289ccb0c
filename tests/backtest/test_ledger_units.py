"""The ledger values every instrument of an underlying in one risk-core call and keeps the figures
while the market stands still: each contract's figures must equal those computed for it alone
(``Ledger.unit_of``, the reference), on random books, markets and clocks."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.backtest.simulate import Ledger
from pipelines.risk.instruments import parse_instrument
from pipelines.scenarios.generate import option_definition

EXPIRY = "25JUN21"
EXPIRY_MS = parse_instrument(f"BTC-{EXPIRY}-40000-C").expiry_ms
LINEAR = ["BTC-PERPETUAL", "ETH-PERPETUAL", f"BTC-{EXPIRY}", f"ETH-{EXPIRY}"]

options = st.builds(lambda u, k, c, inverse: (f"{u}-{EXPIRY}-{k}-{'C' if c else 'P'}", u, float(k), c, inverse),
                    st.sampled_from(["BTC", "ETH"]), st.sampled_from([1000, 2000, 30000, 40000, 50000]),
                    st.booleans(), st.booleans())
ticks = st.tuples(st.sampled_from(["BTC", "ETH"]), st.floats(500.0, 90_000.0), st.floats(0.2, 2.0),
                  st.integers(-40 * 86_400_000, 2 * 86_400_000))


def _book(opts: list[tuple[str, str, float, bool, bool]], t0: int) -> tuple[Ledger, list[str]]:
    ledger = Ledger()
    names = list(LINEAR)
    for name, underlying, strike, call, inverse in opts:
        if inverse:
            ledger.apply("InstrumentDefinition", option_definition(name, underlying, strike, EXPIRY_MS, call, t0))
        if name not in names:
            names.append(name)
    return ledger, names


@settings(max_examples=60, deadline=None)
@given(st.lists(options, max_size=8), st.lists(ticks, min_size=1, max_size=12), st.randoms(use_true_random=False))
def test_a_contracts_figures_do_not_depend_on_the_others_valued_with_it(opts, market, rnd) -> None:
    t0 = EXPIRY_MS - 40 * 86_400_000
    ledger, names = _book(opts, t0)
    for underlying, index, iv, dt in market:
        ledger.apply("IndexPrice", {"underlying": underlying, "price": index, "event_time_ms": t0 + dt})
        ledger.apply("VolatilityUpdate", {"underlying": underlying, "instrument": None, "iv": iv,
                                          "event_time_ms": t0 + dt})
        if "ETH" not in ledger.index:
            ledger.apply("IndexPrice", {"underlying": "ETH", "price": 2_000.0, "event_time_ms": t0})
        if "BTC" not in ledger.index:
            ledger.apply("IndexPrice", {"underlying": "BTC", "price": 40_000.0, "event_time_ms": t0})
        for name in rnd.sample(names, rnd.randint(1, len(names))):  # a different subset valued first each tick
            assert ledger.unit(name) == ledger.unit_of(name), name
        for name in names:
            assert ledger.unit(name) == ledger.unit_of(name), name


def test_equity_is_cash_at_the_index_plus_each_positions_pnl_from_its_own_unit() -> None:
    put, call = f"BTC-{EXPIRY}-30000-P", f"BTC-{EXPIRY}-50000-C"
    t0 = EXPIRY_MS - 30 * 86_400_000
    ledger = Ledger()
    ledger.apply("InstrumentDefinition", option_definition(put, "BTC", 30_000.0, EXPIRY_MS, False, t0))
    ledger.apply("IndexPrice", {"underlying": "BTC", "price": 40_000.0, "event_time_ms": t0})
    ledger.apply("CollateralUpdate", {"account": "a", "asset": "BTC", "amount": 1.5, "event_time_ms": t0})
    ledger.apply("CollateralUpdate", {"account": "a", "asset": "USDC", "amount": 10_000.0, "event_time_ms": t0})
    for name, qty, avg in [(put, -3.0, 0.02), (call, 2.0, 900.0), ("BTC-PERPETUAL", -0.5, 41_000.0)]:
        ledger.apply("PositionUpdate", {"account": "a", "instrument": name, "quantity": qty, "average_price": avg,
                                        "event_time_ms": t0})
    for index in (40_000.0, 31_000.0, 52_500.0):
        ledger.apply("IndexPrice", {"underlying": "BTC", "price": index, "event_time_ms": t0 + 1})
        units = {name: ledger.unit_of(name) for name in (put, call, "BTC-PERPETUAL")}
        expected = (1.5 * index + 10_000.0) + sum((units[n].mark - avg * units[n].usd_per_quote) * q
                                                  for n, (q, avg) in ledger.positions["a"].items())
        assert ledger.equity("a") == expected


def test_a_new_definition_revalues_the_instrument() -> None:
    name = f"BTC-{EXPIRY}-40000-P"
    t0 = EXPIRY_MS - 30 * 86_400_000
    ledger = Ledger()
    ledger.apply("IndexPrice", {"underlying": "BTC", "price": 40_000.0, "event_time_ms": t0})
    linear = ledger.unit(name)
    ledger.apply("InstrumentDefinition", option_definition(name, "BTC", 40_000.0, EXPIRY_MS, False, t0))
    inverse = ledger.unit(name)
    assert inverse == ledger.unit_of(name)
    assert inverse.usd_per_quote == 40_000.0 and linear.usd_per_quote == 1.0
