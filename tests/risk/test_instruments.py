from __future__ import annotations

import datetime as dt

import pytest

from pipelines.errors import UserError
from pipelines.risk.instruments import InstrumentTable, Kind, parse_instrument


def ms(*args: int) -> int:
    return int(dt.datetime(*args, tzinfo=dt.UTC).timestamp() * 1000)


def test_option_name_gives_strike_type_and_expiry_at_0800_utc() -> None:
    inst = parse_instrument("BTC-27DEC26-60000-C")
    assert (inst.kind, inst.underlying, inst.strike, inst.is_call) == (Kind.OPTION, "BTC", 60000.0, True)
    assert inst.expiry_ms == ms(2026, 12, 27, 8)
    assert inst.contract_size == 1.0 and inst.settlement == "USD"
    put = parse_instrument("ETH-5JAN27-2500-P")
    assert put.is_call is False and put.expiry_ms == ms(2027, 1, 5, 8)


def test_future_perpetual_and_decimal_strike() -> None:
    assert parse_instrument("BTC-PERPETUAL").kind is Kind.PERPETUAL
    fut = parse_instrument("BTC-27DEC26")
    assert fut.kind is Kind.FUTURE and fut.expiry_ms == ms(2026, 12, 27, 8)
    assert parse_instrument("XRP_USDC-27DEC26-0d625-C").strike == 0.625


@pytest.mark.parametrize("name", ["", "BTC", "BTC-31FEB27", "BTC-27DEC26-60000-X", "BTC-27DEC26-abc-C",
                                  "BTC-27DEC26-0-C", "BTC-27DEC26-1-C-X", "B@D-PERPETUAL", "BTC-2026-12-27"])
def test_malformed_names_are_user_errors_naming_the_instrument(name: str) -> None:
    with pytest.raises(UserError, match="instrument|expiry"):
        parse_instrument(name)


def test_table_orders_underlyings_and_rejects_duplicates() -> None:
    table = InstrumentTable.parse(["ETH-PERPETUAL", "BTC-27DEC26-60000-P", "BTC-PERPETUAL"])
    assert table.underlyings == ("BTC", "ETH")
    assert table.underlying_idx.tolist() == [1, 0, 0]
    assert table.is_option.tolist() == [False, True, False]
    with pytest.raises(UserError, match="duplicate"):
        InstrumentTable.parse(["BTC-PERPETUAL", "BTC-PERPETUAL"])
