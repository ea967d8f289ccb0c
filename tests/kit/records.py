"""One valid sample of every record type, at a fixed event time."""

from __future__ import annotations

import copy

NOW_MS = 1_798_761_600_000  # 2027-01-01T00:00:00Z
EXPIRY_MS = 1_798_358_400_000  # 27DEC26 08:00 UTC
OPTION = "BTC-27DEC26-60000-C"
INSTRUMENTS = {"BTC-PERPETUAL", "BTC-27DEC26", OPTION}

_SAMPLES = {
    "InstrumentDefinition": {
        "instrument": OPTION, "kind": "option", "underlying": "BTC", "quote_currency": "USD",
        "settlement_currency": "BTC", "inverse": True, "strike": 60000.0, "expiry_ms": EXPIRY_MS,
        "option_type": "call", "contract_size": 1.0, "tick_size": 0.0005, "min_trade_amount": 0.1,
        "is_active": True, "event_time_ms": NOW_MS,
    },
    "IndexPrice": {"underlying": "BTC", "index_name": "btc_usd", "price": 61234.5, "event_time_ms": NOW_MS},
    "MarkPrice": {"instrument": OPTION, "underlying": "BTC", "mark_price": 0.0523, "index_price": 61234.5,
                  "underlying_price": 61300.0, "mark_iv": 0.55, "best_bid": 0.052, "best_ask": None,
                  "open_interest": 1250.0, "largest_holder_share": 0.4, "event_time_ms": NOW_MS},
    "VolatilityUpdate": {"underlying": "BTC", "instrument": OPTION, "iv": 0.55,
                         "smile": [{"expiry_ms": EXPIRY_MS, "strike": 55000.0, "iv": 0.6},
                                   {"expiry_ms": EXPIRY_MS, "strike": 60000.0, "iv": 0.55}],
                         "source": "deribit_mark", "event_time_ms": NOW_MS},
    "OrderBookDepth": {"instrument": "BTC-PERPETUAL", "bids": [{"price": 61200.0, "quantity": 12.5}],
                       "asks": [{"price": 61210.0, "quantity": 8.0}, {"price": 61220.0, "quantity": 3.0}],
                       "bands": [{"band_bps": 50, "bid_quantity": 120.0, "ask_quantity": 95.0}],
                       "sequence": 42, "event_time_ms": NOW_MS},
    "OraclePrice": {"underlying": "BTC", "source": "pyth", "price": 61230.0, "confidence": 12.5,
                    "publish_time_ms": NOW_MS - 400, "event_time_ms": NOW_MS},
    "PositionUpdate": {"account": "acct-1", "instrument": OPTION, "quantity": -25.0, "average_price": 0.05,
                       "sequence": 7, "event_time_ms": NOW_MS},
    "CollateralUpdate": {"account": "acct-1", "asset": "BTC", "amount": 3.25, "change": -0.5,
                         "reason": "withdrawal", "sequence": 8, "event_time_ms": NOW_MS},
    "ExposureSnapshot": {"account": "acct-1", "equity_usd": 253_154.05, "maintenance_margin_usd": 118_661.15,
                         "initial_margin_usd": 148_326.44, "margin_ratio": 0.4687, "state": "normal",
                         "event_time_ms": NOW_MS},
    "Breach": {"breach_id": "b-3f2a", "kind": "margin_shortfall", "account": "acct-1", "underlying": "BTC",
               "instrument": None, "observed": 1.12, "threshold": 1.0, "severity": "critical",
               "window_start_ms": NOW_MS - 60_000, "window_end_ms": NOW_MS,
               "triggers": [{"topic": "backstop.positions", "partition": 3, "offset": 1234, "event_id": None},
                            {"topic": "backstop.market.index", "partition": 0, "offset": 99, "event_id": "ix-9"}],
               "details": {"maintenance_margin": "2.1", "equity": "1.9"}, "event_time_ms": NOW_MS},
    "Action": {"action_id": "a-77", "action_type": "partial_liquidation", "account": "acct-1", "instrument": OPTION,
               "side": "buy", "quantity": 10.0, "limit_price": 0.06, "breach_ids": ["b-3f2a"],
               "params": {"max_slippage_bps": "50"}, "expires_at_ms": NOW_MS + 30_000, "signing_key_id": "k1",
               "signature": bytes(range(32)), "event_time_ms": NOW_MS, "underlying": None},
    "ExecutionReport": {"execution_id": "a-77:1", "action_id": "a-77", "account": "acct-1", "status": "filled",
                        "venue": "deribit", "instrument": OPTION, "side": "buy", "filled_quantity": 10.0,
                        "avg_price": 0.0575, "fee": 0.0003, "fee_currency": "BTC", "slippage_bps": 12.0,
                        "counterparty": "book", "reason": None, "event_time_ms": NOW_MS},
    "DeadLetter": {"reason": "bad_magic", "detail": "first byte 0x7b", "topic": "backstop.positions", "partition": 1,
                   "offset": 5, "message_timestamp_ms": NOW_MS, "original_key": b"acct-1",
                   "original_value": b'{"json": true}', "schema_id": None, "record": None, "consumer": "test",
                   "event_time_ms": NOW_MS},
    "MarketBatch": {"batch_id": "backstop.market.index:0:41",
                    "items": [{"source": "backstop.market.index:0:41", "key": b"BTC", "value": b"\x00\x00\x00\x00\x0b"},
                              {"source": "backstop.market.oracle:1:7", "key": None, "value": b"\x00\x00\x00\x00\x0c"}],
                    "event_time_ms": NOW_MS},
    "ReplayRecord": {"topic": "backstop.positions", "partition": 0, "offset": 10, "key": b"acct-1",
                     "value": b"\x00\x00\x00\x00\x0b", "timestamp_ms": NOW_MS, "event_time_ms": NOW_MS},
}


def sample(record: str, **changes) -> dict:
    datum = copy.deepcopy(_SAMPLES[record])
    datum.update(changes)
    return datum


RECORDS = sorted(_SAMPLES)
