"""Coin-settled (inverse) options and futures, and contract sizes: the coin premium against
QuantLib's Black-76, coin Greeks against QuantLib by finite differences and against the hand
derivation, PnL and margin converted at the index, instruments from their definitions."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from pipelines.engine.account_book import AccountBook
from pipelines.engine.market_board import MarketBoard
from pipelines.risk.black76 import black76_greeks, black76_price
from pipelines.risk.book import Book, revalue_book
from pipelines.risk.instruments import (
    InstrumentError,
    InstrumentTable,
    Kind,
    instrument_from_definition,
    parse_instrument,
)
from pipelines.risk.market import YEAR_MS, MarketState, UnderlyingMarket
from pipelines.risk.valuation import inverse_option_greeks, scenario_values, unit_greeks
from tests.kit import markets

ql = pytest.importorskip("QuantLib")

NOW = markets.NOW_MS
EXPIRY = parse_instrument("BTC-25DEC26-60000-C").expiry_ms


def definition(name: str, **fields) -> dict:
    """An ``InstrumentDefinition`` record of a Deribit BTC instrument: inverse, BTC-settled."""
    parsed = parse_instrument(name)
    value = {"instrument": name, "kind": str(parsed.kind), "underlying": parsed.underlying, "quote_currency": "USD",
             "settlement_currency": parsed.underlying, "inverse": True, "strike": parsed.strike,
             "expiry_ms": parsed.expiry_ms, "option_type": None if parsed.is_call is None else
             ("call" if parsed.is_call else "put"), "contract_size": 1.0 if parsed.kind is Kind.OPTION else 10.0,
             "tick_size": 0.0005, "min_trade_amount": 0.1, "is_active": True, "event_time_ms": NOW}
    return {**value, **fields}


def inverse(name: str, size: float | None = None) -> object:
    return instrument_from_definition(definition(name) if size is None else definition(name, contract_size=size))


def ql_coin_premium(s: float, k: float, t: float, vol: float, rate: float, call: bool) -> float:
    """QuantLib's Black-76 USD price on the forward, divided by the index: the coin premium."""
    df = math.exp(-rate * t)
    kind = ql.Option.Call if call else ql.Option.Put
    return ql.blackFormula(kind, k, s / df, vol * math.sqrt(t), df) / s


CASES = [(60_000.0, 60_000.0, 0.08, 0.55, 0.0, True), (60_000.0, 50_000.0, 0.08, 0.55, 0.0, False),
         (42_000.0, 60_000.0, 0.5, 1.2, 0.05, True), (80_000.0, 60_000.0, 0.02, 0.4, 0.03, False),
         (2_400.0, 2_000.0, 0.25, 0.7, 0.0, True)]


@pytest.mark.parametrize("s, k, t, vol, rate, call", CASES)
def test_inverse_option_premium_and_coin_greeks_match_quantlib(s, k, t, vol, rate, call) -> None:
    coin = inverse_option_greeks(s, k, t, vol, rate, call)
    premium = ql_coin_premium(s, k, t, vol, rate, call)
    assert float(coin.price) == pytest.approx(premium, rel=1e-10, abs=1e-14)
    # coin delta and gamma: derivatives of the coin premium times the (held) index; QuantLib by
    # central differences
    h = s * 1e-4
    up, down = ql_coin_premium(s + h, k, t, vol, rate, call), ql_coin_premium(s - h, k, t, vol, rate, call)
    assert float(coin.delta) == pytest.approx(s * (up - down) / (2 * h), rel=1e-6, abs=1e-9)
    assert float(coin.gamma) == pytest.approx(s * (up - 2 * premium + down) / (h * h), rel=1e-4, abs=1e-12)
    hv = 1e-5
    vega = (ql_coin_premium(s, k, t, vol + hv, rate, call) - ql_coin_premium(s, k, t, vol - hv, rate, call)) / (2 * hv)
    assert float(coin.vega) == pytest.approx(vega * 0.01, rel=1e-6)


def test_inverse_call_delta_is_the_usd_delta_minus_the_coin_premium_by_hand() -> None:
    """S = K = 60,000, T = 0.08 y, 55 %, r = 0: d1 = sd / 2 with sd = 0.55 sqrt(0.08), so the USD
    delta is N(d1), the coin premium N(d1) - N(-d1) ... = 2 N(sd / 2) - 1, the coin delta
    1 - N(sd / 2)."""
    sd = 0.55 * math.sqrt(0.08)
    n = 0.5 * (1 + math.erf(sd / 2 / math.sqrt(2)))
    coin = inverse_option_greeks(60_000.0, 60_000.0, 0.08, 0.55, 0.0, True)
    usd = black76_greeks(60_000.0, 60_000.0, 0.08, 0.55, 0.0, True)
    assert float(coin.price) == pytest.approx(2 * n - 1, rel=1e-12)
    assert float(usd.delta) == pytest.approx(n, rel=1e-12)
    assert float(coin.delta) == pytest.approx(1 - n, rel=1e-12)
    assert float(coin.delta) == pytest.approx(float(usd.delta - coin.price), rel=1e-12)


def test_book_values_an_inverse_option_at_its_usd_price_with_the_coin_delta() -> None:
    linear = dataclasses.replace(parse_instrument("BTC-25DEC26-60000-C"), name="BTC-25DEC26-60000-C-linear")
    table = InstrumentTable.of([inverse("BTC-25DEC26-60000-C", 2.0), linear])
    market = markets.market(btc=60_000.0)
    inp = market.inputs(table)
    unit = unit_greeks(table, inp)
    t = (EXPIRY - NOW) / YEAR_MS
    usd = black76_greeks(60_000.0, 60_000.0, t, 0.55, 0.0, True)
    coin = inverse_option_greeks(60_000.0, 60_000.0, t, 0.55, 0.0, True)
    assert unit.price[0] == pytest.approx(2 * float(usd.price))  # coin premium x index, 2 coins
    assert unit.price[1] == pytest.approx(float(usd.price))
    assert unit.delta[0] == pytest.approx(2 * float(coin.delta)) and unit.delta[1] == pytest.approx(float(usd.delta))
    assert unit.gamma[0] == pytest.approx(2 * float(coin.gamma)) and unit.gamma[1] == pytest.approx(float(usd.gamma))


def test_an_inverse_perpetuals_pnl_is_its_coin_pnl_at_the_index() -> None:
    """100 contracts of 10 USD, long from 50,000, index 40,000: 1,000 (1/50,000 - 1/40,000)
    = -0.005 BTC, -200 USD at the index; delta 1,000 / 40,000 = 0.025 BTC."""
    table = InstrumentTable.of([inverse("BTC-PERPETUAL")])
    book = Book.from_arrays(["a"], np.array([1_000.0]), table, np.array([0]), np.array([0]), np.array([100.0]),
                            np.array([50_000.0]))
    market = MarketState(NOW, {"BTC": UnderlyingMarket(40_000.0, 0.5)})
    for compiled in (False, True):
        risk = revalue_book(book, market, compiled=compiled)
        assert risk.unrealised_pnl[0] == pytest.approx(-200.0)
        assert risk.equity[0] == pytest.approx(800.0)
        assert risk.delta[0, 0] == pytest.approx(0.025)
        assert risk.gross_notional[0, 0] == pytest.approx(1_000.0)  # the face, at the index
        assert risk.marks[0] == pytest.approx(10.0)


def test_scenario_pnl_of_an_inverse_option_is_its_coin_pnl_at_the_current_index() -> None:
    table = InstrumentTable.of([inverse("BTC-25DEC26-50000-P")])
    market = markets.market(btc=60_000.0)
    inp = market.inputs(table)
    shocked = np.array([[60_000.0, 48_000.0, 75_000.0]])
    vol = np.full((1, 3), 0.55)
    t = (EXPIRY - NOW) / YEAR_MS
    coin = [float(black76_price(s, 50_000.0, t, 0.55, 0.0, False)) / s for s in shocked[0]]
    assert scenario_values(table, inp, shocked, vol)[0] == pytest.approx([60_000.0 * c for c in coin], rel=1e-12)


def test_linear_contract_size_multiplies_value_pnl_and_greeks() -> None:
    """A 0.1-unit contract bought at 5,000 per unit (a quote per underlying unit, as venues quote)."""
    small = dataclasses.replace(parse_instrument("BTC-25DEC26-60000-C"), contract_size=0.1)
    table = InstrumentTable.of([small])
    book = Book.from_arrays(["a"], np.array([0.0]), table, np.array([0]), np.array([0]), np.array([10.0]),
                            np.array([5_000.0]))
    risk = revalue_book(book, markets.market(), compiled=False)
    t = (EXPIRY - NOW) / YEAR_MS
    usd = black76_greeks(60_000.0, 60_000.0, t, 0.55, 0.0, True)
    assert risk.unrealised_pnl[0] == pytest.approx(10 * 0.1 * (float(usd.price) - 5_000.0))
    assert risk.delta[0, 0] == pytest.approx(float(usd.delta))  # 10 contracts x 0.1 BTC


def coin_margined_engine_book(index: float) -> tuple[float, float]:
    """(equity USD, maintenance USD) of a BTC-collateralised account short BTC-settled puts, through
    the engine's market board (which reads the definition) and account book."""
    board = MarketBoard()
    board.apply_indexes([{"underlying": "BTC", "price": index, "event_time_ms": NOW}])
    board.apply("InstrumentDefinition", definition("BTC-25DEC26-50000-P"))
    accounts = AccountBook()
    accounts.set_collateral("a", "BTC", 2.0)
    accounts.set_position("a", "BTC-25DEC26-50000-P", -10.0, 0.01)  # sold at 0.01 BTC each
    built = accounts.built(board.index.keys(), board.instruments)
    book = built.with_collateral(board.index)
    risk = revalue_book(book, board.market_state(NOW, {"BTC"}))
    return float(risk.equity[0]), float(risk.maintenance[0])


@pytest.mark.parametrize("index", [60_000.0, 45_000.0])
def test_a_btc_collateralised_accounts_equity_is_its_coin_equity_at_the_index(index) -> None:
    equity, maintenance = coin_margined_engine_book(index)
    t = (EXPIRY - NOW) / YEAR_MS
    premium = float(black76_price(index, 50_000.0, t, 0.6, 0.0, False)) / index  # board's default vol 0.6
    assert equity == pytest.approx(index * (2.0 - 10.0 * (premium - 0.01)), rel=1e-12)
    assert maintenance > 0


def test_the_account_book_follows_a_changed_definition() -> None:
    board = MarketBoard()
    board.apply_indexes([{"underlying": "BTC", "price": 40_000.0, "event_time_ms": NOW}])
    accounts = AccountBook()
    accounts.set_position("a", "BTC-PERPETUAL", 100.0, 50_000.0)
    linear = accounts.built(board.index.keys(), board.instruments).book.instruments.instruments[0]
    board.apply("InstrumentDefinition", definition("BTC-PERPETUAL"))
    defined = accounts.built(board.index.keys(), board.instruments).book.instruments.instruments[0]
    assert not linear.inverse and defined.inverse and defined.contract_size == 10.0
    restored = MarketBoard.from_state(board.state())
    assert restored.instruments == board.instruments


def test_definitions_are_the_source_of_truth_and_contradictions_are_refused() -> None:
    made = instrument_from_definition(definition("BTC-25DEC26-50000-P", strike=52_000.0, contract_size=0.5))
    assert (made.kind, made.strike, made.is_call, made.inverse, made.settlement, made.contract_size) == \
        (Kind.OPTION, 52_000.0, False, True, "BTC", 0.5)
    assert made.expiry_ms == parse_instrument("BTC-25DEC26-50000-P").expiry_ms
    linear = instrument_from_definition(definition("BTC-PERPETUAL", inverse=False, settlement_currency="USDC"))
    assert not linear.inverse and linear.settlement == "USDC" and linear.expiry_ms is None
    for bad in (dict(settlement_currency="USDC"), dict(strike=None), dict(option_type=None), dict(contract_size=0.0),
                dict(expiry_ms=None), dict(underlying="ETH")):
        with pytest.raises(InstrumentError):
            instrument_from_definition(definition("BTC-25DEC26-50000-P", **bad))
    board = MarketBoard()
    board.apply("InstrumentDefinition", definition("BTC-25DEC26-50000-P", contract_size=0.0))
    assert "BTC-25DEC26-50000-P" not in board.instruments  # valued by its name
