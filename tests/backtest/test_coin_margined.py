"""The backtest's ledger on a coin-margined book: collateral valued per asset at its index,
inverse options at their coin premium times the index, engine feedback in the account's own asset."""

from __future__ import annotations

import math

import pytest

from pipelines.backtest.run import engine_params, venue_for
from pipelines.backtest.simulate import Ledger, Simulation, sequence_events
from pipelines.engine.engine import Engine
from pipelines.policy.signing import SigningKey
from pipelines.risk.black76 import black76_price
from pipelines.risk.instruments import parse_instrument
from pipelines.scenarios import library
from pipelines.scenarios.generate import generate, option_definition

PUT = "BTC-25JUN21-40000-P"


def market(ledger: Ledger, index: float, t: int) -> None:
    ledger.apply("IndexPrice", {"underlying": "BTC", "price": index, "event_time_ms": t})
    ledger.apply("VolatilityUpdate", {"underlying": "BTC", "instrument": None, "iv": 0.8, "event_time_ms": t})


def test_two_btc_of_collateral_are_two_btc_at_the_index_not_two_usd() -> None:
    ledger = Ledger()
    market(ledger, 40_000.0, 1)
    ledger.apply("CollateralUpdate", {"account": "a", "asset": "BTC", "amount": 2.0, "event_time_ms": 1})
    assert ledger.equity("a") == pytest.approx(80_000.0)
    market(ledger, 30_000.0, 2)
    assert ledger.equity("a") == pytest.approx(60_000.0)


def test_a_short_inverse_put_is_valued_in_coin_at_the_index() -> None:
    put = parse_instrument(PUT)
    t0 = put.expiry_ms - 30 * 86_400_000
    ledger = Ledger()
    market(ledger, 40_000.0, t0)
    ledger.apply("InstrumentDefinition", option_definition(PUT, "BTC", 40_000.0, put.expiry_ms, False, t0))
    ledger.apply("CollateralUpdate", {"account": "a", "asset": "BTC", "amount": 1.0, "event_time_ms": t0})
    ledger.apply("PositionUpdate", {"account": "a", "instrument": PUT, "quantity": -2.0, "average_price": 0.05,
                                    "event_time_ms": t0})
    market(ledger, 30_000.0, t0)
    premium = black76_price(30_000.0, 40_000.0, 30 / 365, 0.8, 0.0, False) / 30_000.0  # coin per unit
    # equity = S * (C + q (P - P_entry)), all in BTC converted at the index
    assert ledger.equity("a") == pytest.approx(30_000.0 * (1.0 - 2.0 * (premium - 0.05)))
    assert ledger.quote(PUT, ledger.mark(PUT)) == pytest.approx(premium)


def test_buying_back_an_inverse_put_settles_its_loss_in_coin() -> None:
    put = parse_instrument(PUT)
    t0 = put.expiry_ms - 30 * 86_400_000
    ledger = Ledger()
    market(ledger, 30_000.0, t0)
    ledger.apply("InstrumentDefinition", option_definition(PUT, "BTC", 40_000.0, put.expiry_ms, False, t0))
    ledger.apply("CollateralUpdate", {"account": "a", "asset": "BTC", "amount": 1.0, "event_time_ms": t0})
    ledger.apply("PositionUpdate", {"account": "a", "instrument": PUT, "quantity": -2.0, "average_price": 0.05,
                                    "event_time_ms": t0})
    ledger.trade("a", PUT, 2.0, 0.35 * 30_000.0, fee=30.0)  # USD per contract: 0.35 BTC at 30,000
    assert not ledger.positions["a"]
    assert ledger.cash["a"]["BTC"] == pytest.approx(1.0 - 2.0 * (0.35 - 0.05) - 0.001)
    assert ledger.cash["a"]["USDC"] == 0.0


def test_the_ledger_values_the_coin_book_as_the_engine_does() -> None:
    g = generate(library.get("deribit-coin-2021"))
    engine, ledger = Engine(SigningKey("test", b"test-key-000000000000")), Ledger()
    for _, record, value in g.events:
        if value["event_time_ms"] <= g.t0 + 100:
            engine.on_event(record, value, "test")
            ledger.apply(record, value)
    exposures = {e["account"]: e["equity_usd"] for e in engine.flush().exposures}
    coin = [a for a, assets in ledger.cash.items() if "BTC" in assets and a in exposures]
    assert coin
    for account in coin:
        assert math.isclose(ledger.equity(account), exposures[account], rel_tol=1e-6), account


def test_the_engine_hears_back_in_the_account_s_own_asset_and_fills_are_quoted_in_coin() -> None:
    g = generate(library.get("deribit-coin-2021"))
    out: dict[str, list] = {"input": [], "execution": []}
    sim = Simulation(g.scenario.name, venue_for(g.scenario), with_backstop=True, params=engine_params(g),
                     on_output=lambda kind, value: out[kind].append(value) if kind in out else None)
    sim.run(sequence_events(g.events))
    home = {v["account"]: v["asset"] for _, r, v in g.events if r == "CollateralUpdate"}
    feedback = [v for r, v in out["input"] if r == "CollateralUpdate" and v["reason"] == "liquidation"]
    btc_accounts = {v["account"] for v in feedback if home[v["account"]] == "BTC"}
    assert btc_accounts
    assert all(any(v["asset"] == "BTC" for v in feedback if v["account"] == a) for a in btc_accounts)
    option_fills = [r for r in out["execution"] if r["avg_price"] and sim.ledger.instrument(r["instrument"]).inverse]
    assert option_fills and all(0 < r["avg_price"] < 1 for r in option_fills)  # BTC per option, as Deribit quotes
