"""Round trip through the real ClickHouse server with clickhouse-driver: DDL, columnar batch
insert, aggregate select. The DDL uses only syntax that the Debian 18.16 server and current
ClickHouse both accept."""

from __future__ import annotations

import datetime

import pytest

pytestmark = pytest.mark.clickhouse

DDL = """
CREATE TABLE fills (
    event_date Date,
    event_time_ms UInt64,
    account String,
    instrument String,
    qty Float64,
    price Float64
) ENGINE = MergeTree()
PARTITION BY toYYYYMM(event_date)
ORDER BY (account, event_time_ms)
"""


def test_create_insert_select(clickhouse) -> None:
    clickhouse.execute(DDL)
    n = 10_000
    start_ms = 1_795_000_000_000
    columns = [
        [datetime.date(2026, 11, 23)] * n,
        [start_ms + i for i in range(n)],
        [f"acct-{i % 10}" for i in range(n)],
        ["BTC-PERPETUAL" if i % 2 else "BTC-27DEC26-60000-C" for i in range(n)],
        [float(i % 5 - 2) for i in range(n)],
        [60_000.0 + i for i in range(n)],
    ]
    inserted = clickhouse.execute(
        "INSERT INTO fills (event_date, event_time_ms, account, instrument, qty, price) VALUES",
        columns, columnar=True)
    assert inserted == n

    rows = clickhouse.execute(
        "SELECT account, count(), sum(qty), max(price) FROM fills WHERE instrument = %(instrument)s "
        "GROUP BY account ORDER BY account", {"instrument": "BTC-PERPETUAL"})
    expected = {}
    for account, instrument, qty, price in zip(columns[2], columns[3], columns[4], columns[5]):
        if instrument == "BTC-PERPETUAL":
            count, total, top = expected.get(account, (0, 0.0, 0.0))
            expected[account] = (count + 1, total + qty, max(top, price))
    assert rows == [(account, *expected[account]) for account in sorted(expected)]

