"""Value checks return the documented reason codes."""

from __future__ import annotations

import math

import pytest

from pipelines.events.validation import Validator, instrument_name_problem, validate
from tests.kit.records import INSTRUMENTS, NOW_MS, sample


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator(known_instruments=INSTRUMENTS)


@pytest.mark.parametrize("record", ["InstrumentDefinition", "IndexPrice", "MarkPrice", "VolatilityUpdate",
                                    "OrderBookDepth", "OraclePrice", "PositionUpdate", "CollateralUpdate", "Breach",
                                    "Action", "ExecutionReport", "DeadLetter"])
def test_samples_are_valid(validator: Validator, record: str):
    assert validator.validate(record, sample(record), NOW_MS) is None


@pytest.mark.parametrize("record, changes, expected", [
    ("IndexPrice", {"price": math.nan}, "nan_price"),
    ("IndexPrice", {"price": -1.0}, "negative_price"),
    ("IndexPrice", {"price": math.inf}, "non_finite"),
    ("IndexPrice", {"price": 1.0000001e12}, "implausible_price"),
    ("MarkPrice", {"mark_price": 1e200}, "implausible_price"),
    ("MarkPrice", {"mark_price": math.nan}, "nan_price"),
    ("MarkPrice", {"best_bid": -0.01}, "negative_price"),
    ("MarkPrice", {"instrument": "BTC-1JAN27-1-C"}, "unknown_instrument"),
    ("MarkPrice", {"largest_holder_share": 1.01}, "out_of_range"),
    ("MarkPrice", {"largest_holder_share": -0.1}, "out_of_range"),
    ("MarkPrice", {"largest_holder_share": math.nan}, "non_finite"),
    ("OraclePrice", {"price": -5.0}, "negative_price"),
    ("PositionUpdate", {"quantity": math.inf}, "non_finite"),
    ("PositionUpdate", {"quantity": math.nan}, "non_finite"),
    ("PositionUpdate", {"instrument": "ETH-PERPETUAL"}, "unknown_instrument"),
    ("PositionUpdate", {"event_time_ms": NOW_MS + 3_600_000}, "event_time_out_of_range"),
    ("PositionUpdate", {"event_time_ms": NOW_MS - 2 * 86_400_000}, "event_time_out_of_range"),
    ("PositionUpdate", {"event_time_ms": 0}, "event_time_out_of_range"),
    ("CollateralUpdate", {"amount": -math.inf}, "non_finite"),
    ("OrderBookDepth", {"asks": [{"price": 1.0, "quantity": 1.0}, {"price": math.nan, "quantity": 1.0}]}, "nan_price"),
    ("OrderBookDepth", {"bids": [{"price": 1.0, "quantity": -2.0}]}, "negative_value"),
    ("VolatilityUpdate", {"smile": [{"expiry_ms": 1, "strike": 1.0, "iv": math.nan}]}, "non_finite"),
    ("InstrumentDefinition", {"tick_size": 0.0}, "not_positive"),
    ("InstrumentDefinition", {"instrument": "btc perpetual"}, "bad_instrument_name"),
    ("Action", {"quantity": -1.0}, "negative_value"),
    ("IndexPrice", {"price": 0.0}, "not_positive"),
    ("OraclePrice", {"price": -0.0}, "not_positive"),
    ("VolatilityUpdate", {"iv": 0.0}, "not_positive"),
    ("VolatilityUpdate", {"smile": [{"expiry_ms": 1, "strike": 1.0, "iv": 0.0}]}, "not_positive"),
])
def test_reasons(validator: Validator, record: str, changes: dict, expected: str):
    problem = validator.validate(record, sample(record, **changes), NOW_MS)
    assert problem is not None and problem.reason == expected
    assert problem.detail.split("=")[0].split("[")[0] in {*changes, "asks", "bids", "smile"}


@pytest.mark.parametrize("share", [0.0, 1.0, None])
def test_a_share_from_none_to_all_of_the_open_interest_is_valid(validator: Validator, share: float | None):
    assert validator.validate("MarkPrice", sample("MarkPrice", largest_holder_share=share), NOW_MS) is None


def test_without_a_set_any_priceable_instrument_passes_and_an_unpriceable_one_does_not():
    assert validate("PositionUpdate", sample("PositionUpdate", instrument="ETH-PERPETUAL"), now_ms=NOW_MS) is None
    for name in ("BTC-FOO", "BTC-31FEB27", "BTC-27DEC26-0-C", "BTC"):  # no such date, no strike, no expiry
        assert validate("PositionUpdate", sample("PositionUpdate", instrument=name), now_ms=NOW_MS) == \
            "bad_instrument_name", name


def test_window_is_configurable():
    v = Validator(max_past_ms=1000, max_future_ms=0)
    assert v.reason("IndexPrice", sample("IndexPrice", event_time_ms=NOW_MS - 1000), NOW_MS) is None
    too_old = sample("IndexPrice", event_time_ms=NOW_MS - 1001)
    assert v.reason("IndexPrice", too_old, NOW_MS) == "event_time_out_of_range"
    assert v.reason("IndexPrice", sample("IndexPrice", event_time_ms=NOW_MS + 1), NOW_MS) == "event_time_out_of_range"


@pytest.mark.parametrize("name, ok", [("BTC-PERPETUAL", True), ("BTC-27DEC26", True), ("BTC-27DEC26-60000-C", True),
                                      ("ETH-3JAN27-3500-P", True), ("SOL_USDC-PERPETUAL", True),
                                      ("XRP_USDC-27DEC26-0d625-C", True), ("BTC-27DEC26-60000-X", False),
                                      ("BTC", False), ("btc-perpetual", False), ("BTC-27XYZ26", False)])
def test_instrument_names(name: str, ok: bool):
    assert (instrument_name_problem(name) is None) is ok


def test_a_price_at_the_plausible_bound_passes(validator: Validator):
    assert validator.validate("IndexPrice", sample("IndexPrice", price=1e12), NOW_MS) is None
    assert validator.validate("MarkPrice", sample("MarkPrice", best_ask=1e12), NOW_MS) is None
